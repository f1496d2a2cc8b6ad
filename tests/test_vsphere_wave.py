"""Waves from the vSphere simulator's datastore. Three VMs, one of them powered on and shut down
by its fetch (cold migration): the worker streams each disk from the datastore over HTTPS with
its own session (a thin disk moves its allocated bytes only, and no copy of a source stays on the
worker), and the outputs equal the files placed in the datastore; the password appears nowhere
the run wrote. Power states, sampled from the simulator while waves run: a wave
refused at planning changes none, and an accepted one powers each VM off only once its fetch
started, never one that was cancelled before."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml

from pyVmomi import vim

from h2k_planner.sources.vsphere import list_vms, session
from h2k_tasks.process import child_of_this_process
from tests.builders.disks import patterned_raw
from tests.support import ROOT, h2k, suite_settings, wait_for

pytestmark = pytest.mark.slow
VMS = {"clean": 1, "download": 64, "running": 1}  # name -> disk MiB, as the simulator declares them
THIN = {"download"}  # placed as hosted sparse VMDKs holding half their size; the others flat


def place_disks(vcsim, tmp_path, vms: dict[str, int]) -> dict:
    """A real VMDK for each VM's disk in the simulator's datastore folder."""
    placed = {}
    for name, mib in vms.items():
        folder = vcsim.datastore_dir / name
        raw = tmp_path / f"{name}.raw"
        patterned_raw(str(raw), mib, max(1, mib // 2))
        for old in folder.glob(f"{name}*.vmdk"):
            old.unlink()
        subformat = "monolithicSparse" if name in THIN else "monolithicFlat"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}",
                        str(raw), str(folder / f"{name}.vmdk")], check=True)
        placed[name] = folder / f"{name}.vmdk"
    return placed


def test_wave_from_vsphere(vcsim, password_file, vcsim_password, tmp_path, power):
    power.set(running="poweredOn")
    placed = place_disks(vcsim, tmp_path, VMS)
    cfg = _config(vcsim, password_file, tmp_path / "wave.yaml", vms={name: {"guest": False} for name in VMS})
    assert power.states(VMS) == {"clean": "poweredOff", "download": "poweredOff", "running": "poweredOn"}
    out = tmp_path / "out"
    sources = [f"vsphere:lab/{name}" for name in VMS]
    res = h2k("migrate", *sources, "-o", str(out), "--config", cfg, "--json", "--no-boot-test", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {v["vm"]: v["status"] for v in json.loads(res.stdout)["vms"]} == {n: "succeeded" for n in VMS}
    for name in VMS:
        report = json.load(open(out / name / "report.json"))
        assert report["source"]["kind"] == "vsphere" and report["outputs"][0]["identical_to_source"]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", str(placed[name]),
                              report["outputs"][0]["path"]], capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        data = placed[name].parent / (f"{name}.vmdk" if name in THIN else f"{name}-flat.vmdk")
        transferred = report["outputs"][0]["transferred"]  # the grains or the flat extent, and qemu's first look
        assert data.stat().st_size <= transferred <= data.stat().st_size + (1 << 20), (name, transferred)
        if name in THIN:
            assert transferred < 0.6 * VMS[name] * (1 << 20)
        kept = {f for f in os.listdir(out / name) if os.path.getsize(out / name / f) > (64 << 10)}
        assert kept == {os.path.basename(report["outputs"][0]["path"])}, kept  # no copy of the source
    assert power.states(VMS)["running"] == "poweredOff"

    secret = vcsim_password.encode()
    for directory, _, files in os.walk(out):  # reports, logs, Redis's AOF of the private broker
        for f in files:
            with open(os.path.join(directory, f), "rb") as fh:
                assert secret not in fh.read(), os.path.join(directory, f)
    assert vcsim_password not in res.stdout + res.stderr


class Power:
    """The simulator's VMs' power states: set, read, and sampled in the background."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.samples: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()

    def _vms(self, s, names) -> dict:
        return {r.name: vim.VirtualMachine(r.moref, s.stub) for r in list_vms(s) if r.name in names}

    def states(self, names) -> dict[str, str]:
        with session(self.endpoint) as s:
            return {name: str(vm.runtime.powerState) for name, vm in self._vms(s, set(names)).items()}

    def set(self, **wanted: str) -> None:
        with session(self.endpoint) as s:
            for name, vm in self._vms(s, set(wanted)).items():
                if str(vm.runtime.powerState) != wanted[name]:
                    task = vm.PowerOnVM_Task() if wanted[name] == "poweredOn" else vm.PowerOffVM_Task()
                    wait_for(lambda: task.info.state in ("success", "error"), 30, f"power task of {name}")
                    assert task.info.state == "success", task.info.error

    def sample(self, names) -> threading.Thread:
        def loop() -> None:
            with session(self.endpoint) as s:
                vms = self._vms(s, set(names))
                while not self._stop.is_set():
                    at = time.time()
                    self.samples.append((at, {n: str(vm.runtime.powerState) for n, vm in vms.items()}))
                    time.sleep(0.1)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def power(endpoint):
    """Restores every VM the test touched to the power state the simulator started with."""
    p = Power(endpoint)
    before = p.states(["clean", "download", "running", "shared", "bulk-0001"])
    yield p
    p.stop()
    p.set(**before)


