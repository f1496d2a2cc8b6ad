"""A fleet on one machine: a real redis-server (AOF), workers on several host queues, the
`h2k conductor` daemon, waves submitted with `h2k wave submit`; then crashes and a cancel."""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml

from h2k_tasks.process import child_of_this_process
from tests.builders.disks import patterned_raw
from tests.builders.vmware import DiskSpec, build_vm, write_vmx
from tests.support import ROOT, RedisServer, h2k, suite_settings, wait_for

pytestmark = pytest.mark.slow
HOSTS = ["hosta", "hostb"]




class Fleet:
    def __init__(self, tmp_path, redis_server: RedisServer, workers, hosts: list[str] = HOSTS,
                 convert_rate_limit: int = 64 << 20, **settings):
        """`settings` are the workers' (e.g. concurrency)."""
        self.tmp, self.redis, self.workers = tmp_path, redis_server, workers
        self.r = redis_server.client()
        self.conductor: subprocess.Popen | None = None
        # conversions read at most 64 MiB/s, so the big VM's convert lasts about 25 s whatever the machine:
        # the crash and cancel below land while it runs, even when starting `h2k wave cancel` takes seconds
        self.worker_procs = {h: workers.start(suite_settings(redis_server.url, host=h,
                                                             convert_rate_limit=convert_rate_limit, **settings))
                             for h in hosts}
        wait_for(lambda: all(self.r.exists(f"h2k:host:{h}") for h in hosts), 60, "workers to publish their hosts")

    def start_conductor(self, metrics_port: int = 0, limits: dict | None = None) -> None:
        """`limits`: the conductor config's caps (per_source, per_wave)."""
        log = open(self.tmp / "conductor.log", "ab")
        cfg = self.tmp / "conductor.yaml"
        # lost messages are re-sent after 5 s here
        cfg.write_text(yaml.safe_dump({"conductor": {"stall_after": 5}, **({"limits": limits} if limits else {})}))
        self.conductor = subprocess.Popen(
            [sys.executable, "-m", "conductor", "conductor", "--broker", self.redis.url, "--config", str(cfg),
             "--metrics-port", str(metrics_port)],
            env={**os.environ, "PYTHONPATH": ROOT}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_of_this_process())

    def kill_conductor(self) -> None:
        os.killpg(self.conductor.pid, signal.SIGKILL)
        self.conductor.wait()

    def submit(self, name: str, vms: dict[str, str], overrides: dict | None = None) -> str:
        """`vms` maps VM names to their .vmx; returns the wave id."""
        spec = {"name": name, "sources": list(vms.values()), "output": {"directory": str(self.tmp / "out"),
                                                                        "format": "raw"},
                "vms": overrides or {name: {"guest": False} for name in vms}}
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        res = h2k("wave", "submit", str(path), "--broker", self.redis.url)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["wave"]

    def wait_wave(self, wave: str, timeout: float = 300) -> list[dict]:
        wait_for(lambda: self.r.hget(f"h2k:wave:{wave}", "status") == "finished", timeout, f"wave {wave}")
        res = h2k("wave", "report", wave, "--broker", self.redis.url)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["vms"]

    def log(self, wave: str) -> list[dict]:
        return [fields for _, fields in self.r.xrange(f"h2k:log:{wave}")]

    def stop(self) -> None:
        if self.conductor and self.conductor.poll() is None:
            os.killpg(self.conductor.pid, signal.SIGTERM)
            self.conductor.wait(timeout=30)


@pytest.fixture
def fleet(tmp_path, redis_server, workers):
    f = Fleet(tmp_path, redis_server, workers)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def small_vms(tmp_path_factory):
    """Six one-disk VMs (a real ext4 filesystem each)."""
    base = tmp_path_factory.mktemp("fleet-src")
    return {f"vm{n}": build_vm(str(base / f"vm{n}"), f"vm{n}", [DiskSpec(size_mib=24, files={"/n": str(n)})],
                               mac=f"00:50:56:00:01:{n:02x}") for n in range(6)}


@pytest.fixture(scope="module")
def big_vm(tmp_path_factory):
    """A VM whose 1.5 GiB of data takes seconds to convert."""
    d = tmp_path_factory.mktemp("fleet-big")
    patterned_raw(str(d / "big.raw"), 2048, 1536)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(d / "big.raw"), str(d / "big.vmdk")],
                   check=True)
    os.unlink(d / "big.raw")
    write_vmx(str(d / "big.vmx"), "big", [("scsi", 0, 0, "big.vmdk")], "00:50:56:00:02:01")
    return str(d / "big.vmx")


def assert_outputs_match_sources(reports: list[dict]) -> None:
    for report in reports:
        assert report["status"] == "succeeded", report["errors"]
        for o in report["outputs"]:
            res = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw", o["source"], o["path"]],
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stdout + res.stderr


def assert_no_concurrent_writers(events: list[dict]) -> None:
    """From the state log: a stage is never claimed while an earlier claim of it is live."""
    owner: dict[str, str] = {}
    for e in events:
        stage, event = e.get("stage"), e["event"]
        if event == "claim":
            assert stage not in owner, f"{stage} claimed by generation {e['gen']} while {owner[stage]} ran"
            owner[stage] = e["gen"]
        elif event in ("succeeded", "failed", "pending", "cancelled", "expired") and owner.get(stage) == e["gen"]:
            del owner[stage]


