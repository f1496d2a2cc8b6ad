"""Every source kind migrated on the real pipeline in ONE `h2k migrate` (one wave, one worker):
an OVA read in place, an OVF with gzip'd disks (unpacked by fetch), a VMX whose disks cover every
VMDK subformat (and an ESXi vmfsSparse snapshot), and a directory of bare VHD/VHDX/VDI/raw/qcow2-chain images. Each output must
equal its source (`qemu-img compare`)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.builders.disks import patterned_raw
from tests.builders.images import bare_images, vmdk_variants
from tests.builders.ovf import build_ovf, pack_ova
from tests.builders.vmware import write_vmx
from tests.support import h2k

pytestmark = pytest.mark.slow


def _compare(a: str, a_fmt: str, b: str, b_fmt: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", "compare", "-U", "-f", a_fmt, "-F", b_fmt, a, b], capture_output=True, text=True)


@pytest.fixture(scope="module")
def wave(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    raws = []
    for n in range(17):
        raw = str(base / f"r{n}.raw")
        patterned_raw(raw, 8, 2)
        raws.append(raw)
    src = base / "src"
    os.makedirs(src)
    ova = pack_ova(build_ovf(str(base / "ova-build"), "appliance", raws[0:1]), str(src / "appliance.ova"))
    ovf = build_ovf(str(src / "pkg"), "packaged", raws[1:3], gzip_disks=True, firmware="efi")
    os.makedirs(src / "vmx")
    vmdks = vmdk_variants(raws[3:11], str(src / "vmx"))
    vmx = str(src / "vmx" / "variants.vmx")
    write_vmx(vmx, "variants", [("scsi", 0, n, os.path.basename(p)) for n, p in enumerate(vmdks)], "00:50:56:00:00:07")
    bare = bare_images(raws[11:17], str(src / "bare"))
    expected = {"appliance": [(raws[0], "raw")], "packaged": [(raws[1], "raw"), (raws[2], "raw")],
                "variants": [(r, "raw") for r in raws[3:11]]}
    expected |= {name: [(raws[11 + n], "raw")] for n, name in enumerate(["dyn", "fixed", "hyperv", "vbox", "plain"])}
    expected["top"] = [(bare["top"], "qcow2")]
    out = str(base / "out")
    cfg = base / "data-only.yaml"  # the disks hold no OS: skip the guest stage, this tests the sources
    cfg.write_text(yaml.safe_dump({"vms": {name: {"guest": False} for name in expected}}))
    plan = h2k("plan", ova, ovf, vmx, str(src / "bare"), "-o", out, "--json")
    res = h2k("migrate", ova, ovf, vmx, str(src / "bare"), "-o", out, "--json", "--config", str(cfg), timeout=1500)
    return {"out": out, "res": res, "plan": plan, "expected": expected}


def test_plan_inventories_every_kind(wave):
    assert wave["plan"].returncode == 0, wave["plan"].stderr
    vms = {p["vm"]["name"]: p["vm"] for p in json.loads(wave["plan"].stdout)["vms"]}
    assert set(vms) == set(wave["expected"])
    assert vms["appliance"]["source_kind"] == "ova" and vms["appliance"]["disks"][0]["source"].startswith("json:")
    assert vms["appliance"]["nics"][0]["mac"] == "00:50:56:aa:bb:01" and vms["appliance"]["cpus"] == 2
    assert vms["appliance"]["memory_mib"] == 768 and vms["appliance"]["guest_os"] == "debian12_64Guest"
    assert vms["packaged"]["firmware"] == "efi" and all(d["packed"] for d in vms["packaged"]["disks"])
    assert [d["format"] for d in vms["variants"]["disks"]] == ["vmdk"] * 6 + ["raw", "vmdk"]
    assert vms["variants"]["disks"][7]["depth"] == 2  # the vmfsSparse snapshot over its vmfs base
    assert {vms[n]["disks"][0]["format"] for n in ("dyn", "fixed")} == {"vpc"}
    assert (vms["hyperv"]["disks"][0]["format"], vms["vbox"]["disks"][0]["format"]) == ("vhdx", "vdi")
    assert vms["top"]["disks"][0]["depth"] == 2 and vms["plain"]["disks"][0]["format"] == "raw"
    assert "bare-disk-defaults" in {c["id"] for c in vms["plain"]["concerns"]}


def test_every_vm_migrates_and_equals_its_source(wave):
    res = wave["res"]
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads(res.stdout)["vms"]
    assert {r["vm"]: r["status"] for r in rows} == {name: "succeeded" for name in wave["expected"]}
    for name, sources in wave["expected"].items():
        report = json.load(open(os.path.join(wave["out"], name, "report.json")))
        outputs = sorted(report["outputs"], key=lambda o: o["disk"])
        assert len(outputs) == len(sources)
        for (src, fmt), o in zip(sources, outputs):
            cmp = _compare(src, fmt, o["path"], "qcow2")
            assert cmp.returncode == 0, (name, cmp.stdout + cmp.stderr)


def test_packed_disks_are_unpacked_inside_the_vm_directory(wave):
    listing = sorted(os.listdir(os.path.join(wave["out"], "packaged")))
    assert "packaged-disk0.unpacked.vmdk" in listing and "packaged-disk1.unpacked.vmdk" in listing
    assert not [n for n in listing if ".tmp-" in n]
