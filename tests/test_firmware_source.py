"""The firmware the domain ships with and the boot test boots under is what the guest stage found
on the boot disk: real libguestfs on the phony guests (dry runs: nothing is written), and finalize's
report and domain from a guest-stage record."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from h2k_planner.models import VM, Disk, Firmware, Output, Plan, PlannedVM, Severity
from h2k_tasks.firmware import CONCERN_ID, firmware_concerns, shipped_firmware, shipped_vm
from h2k_tasks.machine import BOOT_DISK_CONCERN, boot_sequence
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


def test_the_disk_holding_the_os_boots_first_when_it_is_not_first_in_bus_order(images):
    """A data disk first in bus order (the /boot disk of the two-disk guest: an MBR whose generic loader
    makes it look bootable too), the Debian guest's disk second: the disk holding / is the boot disk,
    unless the source names the other one."""
    data, system = images["lvm2disk"][0], images["debian12"][0]
    disks = [Disk(source=str(p), format="qcow2", virtual_size=1 << 28, index=i) for i, p in enumerate([data, system])]
    vm = VM(name="twodisk", source="/t.vmx", source_kind="vmx", disks=disks)
    drives = [(str(data), "qcow2"), (str(system), "qcow2")]
    result = guest_stage(vm, drives, None, {})
    assert result["inspection"]["bootable_disks"] == [0, 1] and result["inspection"]["boot_disk"] == 1
    assert boot_sequence(vm, result["inspection"]) == [1, 0]
    declared = vm.model_copy(update={"boot_order": [0]})
    assert guest_stage(declared, drives, None, {})["inspection"]["boot_disk"] == 0


def test_finalize_ships_the_inspected_boot_disk_first(tmp_path):
    vm = bare_disk_vm("/s.qcow2").model_copy(update={"disks": [
        Disk(source=f"/s{i}.qcow2", format="qcow2", virtual_size=1 << 28, index=i) for i in range(2)],
        "boot_order": [0], "source_kind": "vmx"})
    pvm = PlannedVM(vm=vm, host="local", stages=["guest"], disk_stages=["convert"])
    plan = Plan(wave="w1", output=Output(directory=str(tmp_path)), vms=[pvm])
    guest = {"inspection": {"os_type": "linux", "firmware": "bios", "boot_disk": 1}, "changes": [], "notes": []}
    records = {("d0", "convert"): {"status": "succeeded"}, ("d1", "convert"): {"status": "succeeded"},
               ("vm", "guest"): {"status": "succeeded", "result": json.dumps(guest)}}
    out = finalize_vm(plan, pvm, records)
    dom = ET.parse(out["domain_xml"]).getroot()
    assert [(d.find("source").get("file").rsplit("-", 1)[-1], d.find("boot").get("order"))
            for d in dom.findall("devices/disk")] == [("disk0.qcow2", "2"), ("disk1.qcow2", "1")]
    report = json.load(open(out["report"]))
    assert [c["id"] for c in report["concerns"]] == [BOOT_DISK_CONCERN]


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
