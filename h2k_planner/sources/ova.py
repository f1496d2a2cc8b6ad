"""OVAs: an archive (h2k_planner/sources/ova_archive.py) holding one `.ovf`, any number of
manifests and the disks, in any folder of it.

The OVF's hrefs are resolved from the OVF's own folder. In an uncompressed tar, uncompressed
disks are read in place: qemu opens the member at its offset through a `raw` layer (a `json:`
image spec), so nothing is copied. gzip'd disks, and every disk of a zip or compressed tar, are
unpacked once by the fetch stage into the VM's output directory."""
from __future__ import annotations

import json
import os
import posixpath
import zlib

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Disk, Packed
from h2k_planner.probe import format_of, qemu_img_info
from h2k_planner.sources.disk import encrypted_disk
from h2k_planner.sources.manifest import MAX_MANIFEST
from h2k_planner.sources.ova_archive import Archive, open_archive
from h2k_planner.sources.ovf import MAX_OVF, FileRef
from h2k_planner.sources.ovf_vm import Window, envelope_vms, gunzip_head, newest_snapshot, packed_disk
from h2k_planner.sources.scope import check_size


class OvaContainer:
    absent = "which is not in the archive"

    def __init__(self, archive: Archive, folder: str):
        self.archive, self.source, self.folder = archive, archive.source, folder

    def exists(self, name: str) -> bool:
        return name in self.archive.members

    def digests(self, name: str, algos: set[str]) -> dict[str, str]:
        return self.archive.digests(name, algos)

    def locate(self, href: str) -> str | None:
        name = posixpath.normpath(posixpath.join(self.folder, href))
        if href.startswith("/") or name == ".." or name.startswith("../"):
            raise InputError(self.source, f"references {href}, which lies outside the archive")
        if self.exists(name):
            return name
        return newest_snapshot(name, self.archive.members)

    def disk(self, name: str, ref: FileRef, capacity: int | None, placement: dict) -> tuple[Disk, list[Concern]]:
        member = self.archive.members[name]
        if not self.archive.in_place:
            head, tail = member.head, member.tail
            if ref.gzip:
                head, tail = _gunzip(self.source, name, head), b""
            packed = Packed(file=self.source, size=member.size, member=name, gzip=ref.gzip)
            return packed_disk(f"{self.source}:{name}", packed, head, tail, capacity, placement), []
        with open(self.source, "rb") as f:
            f.seek(member.offset)
            if ref.gzip:
                head, tail = gunzip_head(self.source, Window(f, member.size))
                packed = Packed(file=self.source, offset=member.offset, size=member.size)
                return packed_disk(self.source, packed, head, tail, capacity, placement), []
            head = f.read(min(1024, member.size))
            tail = b""
            if member.size >= 512:
                f.seek(member.offset + member.size - 512)
                tail = f.read(512)
        return _in_place(self.source, name, member.offset, member.size, head, tail, placement)


def _gunzip(source: str, name: str, head: bytes) -> bytes:
    """The first KiB of a gzip'd member's content, from the head a streamed pass kept."""
    try:
        return zlib.decompressobj(wbits=31).decompress(head, 1024)
    except zlib.error as e:
        raise InputError(source, f"gzip'd disk {name} cannot be decompressed: {e}") from None


def _in_place(source: str, name: str, offset: int, size: int, head: bytes, tail: bytes,
              placement: dict) -> tuple[Disk, list[Concern]]:
    if not head:
        raise InputError(source, f"disk member {name} is empty")
    fmt = format_of(head, tail)
    if fmt == "vmdk" and not head.startswith(b"KDMV"):
        raise InputError(source, f"disk member {name} is a VMDK descriptor, not a self-contained disk")
    if fmt == "qcow2" and head[8:16] != bytes(8):
        raise InputError(source, f"disk member {name} is a qcow2 with a backing file")
    spec = "json:" + json.dumps({"driver": fmt, "file": {
        "driver": "raw", "offset": offset, "size": size, "file": {"driver": "file", "filename": source}}})
    try:
        layers = qemu_img_info(spec, fmt)
    except InputError as e:
        raise InputError(source, f"disk member {name}: {e.problem}") from None
    if len(layers) != 1:
        raise InputError(source, f"disk member {name} has a backing chain")
    return Disk(source=spec, format=fmt, allocated_size=size, chain=[source],
                virtual_size=check_size(source, int(layers[0]["virtual-size"]), "virtual size"),
                **placement), ([encrypted_disk(name)] if fmt == "qcow2" and head[32:36] != bytes(4) else [])


def load_ova(path: str, allow: tuple[str, ...] = ()) -> list[VM]:
    """Every VM in the OVA. `allow` is accepted for symmetry: an OVA reads only its own members."""
    path = os.path.abspath(path)
    archive = open_archive(path)
    ovfs = sorted(n for n in archive.members if n.lower().endswith(".ovf"))
    if len(ovfs) != 1:
        raise InputError(path, f"holds {len(ovfs)} .ovf descriptors; an OVA holds exactly one")
    manifests = [(f"{path}:{n}", posixpath.dirname(n), archive.read(n, MAX_MANIFEST))
                 for n in sorted(archive.members) if n.lower().endswith(".mf")]
    container = OvaContainer(archive, posixpath.dirname(ovfs[0]))
    return envelope_vms(f"{path}:{ovfs[0]}", archive.read(ovfs[0], MAX_OVF), ovfs[0], manifests, container, "ova")
