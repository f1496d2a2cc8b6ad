"""VM models from a parsed OVF envelope, wherever its files live: beside the `.ovf` (this module's
`load_ovf`) or inside an OVA (h2k_planner/sources/ova.py). Both go through `envelope_vms` with a
container that knows how to find, hash and open the referenced files."""
from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import struct
import zlib
from typing import Iterable, Protocol

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Disk, Firmware, Nic, Packed, Severity
from h2k_planner.probe import format_of
from h2k_planner.sources import manifest
from h2k_planner.sources.disk import image_disk
from h2k_planner.sources.ovf import Envelope, FileRef, System, count, mac_of, parse_ovf, quantity
from h2k_planner.sources.scope import Scope, check_size

CHUNK = 1024 * 1024
_BUS = {5: "ide", 6: "scsi"}
_BOOT_ORDER = {"scsi": 0, "sata": 1, "nvme": 2, "ide": 3, "unknown": 4}


class Container(Protocol):
    """Files by name relative to the container's root; the OVF's hrefs relative to its folder."""
    source: str
    absent: str  # how a missing file is described

    def locate(self, href: str) -> str | None: ...

    def exists(self, name: str) -> bool: ...

    def digests(self, name: str, algos: set[str]) -> dict[str, str]: ...

    def disk(self, name: str, ref: FileRef, capacity: int | None, placement: dict) -> tuple[Disk, list[Concern]]: ...


def newest_snapshot(name: str, names: Iterable[str]) -> str | None:
    """`name.000000002` when `name` is missing but numbered snapshots of it exist (the newest
    wins, as virt-v2v reads such exports), else None."""
    numbered = re.compile(re.escape(name) + r"\.(\d+)$")
    found = [(int(m.group(1)), n) for n in names if (m := numbered.match(n))]
    return max(found)[1] if found else None


def snapshot_concern(href: str, name: str) -> Concern:
    return Concern(id="snapshot-member", severity=Severity.info,
                   message=f"{href} is not there; its newest snapshot {posixpath.basename(name)} is the disk",
                   remedy="none needed; re-export without snapshots to be sure the newest state is wanted")


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


def packed_disk(referrer: str, packed: Packed, head: bytes, tail: bytes, capacity: int | None,
                placement: dict) -> Disk:
    """A disk the fetch stage unpacks: its format from the unpacked head, its size from that head
    when it tells, else from the OVF."""
    fmt = format_of(head, tail)
    if not head:
        raise InputError(referrer, "a referenced disk is empty")
    if fmt == "vmdk" and not head.startswith(b"KDMV"):
        raise InputError(referrer, "a packed disk is a VMDK descriptor, not a self-contained disk")
    if fmt == "qcow2" and head[8:16] != bytes(8):
        raise InputError(referrer, "a packed qcow2 has a backing file")
    size = _declared_size(fmt, head, tail, None if packed.gzip else packed.size) or capacity
    if not size:
        raise InputError(referrer, "a compressed disk needs its capacity in the DiskSection")
    return Disk(source=packed.file, format=fmt, virtual_size=check_size(referrer, size, "virtual size"),
                allocated_size=packed.size, chain=[packed.file], packed=packed, **placement)


def _declared_size(fmt: str, head: bytes, tail: bytes, raw_size: int | None) -> int | None:
    """The virtual size a packed image's own header declares, when its head (or a fixed VHD's
    footer) holds it; the fetch stage checks qemu-img agrees once it is unpacked."""
    if fmt == "raw":
        return raw_size
    if fmt == "vmdk" and len(head) >= 20:
        return struct.unpack_from("<Q", head, 12)[0] * 512
    if fmt == "qcow2" and len(head) >= 32:
        return struct.unpack_from(">Q", head, 24)[0]
    if fmt == "vpc" and tail.startswith(b"conectix") and len(tail) >= 56:
        return struct.unpack_from(">Q", tail, 48)[0]
    return None


class OvfDirectory:
    """An `.ovf` whose files lie beside it (or under an --allow-path directory)."""
    absent = "which does not exist"

    def __init__(self, path: str, scope: Scope):
        self.source, self.scope, self.base = path, scope, os.path.dirname(path)

    def _path(self, name: str) -> str:
        return self.scope.resolve(name, self.base, self.source)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def locate(self, href: str) -> str | None:
        name = posixpath.normpath(href)
        if self.exists(name):
            return name
        folder = os.path.dirname(self._path(name))
        newest = newest_snapshot(posixpath.basename(name), os.listdir(folder) if os.path.isdir(folder) else [])
        return posixpath.join(posixpath.dirname(name), newest) if newest else None

    def digests(self, name: str, algos: set[str]) -> dict[str, str]:
        hashes = {a: hashlib.new(a) for a in algos}
        with open(self._path(name), "rb") as f:
            while chunk := f.read(CHUNK):
                for h in hashes.values():
                    h.update(chunk)
        return {a: h.hexdigest() for a, h in hashes.items()}

    def disk(self, name: str, ref: FileRef, capacity: int | None, placement: dict) -> tuple[Disk, list[Concern]]:
        path = self._path(name)
        if not ref.gzip:
            return image_disk(path, self.scope, **placement)
        with open(path, "rb") as f:
            head, tail = gunzip_head(self.source, f)
        return packed_disk(self.source, Packed(file=path, size=os.path.getsize(path)), head, tail, capacity, placement), []


