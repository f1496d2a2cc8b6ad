"""The firmware the domain ships with and the boot test boots under is what the guest stage found
on the boot disk: real libguestfs on the phony guests (dry runs: nothing is written), and finalize's
report and domain from a guest-stage record."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from h2k_planner.models import VM, Disk, Firmware, Output, Plan, PlannedVM, Severity
from h2k_tasks.firmware import CONCERN_ID, firmware_concerns, shipped_firmware, shipped_vm
from h2k_tasks.stages.finalize import finalize_vm
from h2k_tasks.stages.guest import guest_stage
from tests.builders import phony_linux


def bare_disk_vm(image, **kw) -> VM:
    disk = Disk(source=str(image), format="qcow2", virtual_size=1 << 28)
    return VM(**({"name": "bare", "source": str(image), "source_kind": "disk", "disks": [disk]} | kw))


@pytest.fixture(scope="module")
def images():
    return phony_linux.build_all()


def test_uefi_guest_from_a_bare_disk_is_uefi_and_gets_the_fallback_loader(images):
    vm = bare_disk_vm(images["rocky9"][0])  # GPT, an ESP with EFI/rocky/shimx64.efi, no BIOS boot code
    result = guest_stage(vm, [(str(images["rocky9"][0]), "qcow2")], None, {})
    assert result["inspection"]["firmware"] == "efi" and shipped_firmware(vm, result["inspection"]) == Firmware.efi
    copied = {c["path"]: c["diff"] for c in result["changes"] if c["fixer"] == "linux.efi_fallback"}
    assert copied == {"/boot/efi/EFI/BOOT/BOOTX64.EFI": "copied from /boot/efi/EFI/rocky/shimx64.efi",
                      "/boot/efi/EFI/BOOT/grubx64.efi": "copied from /boot/efi/EFI/rocky/grubx64.efi"}


def test_bios_guest_stays_bios_and_gets_no_loader(images):
    vm = bare_disk_vm(images["ubuntu2204"][0], firmware=Firmware.efi)  # MBR with boot code, no ESP
    result = guest_stage(vm, [(str(images["ubuntu2204"][0]), "qcow2")], None, {})
    assert result["inspection"]["firmware"] == "bios"
    assert not [c for c in result["changes"] if c["fixer"] == "linux.efi_fallback"]
    assert [c.severity for c in firmware_concerns(vm, result["inspection"])] == [Severity.info]


@pytest.mark.parametrize("kind,found,concern", [
    ("vmx", "efi", Severity.warning), ("disk", "efi", Severity.info), ("vmx", None, None), ("ovf", "bios", None)])
def test_inspection_first_and_a_concern_when_it_contradicts(kind, found, concern):
    vm = bare_disk_vm("/s.qcow2", source_kind=kind, secure_boot=False)
    inspection = {"firmware": found}
    assert shipped_firmware(vm, inspection) == Firmware(found or "bios")
    assert [c.severity for c in firmware_concerns(vm, inspection)] == ([concern] if concern else [])


def test_secure_boot_only_on_uefi():
    vm = bare_disk_vm("/s.qcow2", source_kind="vmx", firmware=Firmware.efi, secure_boot=True)
    assert shipped_vm(vm, {"firmware": "efi"}) is vm
    assert shipped_vm(vm, {"firmware": None}) is vm
    assert shipped_vm(vm, {"firmware": "bios"}).model_dump(include={"firmware", "secure_boot"}) == \
        {"firmware": Firmware.bios, "secure_boot": False}


def test_finalize_ships_the_inspected_firmware(tmp_path):
    vm = bare_disk_vm("/s.qcow2")
    pvm = PlannedVM(vm=vm, host="local", stages=["guest"], disk_stages=["convert"])
    plan = Plan(wave="w1", output=Output(directory=str(tmp_path)), vms=[pvm])
    guest = {"inspection": {"os_type": "linux", "firmware": "efi"}, "changes": [], "notes": []}
    records = {("d0", "convert"): {"status": "succeeded"},
               ("vm", "guest"): {"status": "succeeded", "result": json.dumps(guest)}}
    out = finalize_vm(plan, pvm, records)
    report = json.load(open(out["report"]))
    assert report["hardware"]["firmware"] == "efi"
    assert [c["id"] for c in report["concerns"] if c["id"] == CONCERN_ID] == [CONCERN_ID]
    dom = ET.parse(out["domain_xml"]).getroot()
    assert dom.find("os").get("firmware") == "efi"
