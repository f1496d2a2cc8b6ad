"""End to end: `h2k migrate` of a two-disk VMware VM (one disk a three-level snapshot chain)
through a real redis-server and a real worker process, then a re-run that resumes."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest

from tests.builders.vmware import DiskSpec, build_vm
from tests.support import content_sha256, h2k

pytestmark = pytest.mark.slow


def tree_digest(directory: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    src = str(base / "src")
    vmx = build_vm(src, "two-disks", [DiskSpec(size_mib=96, layers=3),
                                      DiskSpec(size_mib=48, layers=1, files={"/data/": "", "/data/a.txt": "a\n"})])
    before = tree_digest(src)
    out = str(base / "out")
    first = h2k("migrate", vmx, "-o", out, "--json", "--no-boot-test")
    second = h2k("migrate", vmx, "-o", out, "--json", "--no-boot-test")
    return {"src": src, "out": out, "vmx": vmx, "before": before, "first": first, "second": second}


def test_migrate_succeeds_with_report_and_outputs(migrated):
    first = migrated["first"]
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert [v["status"] for v in result["vms"]] == ["succeeded"]
    vm_dir = os.path.join(migrated["out"], "two-disks")
    assert sorted(os.listdir(vm_dir)) == ["report.json", "two-disks-disk0.qcow2", "two-disks-disk1.qcow2",
                                          "two-disks.xml"]
    report = json.load(open(os.path.join(vm_dir, "report.json")))
    assert report["status"] == "succeeded"
    assert report["inspection"]["distro"] == "debian" and report["inspection"]["root"] == "/dev/sda1"
    # the disk shows neither BIOS boot code nor an ESP: the VMX's BIOS ships
    assert report["inspection"]["firmware"] is None and report["hardware"]["firmware"] == "bios"
    assert {(s["lane"], s["stage"]) for s in report["stages"]} >= {("d0", "convert"), ("d1", "convert"), ("vm", "guest")}
    assert all(s["seconds"] is not None for s in report["stages"] if s["stage"] != "finalize")
    assert [len(o["source_chain"]) for o in report["outputs"]] == [3, 1]
    for o in report["outputs"]:  # digests as validated (after the fixes) and of the source as converted
        assert o["content_sha256"] == content_sha256(o["path"], "qcow2")
        assert o["source_content_sha256"] == content_sha256(o["source"], "vmdk")


def test_outputs_equal_sources_and_sources_untouched(migrated):
    """Every disk was verified identical to its source as converted; the data disk, which no guest
    fix touches, still is; the system disk differs by the fixes the report lists."""
    vm_dir = os.path.join(migrated["out"], "two-disks")
    report = json.load(open(os.path.join(vm_dir, "report.json")))
    assert all(o["identical_to_source"] for o in report["outputs"])
    same = [subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", o["source"], o["path"]],
                           capture_output=True).returncode for o in report["outputs"]]
    assert same == [1, 0]
    assert {c["path"] for c in report["changes"]} >= {"/etc/fstab", "/etc/network/interfaces"}
    assert tree_digest(migrated["src"]) == migrated["before"]


def test_domain_xml_validates(migrated):
    xml = os.path.join(migrated["out"], "two-disks", "two-disks.xml")
    res = subprocess.run(["virt-xml-validate", xml, "domain"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = open(xml).read()
    assert "00:50:56:a1:b2:c3" in text and text.count('bus="virtio"') == 2


def test_rerun_resumes_skipping_verified_stages(migrated):
    second = migrated["second"]
    assert second.returncode == 0, second.stderr
    log = open(os.path.join(migrated["out"], ".h2k", "logs", "worker.log")).read()
    runs = re.findall(r"(\S+): running \(generation (\d+)", log)
    # every stage ran once in the first run; in the second only the report was written again
    assert len(runs) == 10 and set(runs[:9]) == {(name, "1") for name, _ in runs[:9]}
    assert runs[9] == ("two-disks/vm/finalize", "2")
    assert log.count("'status': 'skipped'") == 8
    # the summary counts this invocation's work, not the span since the first run began
    [again], [once] = json.loads(second.stdout)["vms"], json.loads(migrated["first"].stdout)["vms"]
    assert again["seconds"] < once["seconds"] / 2
