"""OVA archives: an uncompressed tar holding one `.ovf`, an optional `.mf` and the disks.

Every member is checked before anything is read: only regular files with plain relative names
(no `..`, no absolute paths, no links, devices or duplicates). Uncompressed disks are read in
place: qemu opens the member at its offset through a `raw` layer (a `json:` image spec), so nothing
is copied. gzip'd disks are unpacked once by the fetch stage into the VM's output directory.
"""
from __future__ import annotations

import json
import os
import posixpath
import tarfile
from typing import Iterable

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk
from h2k_planner.probe import format_of, qemu_img_info
from h2k_planner.sources.disk import encrypted_disk
from h2k_planner.sources.ovf import MAX_OVF, FileRef
from h2k_planner.sources.ovf_vm import CHUNK, Window, envelope_vms, gunzip_head, packed_disk
from h2k_planner.sources.manifest import MAX_MANIFEST
from h2k_planner.sources.scope import check_size

MAX_MEMBERS = 1000


def members(path: str) -> dict[str, tarfile.TarInfo]:
    """The OVA's members by name, each checked; InputError naming the first bad one."""
    try:
        with tarfile.open(path, "r:") as tar:
            infos = []
            for info in tar:
                infos.append(info)
                if len(infos) > MAX_MEMBERS:
                    raise InputError(path, f"more than {MAX_MEMBERS} tar members: not an OVA")
    except tarfile.ReadError as e:
        raise InputError(path, f"not an uncompressed tar archive (an OVA must be one): {e}") from None
    except (tarfile.TarError, EOFError) as e:
        raise InputError(path, f"damaged tar archive: {e}") from None
    size = os.path.getsize(path)
    found: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        name = info.name
        norm = posixpath.normpath(name)
        if name.startswith("/") or norm.startswith("../") or norm == ".." or "/../" in f"/{name}/":
            raise InputError(path, f"tar member {name!r} escapes the archive (absolute or '..')")
        if info.issym() or info.islnk():
            raise InputError(path, f"tar member {name!r} is a link; an OVA holds only regular files")
        if not info.isreg():
            raise InputError(path, f"tar member {name!r} is not a regular file (directory, device or FIFO)")
        if norm in found:
            raise InputError(path, f"tar member {name!r} appears twice")
        if info.offset_data + info.size > size:
            raise InputError(path, f"tar member {name!r} declares {info.size} bytes past the end of the archive")
        found[norm] = info
    return found


class OvaArchive:
    def __init__(self, path: str, found: dict[str, tarfile.TarInfo]):
        self.source, self.members = path, found

    def member(self, name: str) -> tarfile.TarInfo:
        info = self.members.get(posixpath.normpath(name))
        if info is None or name.startswith("/"):
            raise InputError(self.source, f"references {name}, which is not in the archive")
        return info

    def read(self, name: str, limit: int) -> bytes:
        info = self.member(name)
        if info.size > limit:
            raise InputError(self.source, f"member {name} is larger than {limit} bytes")
        with open(self.source, "rb") as f:
            f.seek(info.offset_data)
            return f.read(info.size)

    def chunks(self, name: str) -> Iterable[bytes]:
        info = self.member(name)
        with open(self.source, "rb") as f:
            f.seek(info.offset_data)
            left = info.size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise InputError(self.source, f"member {name} is truncated")
                left -= len(chunk)
                yield chunk

    def disk(self, ref: FileRef, capacity: int | None, placement: dict) -> tuple[Disk, list]:
        info = self.member(ref.href)
        with open(self.source, "rb") as f:
            f.seek(info.offset_data)
            if ref.gzip:
                head, tail = gunzip_head(self.source, Window(f, info.size))
                return packed_disk(self.source, self.source, info.offset_data, info.size, head, tail,
                                   capacity, placement), []
            head = f.read(min(1024, info.size))
            tail = b""
            if info.size >= 512:
                f.seek(info.offset_data + info.size - 512)
                tail = f.read(512)
        if not head:
            raise InputError(self.source, f"disk member {ref.href} is empty")
        fmt = format_of(head, tail)
        if fmt == "vmdk" and not head.startswith(b"KDMV"):
            raise InputError(self.source, f"disk member {ref.href} is a VMDK descriptor, not a self-contained disk")
        if fmt == "qcow2" and head[8:16] != bytes(8):
            raise InputError(self.source, f"disk member {ref.href} is a qcow2 with a backing file")
        spec = "json:" + json.dumps({"driver": fmt, "file": {
            "driver": "raw", "offset": info.offset_data, "size": info.size,
            "file": {"driver": "file", "filename": self.source}}})
        try:
            layers = qemu_img_info(spec, fmt)
        except InputError as e:
            raise InputError(self.source, f"disk member {ref.href}: {e.problem}") from None
        if len(layers) != 1:
            raise InputError(self.source, f"disk member {ref.href} has a backing chain")
        return Disk(source=spec, format=fmt, allocated_size=info.size, chain=[self.source],
                    virtual_size=check_size(self.source, int(layers[0]["virtual-size"]), "virtual size"),
                    **placement), ([encrypted_disk(ref.href)] if fmt == "qcow2" and head[32:36] != bytes(4) else [])


def load_ova(path: str, allow: tuple[str, ...] = ()) -> list[VM]:
    """Every VM in the OVA. `allow` is accepted for symmetry: an OVA reads only its own members."""
    path = os.path.abspath(path)
    found = members(path)
    archive = OvaArchive(path, found)
    ovfs = [n for n in found if n.lower().endswith(".ovf")]
    if len(ovfs) != 1:
        raise InputError(path, f"holds {len(ovfs)} .ovf descriptors; an OVA holds exactly one")
    mfs = [n for n in found if n.lower().endswith(".mf")]
    if len(mfs) > 1:
        raise InputError(path, f"holds {len(mfs)} manifests; an OVA holds at most one")
    data = archive.read(ovfs[0], MAX_OVF)
    mf_data = archive.read(mfs[0], MAX_MANIFEST) if mfs else None
    return envelope_vms(f"{path}:{ovfs[0]}", data, ovfs[0], f"{path}:{mfs[0]}" if mfs else path, mf_data, archive, "ova")
