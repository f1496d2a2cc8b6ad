"""The machine a migrated VM becomes on KVM, described once.

`target_machine()` derives it from the source VM and the guest stage's inspection: firmware
(h2k_tasks/firmware.py), boot disk and boot order, disk bus, NICs with their MACs, memory, CPUs, and
every PCI address. The shipped libvirt domain (h2k_tasks/outputs/libvirt.py) and the boot test's QEMU
command (h2k_tasks/boot_test.py) are both generated from it, so the boot test boots what ships.

PCI placement is pinned, so the guest sees the same topology under libvirt and in the boot test:
video at 00:01.0; one PCIe root port per device from 00:02.0 on (eight functions a slot), in this
order: the NICs, the disks (virtio-blk, one port each) or the virtio-scsi controller, the
virtio-serial controller of the guest-agent channel, the RNG, the balloon, the USB controller. Root
port k is libvirt controller index k, and the firmware numbers its bus k (ports are enumerated in
address order and hold one device each): the n-th NIC sits on bus n+1, hence its predictable name
enp<n+1>s0 (h2k_tasks/fixers/linux/network.py).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from h2k_planner.models import VM, Concern, Disk, Firmware, Nic, Severity
from h2k_tasks.firmware import shipped_vm

Bus = Literal["virtio", "sata", "scsi"]
BOOT_DISK_CONCERN = "boot-disk-contradicts-source"
# The boot test gives the guest at most this much (the domain keeps the VM's own); the report says so.
TEST_MEMORY_CAP_MIB = 2048
TEST_CPU_CAP = 2
FUNCTIONS_PER_SLOT = 8
FIRST_PORT_SLOT = 2
VIDEO_SLOT = 1


class MachineDisk(BaseModel):
    path: str
    format: str
    boot_order: int  # 1 boots first; every disk has one, as in the domain and the QEMU command
    unit: int  # position on its bus (sata port, scsi lun); virtio disks: order of their root ports


class MachineNic(BaseModel):
    mac: str | None
    port: int  # root port (= guest PCI bus) the virtio-net device sits behind


class Machine(BaseModel):
    name: str
    uuid: str | None = None
    firmware: Firmware
    secure_boot: bool = False
    memory_mib: int
    cpus: int
    windows: bool = False
    bus: Bus = "virtio"
    disks: list[MachineDisk]
    nics: list[MachineNic]
    ports: dict[str, int]  # device -> root port: "disk<N>" (virtio), "scsi", "serial", "rng", "balloon", "usb"


def port_address(port: int) -> tuple[int, int]:
    """(slot, function) of root port `port` (1-based) on pcie.0."""
    return FIRST_PORT_SLOT + (port - 1) // FUNCTIONS_PER_SLOT, (port - 1) % FUNCTIONS_PER_SLOT


def _declared(vm: VM) -> list[int]:
    """Positions in `vm.disks` of the disks the source boots from, in its order."""
    positions = {d.index: i for i, d in enumerate(vm.disks)}
    return [positions[i] for i in vm.boot_order if i in positions]


def boot_sequence(vm: VM, inspection: dict | None) -> list[int]:
    """Positions in `vm.disks`, the boot disk first: the one the guest stage found bootable (see
    `choose_boot_disk`), else the source's boot order, else the first; then the source's order, then the rest."""
    declared = _declared(vm)
    found = (inspection or {}).get("boot_disk")
    first = [found] if isinstance(found, int) and 0 <= found < len(vm.disks) else declared[:1] or [0]
    return list(dict.fromkeys(first + declared + list(range(len(vm.disks)))))


def choose_boot_disk(vm: VM, bootable: list[int], os_disk: int | None = None) -> int | None:
    """Of the disks (positions) that hold boot code or an EFI loader, the one that boots: the source's
    first boot disk if it is one of them, else the one holding the OS's /boot (or /) if it is one, else
    the first of them in bus order; None if none is."""
    for choice in _declared(vm)[:1] + [os_disk]:
        if choice is not None and choice in bootable:
            return choice
    return bootable[0] if bootable else None


def boot_disk_concerns(vm: VM, inspection: dict | None) -> list[Concern]:
    declared = _declared(vm)
    found = (inspection or {}).get("boot_disk")
    if not declared or found is None or found == declared[0]:
        return []
    return [Concern(id=BOOT_DISK_CONCERN, severity=Severity.warning,
                    message=f"the source boots disk {vm.disks[declared[0]].index} first, but it holds no boot "
                            f"loader; disk {vm.disks[found].index} does and boots first in the domain XML and the "
                            "boot test",
                    remedy="check the source VM's boot order")]


def is_windows(vm: VM, inspection: dict | None) -> bool:
    """Windows by the guest stage's inspection, else (no OS inspected) by the descriptor's guest OS."""
    os_type = (inspection or {}).get("os_type", "unknown")
    return os_type == "windows" if os_type != "unknown" else vm.guest_os.lower().startswith("win")


def shipped_machine(vm: VM, inspection: dict | None, outputs: list[tuple[str, str]], bus: Bus = "virtio") -> Machine:
    """The machine of source `vm` after the guest stage's `inspection`; `outputs`: (path, format) of
    each of `vm.disks`, in the same order. What the boot test boots and the domain XML declares."""
    return target_machine(shipped_vm(vm, inspection), inspection, outputs, windows=is_windows(vm, inspection),
                          bus=bus)


def target_machine(vm: VM, inspection: dict | None, outputs: list[tuple[str, str]], *, windows: bool = False,
                   bus: Bus = "virtio") -> Machine:
    order = boot_sequence(vm, inspection)
    disks = [MachineDisk(path=path, format=fmt, boot_order=order.index(i) + 1, unit=i)
             for i, (path, fmt) in enumerate(outputs)]
    nics = [MachineNic(mac=nic.mac, port=n + 1) for n, nic in enumerate(vm.nics)]
    devices = [f"disk{i}" for i in range(len(disks))] if bus == "virtio" else ["scsi"] if bus == "scsi" else []
    devices += ["serial", "rng", "balloon", "usb"]
    ports = {name: len(nics) + k + 1 for k, name in enumerate(devices)}
    return Machine(name=vm.name, uuid=vm.uuid, firmware=vm.firmware, secure_boot=vm.secure_boot,
                   memory_mib=vm.memory_mib, cpus=vm.cpus, windows=windows, bus=bus, disks=disks, nics=nics,
                   ports=ports)


def for_test(machine: Machine) -> tuple[Machine, list[str]]:
    """The machine the boot test runs: memory and CPUs capped (the worker runs other guests too), with
    a note for each cap."""
    notes, changes = [], {}
    if machine.memory_mib > TEST_MEMORY_CAP_MIB:
        changes["memory_mib"] = TEST_MEMORY_CAP_MIB
        notes.append(f"boot test ran with {TEST_MEMORY_CAP_MIB} MiB of memory; the domain has {machine.memory_mib} MiB")
    if machine.cpus > TEST_CPU_CAP:
        changes["cpus"] = TEST_CPU_CAP
        notes.append(f"boot test ran with {TEST_CPU_CAP} CPUs; the domain has {machine.cpus}")
    return (machine.model_copy(update=changes) if changes else machine), notes


def plain(disks: list[tuple[str, str]], firmware: str = "bios", *, bus: Bus = "virtio", mac: str | None = None,
          memory_mib: int = 1024, name: str = "h2k-boot") -> Machine:
    """A machine for disks with no source VM (tests, benches): one NIC, the first disk boots."""
    vm = VM(name=name, firmware=Firmware(firmware), memory_mib=memory_mib, source="", source_kind="disk",
            disks=[Disk(source=p, format=f, virtual_size=0, index=i) for i, (p, f) in enumerate(disks)],
            nics=[Nic(mac=mac)])
    return target_machine(vm, None, disks, bus=bus)
