"""A VM on whose disks inspection finds no operating system is not a success: a concern at plan time,
a failure at validate, unless it is marked `guest: false` (data only). Real libguestfs and workers."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.builders.vmware import DiskSpec, build_vm
from tests.support import h2k

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_vm(tmp_path_factory):
    src = tmp_path_factory.mktemp("data")
    return build_vm(str(src), "files", [DiskSpec(size_mib=16, files={"/a": "a"})])  # a file system, no OS


def test_inspection_finds_no_operating_system_and_says_so(data_vm):
    res = h2k("plan", data_vm, "--inspect", "--json")
    assert res.returncode == 0, res.stderr
    [vm] = json.loads(res.stdout)["vms"]
    [concern] = [c for c in vm["vm"]["concerns"] if c["id"] == "no-os-found"]
    assert concern["severity"] == "warning" and "guest: false" in concern["remedy"]


def test_validate_fails_a_vm_with_no_operating_system(data_vm, tmp_path):
    res = h2k("migrate", data_vm, "-o", str(tmp_path / "out"), "--no-boot-test", "--json", timeout=900)
    assert res.returncode == 1, res.stderr
    report = json.load(open(tmp_path / "out" / "files" / "report.json"))
    assert report["status"] == "failed"
    assert report["errors"] == ["vm/validate: no operating system was found on the disks; a VM that holds data only "
                                "is migrated with `guest: false` in its config"]
    assert report["inspection"]["os_type"] == "unknown"


def test_a_vm_marked_data_only_is_copied_and_not_inspected(data_vm, tmp_path):
    cfg = tmp_path / "data-only.yaml"
    cfg.write_text(yaml.safe_dump({"vms": {"files": {"guest": False}}}))
    plan = h2k("plan", data_vm, "--inspect", "--json", "--config", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["vms"][0]["vm"]["concerns"] == []
    res = h2k("migrate", data_vm, "-o", str(tmp_path / "out"), "--json", "--config", str(cfg), timeout=900)
    assert res.returncode == 0, res.stderr
    report = json.load(open(tmp_path / "out" / "files" / "report.json"))
    assert report["status"] == "succeeded" and report["inspection"] is None
    assert report["outputs"][0]["identical_to_source"]
