"""The firmware a converted VM ships with and is boot-tested under: what the guest stage's
inspection found on the boot disk (`stages.guest.detect_firmware`), else the source descriptor's.

The validate stage's boot test, the Linux fixers (the UEFI fallback loader) and finalize's domain XML
all take it from here, so the domain declares the firmware the test booted (docs/boot-test.md).
"""
from __future__ import annotations

from h2k_planner.models import VM, Concern, Firmware, Severity

CONCERN_ID = "firmware-contradicts-source"


def shipped_firmware(vm: VM, inspection: dict | None) -> Firmware:
    found = (inspection or {}).get("firmware")
    return Firmware(found) if found else vm.firmware


def shipped_vm(vm: VM, inspection: dict | None) -> VM:
    """`vm` with the shipped firmware; Secure Boot only survives on UEFI."""
    firmware = shipped_firmware(vm, inspection)
    if firmware == vm.firmware:
        return vm
    return vm.model_copy(update={"firmware": firmware, "secure_boot": vm.secure_boot and firmware == Firmware.efi})


def firmware_concerns(vm: VM, inspection: dict | None) -> list[Concern]:
    """A concern when the inspection contradicts the descriptor (a bare disk has none to contradict: info)."""
    firmware = shipped_firmware(vm, inspection)
    if firmware == vm.firmware:
        return []
    bare = vm.source_kind == "disk"
    said = "a bare disk has no firmware setting (BIOS assumed)" if bare else \
        f"the source ({vm.source_kind}) says {vm.firmware.value}"
    return [Concern(id=CONCERN_ID, severity=Severity.info if bare else Severity.warning,
                    message=f"{said}, but the boot disk boots {firmware.value}: the domain XML and the boot test "
                            f"use {firmware.value}",
                    remedy="" if bare else "check the source VM's firmware setting; the inspected value is the "
                                           "one its disks can boot")]
