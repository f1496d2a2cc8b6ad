"""VMDK descriptors and snapshot chains.

A VMDK is a text descriptor (a small file, or embedded in a hosted sparse extent) naming its
extents and, for a snapshot delta, its parent (`parentFileNameHint`, whose `CID` must equal the
child's `parentCID`). We read the chain ourselves, check every extent exists and every link
agrees, then confirm the whole chain with `qemu-img info --backing-chain`.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

from h2k_planner.errors import InputError
from h2k_planner.models import Disk
from h2k_planner.probe import DESCRIPTOR_MAGIC
from h2k_planner.sources.scope import ChainWalk, Scope, check_size

MAX_DESCRIPTOR = 64 * 1024
NO_PARENT = 0xFFFFFFFF

_EXTENT = re.compile(
    r'^(?P<access>RW|RDONLY|NOACCESS)\s+(?P<sectors>\d+)\s+(?P<type>[A-Z]+)'
    r'(?:\s+"(?P<file>[^"]*)"(?:\s+(?P<offset>\d+))?)?\s*$'
)
FLAT_TYPES = {"FLAT", "VMFS"}
SPARSE_TYPES = {"SPARSE", "VMFSSPARSE", "SESPARSE"}
_ENCODING = re.compile(rb'^encoding\s*=\s*"([^"]+)"', re.M)
_KEYVAL = re.compile(r'^(?P<key>[A-Za-z0-9_.]+)\s*=\s*"?(?P<value>[^"]*)"?\s*$')


@dataclass
class Extent:
    access: str
    sectors: int
    type: str
    file: str | None  # absolute path, None for ZERO extents
    offset: int = 0


@dataclass
class Descriptor:
    path: str
    create_type: str
    cid: int
    parent_cid: int
    parent_hint: str | None
    extents: list[Extent] = field(default_factory=list)
    ddb: dict[str, str] = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        return sum(e.sectors for e in self.extents) * 512


def read_descriptor_text(path: str) -> str:
    """The descriptor text of a VMDK: the file itself, or the one embedded in a sparse extent."""
    with open(path, "rb") as f:
        head = f.read(512)
        if head[:4] == b"KDMV":
            offset, size = struct.unpack_from("<QQ", head, 28)
            if offset == 0 or size == 0:
                raise InputError(path, "sparse VMDK extent without an embedded descriptor")
            if size * 512 > MAX_DESCRIPTOR:
                raise InputError(path, f"embedded descriptor of {size * 512} bytes is absurd")
            f.seek(offset * 512)
            raw = f.read(size * 512).split(b"\0", 1)[0]
        elif head.lstrip(b"\xef\xbb\xbf").startswith(DESCRIPTOR_MAGIC):
            f.seek(0)
            raw = f.read(MAX_DESCRIPTOR + 1)
            if len(raw) > MAX_DESCRIPTOR:
                raise InputError(path, "VMDK descriptor larger than 64 KiB")
        else:
            raise InputError(path, "not a VMDK descriptor or hosted sparse extent")
    if b"\0" in raw.rstrip(b"\0"):  # qemu-img pads descriptor files with NULs to a sector
        raise InputError(path, "binary content in the VMDK descriptor")
    raw = raw.rstrip(b"\0")
    try:
        return raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        pass
    m = _ENCODING.search(raw)
    encoding = m.group(1).decode("ascii", "replace") if m else "utf-8"
    try:
        return raw.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        raise InputError(path, f"VMDK descriptor is not valid {encoding}") from None


def parse_descriptor(path: str, scope: Scope | None = None) -> Descriptor:
    """The descriptor of `path`; every file it names must lie within `scope` (default: its directory)."""
    scope = scope or Scope.of(path)
    text = read_descriptor_text(path)
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        embedded = f.read(4) == b"KDMV"
    keys: dict[str, str] = {}
    ddb: dict[str, str] = {}
    extents: list[Extent] = []
    for lineno, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXTENT.match(line)
        if m:
            name = m["file"]
            if m["type"] not in FLAT_TYPES | SPARSE_TYPES | {"ZERO"}:
                raise InputError(path, f"line {lineno}: extent type {m['type']} is not supported "
                                       "(raw device mappings and unknown types cannot be read from files)")
            if m["type"] != "ZERO" and not name:
                raise InputError(path, f"line {lineno}: extent without a file name")
            extents.append(
                Extent(
                    access=m["access"],
                    sectors=int(m["sectors"]),
                    type=m["type"],
                    # an embedded descriptor's extent is the file itself, whatever name it kept
                    file=os.path.abspath(path) if embedded and name else scope.resolve(name, base, path) if name else None,
                    offset=int(m["offset"] or 0),
                )
            )
            continue
        kv = _KEYVAL.match(line)
        if not kv:
            raise InputError(path, f"line {lineno}: not a VMDK descriptor line: {line[:60]!r}")
        (ddb if kv["key"].startswith("ddb.") else keys)[kv["key"]] = kv["value"]
    if "createType" not in keys:
        raise InputError(path, "VMDK descriptor has no createType")
    if not extents:
        raise InputError(path, "VMDK descriptor names no extents")
    hint = keys.get("parentFileNameHint") or None
    check_size(path, sum(e.sectors for e in extents) * 512, "declared capacity")
    return Descriptor(
        path=os.path.abspath(path),
        create_type=keys["createType"],
        cid=_cid(path, keys, "CID", 0),
        parent_cid=_cid(path, keys, "parentCID", NO_PARENT),
        parent_hint=scope.resolve(hint, base, path) if hint else None,
        extents=extents,
        ddb=ddb,
    )


def _cid(path: str, keys: dict[str, str], key: str, default: int) -> int:
    value = keys.get(key)
    if value is None:
        return default
    try:
        return int(value, 16)
    except ValueError:
        raise InputError(path, f"{key}={value!r} is not a hexadecimal content id") from None


def read_chain(path: str, scope: Scope | None = None) -> list[Descriptor]:
    """The snapshot chain from `path` down to its base, top first, with every link checked."""
    scope = scope or Scope.of(path)
    chain: list[Descriptor] = []
    walk = ChainWalk(path, "snapshot chain")
    current: str | None = os.path.abspath(path)
    child: Descriptor | None = None
    while current:
        walk.visit(current)
        if not os.path.isfile(current):
            what = f"parent of {os.path.basename(child.path)}" if child else "disk"
            raise InputError(current, f"missing VMDK ({what})")
        desc = parse_descriptor(current, scope)
        if child is not None and child.parent_cid != desc.cid:
            raise InputError(
                child.path,
                f"parentCID {child.parent_cid:08x} does not match CID {desc.cid:08x} of parent "
                f"{os.path.basename(current)}",
            )
        for ext in desc.extents:
            _check_extent(desc, ext)
        chain.append(desc)
        child = desc
        if desc.parent_cid != NO_PARENT and not desc.parent_hint:
            raise InputError(desc.path, "snapshot delta (parentCID set) without parentFileNameHint")
        current = desc.parent_hint
    return chain


def _check_extent(desc: Descriptor, ext: Extent) -> None:
    if ext.file is None or ext.file == desc.path:
        return
    if not os.path.isfile(ext.file):
        raise InputError(desc.path, f"missing extent {os.path.basename(ext.file)}")
    if ext.type in FLAT_TYPES:
        need = (ext.offset + ext.sectors) * 512
        have = os.path.getsize(ext.file)
        if have < need:
            raise InputError(desc.path, f"extent {os.path.basename(ext.file)} holds {have} bytes, "
                                        f"the descriptor declares {need}")


def is_bare_extent(path: str) -> bool:
    """True for a VMDK file that is only an extent (flat data, an ESXi COWD delta, or a hosted
    sparse extent without an embedded descriptor): it belongs to some descriptor and is never a disk on its own."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"KDMV":
        offset, size = struct.unpack_from("<QQ", head, 28)
        return offset == 0 or size == 0
    return not head.lstrip(b"\xef\xbb\xbf").startswith(DESCRIPTOR_MAGIC)  # flat data or a COWD extent


