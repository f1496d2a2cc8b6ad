"""Concerns every source shares, added after a source is read, and the gate that stops a VM with
a Critical concern unless the config allows it (`vms: {<name>: {allow_concerns: [<id>]}}`)."""
from __future__ import annotations

import os
import shutil

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Output, Severity
from h2k_planner.placement import HostFacts


def local_facts(name: str, directory: str) -> HostFacts:
    """This machine as the worker host writing `directory` (the embedded mode): its free space there."""
    path = os.path.abspath(directory)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return HostFacts(name=name, data_dir=path, free_bytes=shutil.disk_usage(path).free)


def needed_bytes(vm: VM, output: Output) -> int:
    """Worst case the VM's outputs (and unpacked sources) take on the output file system."""
    total = 0
    for d in vm.disks:
        total += d.virtual_size if output.format == "raw" else min(d.virtual_size, max(d.allocated_size, 1))
        if d.packed:
            total += d.virtual_size
    return total


def review(vms: list[VM]) -> list[VM]:
    """The VMs with the shared concerns added: Secure Boot, unknown guest OS."""
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
        out.append(vm.model_copy(update={"concerns": vm.concerns + found}))
    return out


def check_space(vms: list[VM], output: Output, placed: dict[str, str], hosts: dict[str, HostFacts]) -> list[VM]:
    """The VMs with `insufficient-space` added where the outputs do not fit on the host they are
    placed on, by the free space that host's worker reported for its data_dir less what is queued
    for it (VMs counted in order, each after the ones before it on the same host)."""
    room = {name: h.free_bytes - h.queued_bytes for name, h in hosts.items()}
    out = []
    for vm in vms:
        host = hosts[placed[vm.name]]
        need = needed_bytes(vm, output)
        if need > room[host.name]:
            vm = vm.model_copy(update={"concerns": vm.concerns + [Concern(
                id="insufficient-space", severity=Severity.critical,
                message=f"the outputs need up to {need} bytes; host {host.name} has {max(room[host.name], 0)} free "
                        f"in {host.data_dir} (as its worker reported, less what is queued for it)",
                remedy="free space, choose another output directory, or allow the concern if the guest is sparse")]})
        room[host.name] -= need
        out.append(vm)
    return out


def gate(vms: list[VM], allowed: dict[str, list[str]]) -> None:
    """InputError for the first Critical concern the config does not allow for its VM."""
    for vm in vms:
        for c in vm.concerns:
            if c.severity is Severity.critical and c.id not in allowed.get(vm.name, []):
                raise InputError(None, f"VM {vm.name!r} has critical concern {c.id}: {c.message} "
                                       f"(remedy: {c.remedy}; or set vms: {{{vm.name!r}: {{allow_concerns: [{c.id}]}}}} "
                                       "in the config)")
