"""Concerns every source shares, added after a source is read, and the gate that stops a VM with
a Critical concern unless the config allows it (`vms: {<name>: {allow_concerns: [<id>]}}`)."""
from __future__ import annotations

import os
import shutil

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Output, Severity


def _free_bytes(directory: str) -> int:
    path = os.path.abspath(directory)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def needed_bytes(vm: VM, output: Output) -> int:
    """Worst case the VM's outputs (and unpacked sources) take on the output file system."""
    total = 0
    for d in vm.disks:
        total += d.virtual_size if output.format == "raw" else min(d.virtual_size, max(d.allocated_size, 1))
        if d.packed:
            total += d.virtual_size
    return total


def review(vms: list[VM], output: Output) -> list[VM]:
    """The VMs with the shared concerns added: Secure Boot, unknown guest OS, and disks larger
    than the output's free space (VMs counted in order, each after the ones before it)."""
    free = _free_bytes(output.directory)
    out = []
    for vm in vms:
        found: list[Concern] = []
        if vm.secure_boot:
            found.append(Concern(id="secure-boot", severity=Severity.warning,
                                 message="UEFI Secure Boot is on; the target boots OVMF without the VMware keys",
                                 remedy="boot with Secure Boot off, or enroll the guest's keys in OVMF's variables"))
        if not vm.guest_os and vm.source_kind != "disk":
            found.append(Concern(id="unknown-guest-os", severity=Severity.warning,
                                 message="the source does not name the guest OS",
                                 remedy="none needed: the guest stage inspects the disks and reports what it finds"))
        need = needed_bytes(vm, output)
        if need > free:
            found.append(Concern(id="insufficient-space", severity=Severity.critical,
                                 message=f"the outputs need up to {need} bytes; {output.directory} has {max(free, 0)} free",
                                 remedy="free space, choose another output directory, or allow the concern if the guest is sparse"))
        free -= need
        out.append(vm.model_copy(update={"concerns": vm.concerns + found}))
    return out


def gate(vms: list[VM], allowed: dict[str, list[str]]) -> None:
    """InputError for the first Critical concern the config does not allow for its VM."""
    for vm in vms:
        for c in vm.concerns:
            if c.severity is Severity.critical and c.id not in allowed.get(vm.name, []):
                raise InputError(None, f"VM {vm.name!r} has critical concern {c.id}: {c.message} "
                                       f"(remedy: {c.remedy}; or set vms: {{{vm.name!r}: {{allow_concerns: [{c.id}]}}}} "
                                       "in the config)")
