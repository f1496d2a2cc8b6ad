"""VM models from a parsed OVF envelope, wherever its files live: beside the `.ovf` (this module's
`load_ovf`) or inside an OVA (h2k_planner/sources/ova.py). Both go through `envelope_vms` with a
container that knows how to hash and open the referenced files."""
from __future__ import annotations

import gzip
import os
import zlib
from typing import Iterable, Protocol

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Disk, Firmware, Nic, Packed, Severity
from h2k_planner.probe import format_of
from h2k_planner.sources import manifest
from h2k_planner.sources.disk import image_disk
from h2k_planner.sources.ovf import Envelope, FileRef, System, count, mac_of, parse_ovf, quantity
from h2k_planner.sources.scope import Scope

CHUNK = 1024 * 1024
_BUS = {5: "ide", 6: "scsi"}
_BOOT_ORDER = {"scsi": 0, "sata": 1, "nvme": 2, "ide": 3, "unknown": 4}


class Container(Protocol):
    source: str

    def chunks(self, name: str) -> Iterable[bytes]: ...

    def disk(self, ref: FileRef, capacity: int | None, placement: dict) -> tuple[Disk, list[Concern]]: ...


class Window:
    """A read-only view of the next `size` bytes of an open file, for gzip to read a member."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def gunzip_head(referrer: str, stream) -> tuple[bytes, bytes]:
    """The first KiB of a gzip stream's content (and no tail: a fixed VHD's footer is not looked for)."""
    try:
        return gzip.GzipFile(fileobj=stream).read(1024), b""
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(referrer, f"gzip'd disk cannot be decompressed: {e}") from None


def packed_disk(referrer: str, file: str, offset: int, size: int, head: bytes, tail: bytes,
                capacity: int | None, placement: dict) -> Disk:
    """A disk the fetch stage unpacks: its format from the unpacked head, its size from the OVF."""
    fmt = format_of(head, tail)
    if not head:
        raise InputError(referrer, "a referenced disk is empty")
    if fmt == "vmdk" and not head.startswith(b"KDMV"):
        raise InputError(referrer, "a packed disk is a VMDK descriptor, not a self-contained disk")
    if fmt == "qcow2" and head[8:16] != bytes(8):
        raise InputError(referrer, "a packed qcow2 has a backing file")
    if not capacity:
        raise InputError(referrer, "a compressed disk needs its capacity in the DiskSection")
    return Disk(source=file, format=fmt, virtual_size=capacity, allocated_size=size, chain=[file],
                packed=Packed(file=file, offset=offset, size=size), **placement)


class OvfDirectory:
    """An `.ovf` whose files lie beside it (or under an --allow-path directory)."""

    def __init__(self, path: str, scope: Scope):
        self.source, self.scope, self.base = path, scope, os.path.dirname(path)

    def _path(self, name: str) -> str:
        path = self.scope.resolve(name, self.base, self.source)
        if not os.path.isfile(path):
            raise InputError(self.source, f"references {name}, which does not exist")
        return path

    def chunks(self, name: str) -> Iterable[bytes]:
        with open(self._path(name), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def disk(self, ref: FileRef, capacity: int | None, placement: dict) -> tuple[Disk, list[Concern]]:
        path = self._path(ref.href)
        if not ref.gzip:
            return image_disk(path, self.scope, **placement)
        with open(path, "rb") as f:
            head, tail = gunzip_head(self.source, f)
        return packed_disk(self.source, path, 0, os.path.getsize(path), head, tail, capacity, placement), []


def load_ovf(path: str, allow: tuple[str, ...] = ()) -> list[VM]:
    path = os.path.abspath(path)
    with open(path, "rb") as f:
        data = f.read(16 * 1024 * 1024 + 1)
    container = OvfDirectory(path, Scope.of(path, allow))
    stem = os.path.splitext(os.path.basename(path))[0]
    mf = os.path.join(os.path.dirname(path), stem + ".mf")
    mf_data = open(mf, "rb").read(manifest.MAX_MANIFEST + 1) if os.path.isfile(mf) else None
    return envelope_vms(path, data, os.path.basename(path), mf, mf_data, container, "ovf")


def envelope_vms(path: str, data: bytes, ovf_name: str, mf: str, mf_data: bytes | None,
                 container: Container, kind: str) -> list[VM]:
    """Every VirtualSystem of the envelope as a VM, after the manifest (if any) verified."""
    env = parse_ovf(path, data)
    concerns: list[Concern] = []
    if mf_data is None:
        concerns.append(Concern(id="no-manifest", severity=Severity.info,
                                message="no manifest (.mf): file integrity is not verified",
                                remedy="export the OVF with a manifest"))
    else:
        entries = manifest.parse_manifest(mf, mf_data)
        manifest.verify(mf, entries, [ovf_name] + [f.href for f in env.files.values()], container.chunks)
    return [_vm(path, env, system, container, kind, list(concerns)) for system in env.systems]


def _controllers(system: System) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    for dev in system.devices:
        sub = dev.subtype.lower()
        if dev.kind in _BUS:
            bus = _BUS[dev.kind]
        elif dev.kind == 20:
            bus = "sata" if "sata" in sub or "ahci" in sub else "nvme" if "nvme" in sub else "unknown"
        else:
            continue
        index = int(dev.address) if dev.address.isdigit() else counts.get(bus, 0)
        counts[bus] = counts.get(bus, 0) + 1
        found[dev.instance] = (bus, index)
    return found


def _vm(path: str, env: Envelope, system: System, container: Container, kind: str,
        concerns: list[Concern]) -> VM:
    controllers = _controllers(system)
    slots = []
    for dev in system.devices:
        if dev.kind != 17:
            continue
        res = dev.host_resource.removeprefix("ovf:")
        if res.startswith("/disk/") and res[6:] in env.disks:
            d = env.disks[res[6:]]
            ref, capacity = (env.files[d.file_ref] if d.file_ref else None), d.capacity
        elif res.startswith("/file/") and res[6:] in env.files:
            ref, capacity = env.files[res[6:]], None
        else:
            raise InputError(path, f"disk item {dev.name or dev.instance} refers to unknown {dev.host_resource!r}")
        if ref is None:
            concerns.append(Concern(id="blank-disk", severity=Severity.warning,
                                    message=f"disk {dev.name or dev.instance} has no content (a blank disk) and is skipped",
                                    remedy="add an empty disk to the libvirt domain after migration if needed"))
            continue
        bus, ctl = controllers.get(dev.parent, ("unknown", 0))
        unit = int(dev.address_on_parent) if dev.address_on_parent.isdigit() else 0
        slots.append((_BOOT_ORDER[bus], ctl, unit, bus, ref, capacity))
    if not slots:
        raise InputError(path, f"VirtualSystem {system.name!r} has no disks with content")
    disks = []
    for index, (_, ctl, unit, bus, ref, capacity) in enumerate(sorted(slots, key=lambda s: s[:3])):
        placement = {"bus": bus, "controller": ctl, "unit": unit, "index": index}
        disk, found = container.disk(ref, capacity, placement)
        concerns += found
        if capacity and disk.virtual_size != capacity:
            concerns.append(Concern(id="capacity-mismatch", severity=Severity.warning,
                                    message=f"{ref.href}: the OVF declares {capacity} bytes, the image holds {disk.virtual_size}",
                                    remedy="the image's own size is used; check the export"))
        disks.append(disk)
    cpus = [count(path, d.quantity or "1", "CPU count") for d in system.devices if d.kind == 3]
    memory = [quantity(path, d, "memory", "byte * 2^20") for d in system.devices if d.kind == 4]
    nics = [Nic(mac=mac_of(path, d), model=(d.subtype or "unknown").lower(), network=d.connection, name=d.name)
            for d in system.devices if d.kind == 10]
    efi = system.extra.get("firmware", "").lower() == "efi"
    return VM(
        name=system.name or os.path.splitext(os.path.basename(path))[0],
        firmware=Firmware.efi if efi else Firmware.bios,
        secure_boot=efi and system.extra.get("uefi.secureboot.enabled", "").lower() == "true",
        guest_os=system.os_type, cpus=max(1, cpus[0] if cpus else 1),
        memory_mib=max(1, (memory[0] if memory else 2**30) // 2**20),
        disks=disks, nics=nics, source=container.source, source_kind=kind, concerns=concerns,
    )
