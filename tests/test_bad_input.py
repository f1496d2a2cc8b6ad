"""Bad input: exit 2, one line naming the file and the problem, nothing written anywhere."""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.builders.vmware import DiskSpec, build_vm
from tests.support import h2k


def listing(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in files + dirs}


@pytest.fixture(scope="module")
def good_vm(tmp_path_factory):
    src = tmp_path_factory.mktemp("good")
    return build_vm(str(src), "good", [DiskSpec(size_mib=16, layers=3, files={"/a": "a"})])


def _copy_vm(good_vm: str, dst) -> str:
    import shutil

    shutil.copytree(os.path.dirname(good_vm), dst)
    return os.path.join(dst, os.path.basename(good_vm))


def _patch(path: str, old: bytes, new: bytes) -> None:
    data = open(path, "rb").read()
    assert old in data
    open(path, "wb").write(data.replace(old, new, 1))


def missing_extent(vmx: str) -> tuple[str, str]:
    desc = os.path.join(os.path.dirname(vmx), "flat.vmdk")
    open(desc, "w").write('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                          'createType="monolithicFlat"\nRW 2048 FLAT "flat-flat.vmdk" 0\n')
    _patch(vmx, b'good-000002.vmdk', b'flat.vmdk')
    return desc, "missing extent flat-flat.vmdk"


def broken_chain(vmx: str) -> tuple[str, str]:
    parent = os.path.join(os.path.dirname(vmx), "good-000001.vmdk")
    os.unlink(parent)
    return parent, "missing VMDK (parent of good-000002.vmdk)"


def cid_mismatch(vmx: str) -> tuple[str, str]:
    top = os.path.join(os.path.dirname(vmx), "good-000002.vmdk")
    data = open(top, "rb").read()
    cid = re.search(rb"parentCID=([0-9a-f]+)", data).group(1)
    _patch(top, b"parentCID=" + cid, b"parentCID=" + b"b" * len(cid))
    return top, f"parentCID {int('b' * len(cid), 16):08x} does not match CID"


def garbage_vmx(vmx: str) -> tuple[str, str]:
    open(vmx, "w").write("this is not\na vmx file at all\n")
    return vmx, "line 1: not a 'key = \"value\"' line"


def binary_vmx(vmx: str) -> tuple[str, str]:
    open(vmx, "wb").write(os.urandom(2048).replace(b"\0", b"\1") + b"\0")
    return vmx, "binary content: not a .vmx"


def vmx_without_disks(vmx: str) -> tuple[str, str]:
    text = open(vmx).read()
    open(vmx, "w").write("\n".join(l for l in text.splitlines() if not l.startswith("scsi0:0")) + "\n")
    return vmx, "names no hard disks"


def descriptor_garbage(vmx: str) -> tuple[str, str]:
    desc = os.path.join(os.path.dirname(vmx), "bad.vmdk")
    open(desc, "w").write("# Disk DescriptorFile\nversion=1\n!!! nonsense here\n")
    _patch(vmx, b'good-000002.vmdk', b'bad.vmdk')
    return desc, "line 3: not a VMDK descriptor line"


CASES = [missing_extent, broken_chain, cid_mismatch, garbage_vmx, binary_vmx, vmx_without_disks, descriptor_garbage]


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_source_exits_2_naming_file_and_problem(damage, good_vm, tmp_path):
    vmx = _copy_vm(good_vm, tmp_path / "src")
    path, problem = damage(vmx)
    before = listing(tmp_path)
    res = h2k("migrate", vmx, "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"h2k: error: {path}: ") and problem in lines[0], lines[0]
    assert listing(tmp_path) == before  # no output directory, nothing else written


def test_unknown_config_key(good_vm, tmp_path):
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text("output:\n  format: qcow2\nworker:\n  concurency: 4\n")
    res = h2k("migrate", good_vm, "-o", str(tmp_path / "out"), "--config", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip() == f"h2k: error: {cfg}: unknown key worker.concurency"
    assert not (tmp_path / "out").exists()


def test_missing_source_and_bad_usage(tmp_path):
    res = h2k("migrate", str(tmp_path / "nope.vmx"), "-o", str(tmp_path / "out"))
    assert res.returncode == 2 and f"{tmp_path / 'nope.vmx'}: no such file or directory" in res.stderr
    res = h2k("migrate", str(tmp_path / "x.vmx"), "-o", str(tmp_path / "out"), "--format", "vhd")
    assert res.returncode == 2 and "invalid choice" in res.stderr
    assert not (tmp_path / "out").exists()


def test_compress_needs_qcow2(good_vm, tmp_path):
    res = h2k("migrate", good_vm, "-o", str(tmp_path / "out"), "--format", "raw", "--compress")
    assert res.returncode == 2 and "--compress needs the qcow2 output format" in res.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_and_writes_nothing(good_vm, tmp_path):
    res = h2k("migrate", good_vm, "-o", str(tmp_path / "out"), "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    plan = out["plan"]
    assert out["dry_run"]["good"]["changes"] == [] and out["dry_run"]["good"]["notes"]
    assert plan["vms"][0]["vm"]["name"] == "good" and plan["vms"][0]["vm"]["disks"][0]["depth"] == 3
    assert plan["output"]["directory"] == str(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_schema_exports_every_model():
    res = h2k("schema")
    schemas = json.loads(res.stdout)
    assert set(schemas) == {"vm", "disk", "nic", "concern", "plan", "wave", "config"}
    assert "disks" in schemas["vm"]["properties"] and schemas["config"]["additionalProperties"] is False