def test_routing_and_flower(fleet, small_vms, tmp_path):
    """VMs placed on host A run only on A's worker, as Flower's task list (from task events) shows;
    Flower's API needs its basic-auth credentials."""
    port = 15555
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", fleet.redis.url.replace("unix://", "redis+socket://"),
         "flower", f"--port={port}", "--address=127.0.0.1", "--basic-auth=ops:s3cret"],
        stdout=open(tmp_path / "flower.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_of_this_process(),
        env={**os.environ, "PYTHONPATH": ROOT})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), 60, "flower to listen")
        fleet.start_conductor(metrics_port=19808)
        placed = {name: HOSTS[n % 2] for n, name in enumerate(small_vms)}
        wave = fleet.submit("routing", small_vms, {name: {"host": host, "guest": False} for name, host in placed.items()})
        reports = fleet.wait_wave(wave)
        assert {r["vm"]: r["host"] for r in reports} == placed
        assert_outputs_match_sources(reports)

        metrics = wait_for(lambda: _scrape_when(f'h2k_vms{{state="succeeded",wave="{wave}"}} 6.0'), 30, "metrics")
        assert 'h2k_stage_seconds_count{stage="convert"} 6.0' in metrics
        assert float(re.search(r'h2k_bytes_converted_total\{host="hosta"\} (\S+)', metrics).group(1)) >= 3 * 24 * 2**20

        assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
        auth = ("ops", "s3cret")
        wait_for(lambda: {f"h2k@{h}" for h in HOSTS} <= set(
            requests.get(f"{url}/api/workers?refresh=1", auth=auth, timeout=30).json()), 60, "flower to list both workers")
        tasks = wait_for(lambda: _wave_tasks(url, auth, wave, 6 * 5), 30, "flower to list the wave's tasks")
        for task in tasks:
            vm = task["kwargs"]["vm"]
            assert task["worker"] == f"h2k@{placed[vm]}", (vm, task["name"], task["worker"])
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=30)


def _scrape_when(line: str) -> str | None:
    text = requests.get("http://127.0.0.1:19808/metrics", timeout=10).text
    return text if line in text else None


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
        return True
    except requests.ConnectionError:
        return False


def _wave_tasks(url: str, auth, wave: str, expected: int) -> list[dict] | None:
    tasks = requests.get(f"{url}/api/tasks", auth=auth, timeout=10).json().values()
    mine = []
    for t in tasks:
        kwargs = t.get("kwargs")
        if isinstance(kwargs, str):
            kwargs = json.loads(kwargs.replace("'", '"'))
        if kwargs and kwargs.get("wave") == wave and t.get("worker"):
            mine.append({**t, "kwargs": kwargs})
    return mine if len(mine) >= expected else None


def test_conductor_killed_mid_wave(fleet, small_vms, big_vm):
    fleet.start_conductor()
    vms = {**small_vms, "big": big_vm}
    wave = fleet.submit("conductor-kill", vms)
    wait_for(lambda: any(e["event"] == "succeeded" for e in fleet.log(wave)), 120, "first stage to finish")
    fleet.kill_conductor()
    time.sleep(2)
    fleet.start_conductor()
    reports = fleet.wait_wave(wave)
    assert_outputs_match_sources(reports)
    assert_no_concurrent_writers(fleet.log(wave))


def test_redis_restarted_mid_wave(fleet, small_vms, big_vm):
    fleet.start_conductor()
    wave = fleet.submit("redis-restart", {**small_vms, "big": big_vm})
    r = fleet.r
    wait_for(lambda: r.hget(f"h2k:st:{wave}:big:d0:convert", "status") == "running", 120, "the big convert")
    fleet.redis.stop()  # SIGTERM: redis-server writes its AOF and exits
    time.sleep(1)
    fleet.redis.start()
    reports = fleet.wait_wave(wave, timeout=400)
    assert_outputs_match_sources(reports)
    assert_no_concurrent_writers(fleet.log(wave))


def test_cancel_one_vm(fleet, small_vms, big_vm, tmp_path):
    fleet.start_conductor()
    wave = fleet.submit("cancel", {**small_vms, "big": big_vm})
    r = fleet.r
    wait_for(lambda: int(r.hget(f"h2k:st:{wave}:big:d0:convert", "bytes") or 0) > 0, 120, "the big convert")
    assert _output_served("big-disk0")
    cancelled_at = time.time()
    res = h2k("wave", "cancel", wave, "big", "--broker", fleet.redis.url)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not _output_served("big-disk0"), 10, "the cancelled output's qemu-nbd to stop")
    assert time.time() - cancelled_at < 10
    reports = {r["vm"]: r for r in fleet.wait_wave(wave)}
    assert reports["big"]["status"] == "cancelled"
    assert_outputs_match_sources([rep for name, rep in reports.items() if name != "big"])
    big_dir = tmp_path / "out" / "big"
    assert sorted(os.listdir(big_dir)) == ["report.json"]  # no partial disk, no temp file
    assert not glob.glob(str(tmp_path / "out" / "*" / ".*tmp*"))

    # retry: only the cancelled VM runs again; the others' stages are not claimed again
    claims_before = [e["stage"] for e in fleet.log(wave) if e["event"] == "claim"]
    res = h2k("wave", "retry", wave, "--broker", fleet.redis.url)
    assert res.returncode == 0 and "retrying: big" in res.stdout, res.stdout + res.stderr
    reports = {r["vm"]: r for r in fleet.wait_wave(wave)}
    assert reports["big"]["status"] == "succeeded"
    assert_outputs_match_sources(list(reports.values()))
    new_claims = [e["stage"] for e in fleet.log(wave) if e["event"] == "claim"][len(claims_before):]
    assert new_claims and all(stage.startswith("big/") for stage in new_claims), new_claims
    assert_no_concurrent_writers(fleet.log(wave))


def _output_served(fragment: str) -> bool:
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            args = open(cmdline, "rb").read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"qemu-nbd") and any(fragment.encode() in a for a in args):
            return True
    return False