def _config(vcsim, password_file, path, **extra) -> str:
    path.write_text(yaml.safe_dump({
        "vcenters": {"lab": {"url": f"vsphere://{vcsim.user}@{vcsim.host}:{vcsim.port}/{vcsim.datacenter}",
                             "password_file": str(password_file), "thumbprint": vcsim.thumbprint,
                             "shutdown": True, "shutdown_timeout": 5}}, **extra}))
    return str(path)


def test_a_refused_wave_changes_no_power_state(vcsim, password_file, tmp_path, power):
    power.set(running="poweredOn", clean="poweredOn", shared="poweredOn")
    names = ["running", "clean", "shared"]
    sources = [f"vsphere:lab/{n}" for n in names]
    cfg = _config(vcsim, password_file, tmp_path / "wave.yaml", vms={n: {"guest": False} for n in names})
    res = h2k("migrate", *sources, "-o", str(tmp_path / "out"), "--config", cfg, "--no-boot-test")
    assert res.returncode == 2 and "critical concern vsphere.shared-disk" in res.stderr, res.stdout + res.stderr
    ghost = _config(vcsim, password_file, tmp_path / "ghost.yaml", vms={"ghost": {"guest": False}})
    res = h2k("migrate", "vsphere:lab/running", "-o", str(tmp_path / "out"), "--config", ghost)
    assert res.returncode == 2 and "config names VMs that no source has: ghost" in res.stderr, res.stderr
    assert power.states(names) == {n: "poweredOn" for n in names}


def test_each_vm_goes_down_only_when_its_fetch_starts(vcsim, password_file, tmp_path, power, redis_server, workers):
    """Disk lanes through one ESXi host, one at a time (per_source 1), conversions slowed: the
    second VM must still run while the first is fetched; the third, cancelled before its fetch,
    is never touched."""
    names = ["clean", "running", "bulk-0001"]
    power.set(**{n: "poweredOn" for n in names})
    place_disks(vcsim, tmp_path, {"clean": 1, "running": 1})
    workers.start(suite_settings(redis_server.url, host="local", convert_rate_limit=256 << 10))
    r = redis_server.client()
    wait_for(lambda: r.exists("h2k:host:local"), 60, "the worker to publish its host")
    cfg = _config(vcsim, password_file, tmp_path / "wave.yaml", vms={n: {"guest": False} for n in names},
                  limits={"per_source": 1})
    power.sample(names)
    wait_for(lambda: power.samples, 30, "a first power sample")
    migrate = subprocess.Popen(
        [sys.executable, "-m", "conductor", "migrate", "vsphere:lab/running", "vsphere:lab/clean",
         "vsphere:lab/bulk-0001", "-o", str(tmp_path / "out"), "--config", cfg, "--broker", redis_server.url,
         "--json", "--no-boot-test"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": ROOT}, start_new_session=True, preexec_fn=child_of_this_process())
    try:
        wave = wait_for(lambda: r.zrange("h2k:waves", 0, -1), 60, "the wave")[0]
        first = wait_for(lambda: [e["vm"] for _, e in r.xrange(f"h2k:log:{wave}") if e["event"] == "power-off"],
                         120, "a first power-off")[0]
        assert first != "bulk-0001"  # it comes last: its lane waits behind the cap
        assert h2k("wave", "cancel", wave, "bulk-0001", "--broker", redis_server.url).returncode == 0
        out, err = migrate.communicate(timeout=600)
    finally:
        if migrate.poll() is None:
            os.killpg(migrate.pid, 9)
            migrate.wait()
    power.stop()
    assert {v["vm"]: v["status"] for v in json.loads(out)["vms"]} == \
        {"clean": "succeeded", "running": "succeeded", "bulk-0001": "cancelled"}, err

    events = [e for _, e in r.xrange(f"h2k:log:{wave}")]
    claimed = {e["stage"].split("/")[0]: float(e["at"]) for e in events
               if e["event"] == "claim" and e["stage"].endswith("/d0/fetch")}
    down = {e["vm"]: float(e["at"]) for e in events if e["event"] == "power-off"}
    assert set(down) == {"clean", "running"} and "bulk-0001" not in claimed, (down, claimed)
    for vm in down:
        before = [states[vm] for at, states in power.samples if at < claimed[vm]]
        assert before and set(before) == {"poweredOn"}, (vm, before)  # up until its fetch was claimed
        assert claimed[vm] <= down[vm]
        assert power.samples[-1][1][vm] == "poweredOff"
    one, two = sorted(down, key=down.get)
    ended = max(float(e["at"]) for e in events if e["event"] == "succeeded" and e["stage"] == f"{one}/d0/verify")
    assert ended < claimed[two]  # the cap kept the second VM's lane waiting ...
    assert any(states[one] == "poweredOff" and states[two] == "poweredOn"
               for at, states in power.samples)  # ... and the second VM running meanwhile
    assert set(s["bulk-0001"] for _, s in power.samples) == {"poweredOn"}  # cancelled before its fetch
