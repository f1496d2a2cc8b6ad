"""A wave of three VMs migrated from the vSphere simulator's datastore, one of them powered on
and shut down first (cold migration): the worker downloads each disk over HTTPS with its own
session, converts the local copy, and the outputs equal the files placed in the datastore. The
password appears nowhere the run wrote."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.builders.disks import patterned_raw
from tests.support import h2k

pytestmark = pytest.mark.slow
VMS = {"clean": 1, "download": 64, "running": 1}  # name -> disk MiB, as the simulator declares them


def test_wave_from_vsphere(vcsim, password_file, vcsim_password, tmp_path):
    placed = {}
    for name, mib in VMS.items():
        folder = vcsim.datastore_dir / name
        raw = tmp_path / f"{name}.raw"
        patterned_raw(str(raw), mib, max(1, mib // 2))
        for old in folder.glob(f"{name}*.vmdk"):
            old.unlink()
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat",
                        str(raw), str(folder / f"{name}.vmdk")], check=True)
        placed[name] = folder / f"{name}.vmdk"
    cfg = tmp_path / "wave.yaml"
    cfg.write_text(yaml.safe_dump({
        "vcenters": {"lab": {"url": f"vsphere://{vcsim.user}@{vcsim.host}:{vcsim.port}/{vcsim.datacenter}",
                             "password_file": str(password_file), "thumbprint": vcsim.thumbprint,
                             "shutdown": True, "shutdown_timeout": 5}},
        "vms": {name: {"guest": False} for name in VMS},
    }))
    out = tmp_path / "out"
    sources = [f"vsphere:lab/{name}" for name in VMS]
    res = h2k("migrate", *sources, "-o", str(out), "--config", str(cfg), "--json", "--no-boot-test", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {v["vm"]: v["status"] for v in json.loads(res.stdout)["vms"]} == {n: "succeeded" for n in VMS}
    for name in VMS:
        report = json.load(open(out / name / "report.json"))
        assert report["source"]["kind"] == "vsphere" and report["outputs"][0]["identical_to_source"]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", str(placed[name]),
                              report["outputs"][0]["path"]], capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        fetched = [r for r in report["stages"] if r["stage"] == "fetch"]
        on_datastore = sum(f.stat().st_size for f in placed[name].parent.glob(f"{name}*.vmdk"))
        assert [r["bytes"] for r in fetched] == [on_datastore]  # the download's progress went through Redis

    secret = vcsim_password.encode()
    for directory, _, files in os.walk(out):  # reports, logs, Redis's AOF of the private broker
        for f in files:
            with open(os.path.join(directory, f), "rb") as fh:
                assert secret not in fh.read(), os.path.join(directory, f)
    assert vcsim_password not in res.stdout + res.stderr