def chain_files(chain: list[Descriptor]) -> list[str]:
    """Every file the chain reads: descriptors and extents, top first, without repeats."""
    files: list[str] = []
    for desc in chain:
        for f in [desc.path] + [e.file for e in desc.extents if e.file]:
            if f not in files:
                files.append(f)
    return files


def vmdk_disk(path: str, scope: Scope | None = None, **placement) -> Disk:
    """A Disk model for the VMDK at `path`: our chain read, confirmed by qemu-img."""
    from h2k_planner.probe import detect_format, qemu_img_info

    chain = read_chain(path, scope)
    fmt = detect_format(path)
    if fmt != "vmdk":
        raise InputError(path, f"named as a VMDK but its content is {fmt}")
    if chain[-1].create_type == "vmfsThin":
        return _vmfs_thin_disk(chain, placement)
    info = qemu_img_info(path, "vmdk")
    if len(info) != len(chain):
        raise InputError(path, f"qemu-img sees a chain of {len(info)} images, the descriptors say {len(chain)}")
    for layer, desc in zip(info, chain):
        if layer.get("format") != "vmdk":
            raise InputError(desc.path, f"qemu-img reads it as {layer.get('format')}, not vmdk")
    if int(info[0]["virtual-size"]) != chain[0].capacity:
        raise InputError(path, f"qemu-img reads {info[0]['virtual-size']} bytes, the descriptor declares {chain[0].capacity}")
    return Disk(
        source=os.path.abspath(path),
        format="vmdk",
        virtual_size=check_size(path, int(info[0]["virtual-size"]), "virtual size"),
        allocated_size=sum(int(layer.get("actual-size", 0)) for layer in info),
        chain=chain_files(chain),
        depth=len(chain),
        **placement,
    )


def _vmfs_thin_disk(chain: list[Descriptor], placement: dict) -> Disk:
    """qemu does not open `vmfsThin` descriptors; its one flat extent is read as raw instead
    (through a `raw` layer bounded to the extent), which is what the descriptor means."""
    import json


    desc = chain[0]
    if len(chain) > 1 or len(desc.extents) != 1 or desc.extents[0].type not in FLAT_TYPES:
        raise InputError(desc.path, "a vmfsThin disk is read only as a single flat extent without snapshots")
    ext = desc.extents[0]
    spec = {"driver": "raw", "offset": ext.offset * 512, "size": ext.sectors * 512,
            "file": {"driver": "file", "filename": ext.file}}
    return Disk(source="json:" + json.dumps(spec), format="raw", virtual_size=desc.capacity,
                allocated_size=os.path.getsize(ext.file), chain=chain_files(chain), depth=1, **placement)