def load_ovf(path: str, allow: tuple[str, ...] = ()) -> list[VM]:
    path = os.path.abspath(path)
    with open(path, "rb") as f:
        data = f.read(16 * 1024 * 1024 + 1)
    scope = Scope.of(path, allow)
    return envelope_vms(path, data, os.path.basename(path), _beside(path, scope), OvfDirectory(path, scope), "ovf")


def _beside(path: str, scope: Scope) -> list[tuple[str, str, bytes]]:
    """The manifests in the `.ovf`'s folder: every `.mf` but those named after another `.ovf`."""
    folder, own = os.path.dirname(path), os.path.basename(path)
    names = sorted(os.listdir(folder))
    others = {os.path.splitext(n)[0] for n in names if n.lower().endswith(".ovf") and n != own}
    found = []
    for n in names:
        mf = os.path.join(folder, n)
        if n.lower().endswith(".mf") and os.path.splitext(n)[0] not in others and os.path.isfile(scope.check(mf, path)):
            with open(mf, "rb") as f:
                found.append((mf, "", f.read(manifest.MAX_MANIFEST + 1)))
    return found


def envelope_vms(path: str, data: bytes, ovf_name: str, manifests: list[tuple[str, str, bytes]],
                 container: Container, kind: str) -> list[VM]:
    """Every VirtualSystem of the envelope as a VM, after every manifest's digests verified.
    `manifests` are (name for errors, folder its names are relative to, bytes)."""
    env = parse_ovf(path, data)
    concerns: list[Concern] = []
    entries: list[manifest.Entry] = []
    for mf, folder, mf_data in manifests:
        found, skipped = manifest.parse_manifest(mf, mf_data, folder)
        entries += found
        concerns += skipped
    manifest.verify(entries, container.exists, container.digests)
    located = {f.id: container.locate(f.href) for f in env.files.values()}
    if not manifests:
        concerns.append(Concern(id="no-manifest", severity=Severity.info,
                                message="no manifest (.mf): file integrity is not verified",
                                remedy="export the OVF with a manifest"))
    elif gap := manifest.unverified(entries, [ovf_name] + [n for n in located.values() if n]):
        concerns.append(gap)
    for f in env.files.values():
        name = located[f.id]
        if name and posixpath.basename(name) != posixpath.basename(f.href):
            concerns.append(snapshot_concern(f.href, name))
    return [_vm(path, env, system, container, located, kind, list(concerns)) for system in env.systems]


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


def _vm(path: str, env: Envelope, system: System, container: Container, located: dict[str, str | None],
        kind: str, concerns: list[Concern]) -> VM:
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
        slots.append((_BOOT_ORDER[bus], ctl, unit, bus, ref, capacity, dev.instance))
    if not slots:
        raise InputError(path, f"VirtualSystem {system.name!r} has no disks with content")
    disks = []
    slots.sort(key=lambda s: s[:3])
    instances = {s[6]: index for index, s in enumerate(slots)}
    for index, (_, ctl, unit, bus, ref, capacity, _) in enumerate(slots):
        placement = {"bus": bus, "controller": ctl, "unit": unit, "index": index}
        if located[ref.id] is None:
            raise InputError(container.source, f"references {ref.href}, {container.absent}")
        disk, found = container.disk(located[ref.id], ref, capacity, placement)
        concerns += found
        if capacity and disk.virtual_size != capacity:
            concerns.append(Concern(id="capacity-mismatch", severity=Severity.warning,
                                    message=f"{ref.href}: the OVF declares {capacity} bytes, the image holds {disk.virtual_size}",
                                    remedy="the image's own size is used; check the export"))
        disks.append(disk)
    cpus = [count(path, d.quantity or "1", "CPU count") for d in system.devices if d.kind == 3]
    memory = [quantity(path, d, "memory", "byte * 2^20") for d in system.devices if d.kind == 4]
    ports = [d for d in system.devices if d.kind == 10]
    nics = [Nic(mac=mac_of(path, d) or (system.macs[n] if n < len(system.macs) else None),
                model=(d.subtype or "unknown").lower(), network=d.connection, name=d.name)
            for n, d in enumerate(ports)]
    efi = system.extra.get("firmware", "").lower() == "efi"
    return VM(
        name=system.name or os.path.splitext(os.path.basename(path))[0],
        firmware=Firmware.efi if efi else Firmware.bios,
        secure_boot=efi and system.extra.get("uefi.secureboot.enabled", "").lower() == "true",
        guest_os=system.os_type, cpus=max(1, cpus[0] if cpus else 1),
        memory_mib=max(1, (memory[0] if memory else 2**30) // 2**20),
        disks=disks, nics=nics, source=container.source, source_kind=kind, concerns=concerns,
        boot_order=[instances[i] for i in system.boot_order if i in instances],
    )
