"""The container of an OVA: an uncompressed tar read in place, or a zip / compressed tar streamed once.

The kind is told by the first bytes, never the name. Every member is checked before anything is
used: plain relative names (no absolute paths, nothing climbing out with `..`), regular files only
(directory entries are skipped; links, devices and FIFOs refused), no duplicates, nothing past the
end of the archive. A streamed archive may not expand past `MAX_RATIO` times its size plus
`SLACK`: one pass keeps the small descriptors (`.ovf`, `.mf`) and, for every member, its size,
head, tail and SHA1/SHA256/SHA512 digests, which is all the planner needs."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Iterator

from h2k_planner.errors import InputError
from h2k_planner.sources.manifest import LENGTH, MAX_MANIFEST
from h2k_planner.sources.ovf import MAX_OVF

MAX_MEMBERS = 1000
MAX_RATIO = 256
SLACK = 64 * 2**20
MAX_KEPT = 32 * 2**20  # descriptor and manifest bytes a streamed pass keeps in memory
HEAD = 64 * 1024  # enough of a member to probe it, gzip'd or not
CHUNK = 1024 * 1024
_DECOMPRESSORS = {b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f), b"\xfd7zXZ\x00": lzma.LZMAFile, b"BZh": bz2.BZ2File}
_COMPRESSED = tuple(_DECOMPRESSORS)


@dataclass
class Member:
    name: str  # normalized path inside the archive
    size: int
    offset: int | None = None  # where its bytes start in the file (uncompressed tar only)
    head: bytes = b""
    tail: bytes = b""
    digests: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None  # kept content of a descriptor or manifest (streamed only)


def kind_of(path: str) -> str:
    """'tar' (read in place), 'zip' or 'compressed-tar' (streamed)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK\x03\x04") or magic.startswith(b"PK\x05\x06"):
        return "zip"
    if magic.startswith(_COMPRESSED):
        return "compressed-tar"
    return "tar"


def _checked_name(path: str, what: str, name: str) -> str:
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in name:
        raise InputError(path, f"{what} member {name!r} escapes the archive (absolute or '..')")
    return norm


class Archive:
    """Members by normalized name; `read`, `digests`, and for a tar read in place, the offsets."""

    def __init__(self, path: str, kind: str, members: dict[str, Member]):
        self.source, self.kind, self.members = path, kind, members

    @property
    def in_place(self) -> bool:
        return self.kind == "tar"

    def read(self, name: str, limit: int) -> bytes:
        m = self.members[name]
        if m.size > limit:
            raise InputError(self.source, f"member {name} is larger than {limit} bytes")
        if m.offset is None:
            return m.data
        with open(self.source, "rb") as f:
            f.seek(m.offset)
            return f.read(m.size)

    def digests(self, name: str, algos: set[str]) -> dict[str, str]:
        m = self.members[name]
        if m.offset is None:
            return m.digests
        hashes = {a: hashlib.new(a) for a in algos}
        with open(self.source, "rb") as f:
            f.seek(m.offset)
            left = m.size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise InputError(self.source, f"member {name} is truncated")
                left -= len(chunk)
                for h in hashes.values():
                    h.update(chunk)
        return {a: h.hexdigest() for a, h in hashes.items()}


def open_archive(path: str) -> Archive:
    kind = kind_of(path)
    if kind == "tar":
        return Archive(path, kind, _tar_in_place(path))
    return Archive(path, kind, _streamed(path, kind))


def _add(path: str, found: dict[str, Member], member: Member, what: str, raw: str) -> None:
    if member.name in found:
        raise InputError(path, f"{what} member {raw!r} appears twice")
    found[member.name] = member
    if len(found) > MAX_MEMBERS:
        raise InputError(path, f"more than {MAX_MEMBERS} members: not an OVA")


def _tar_member(path: str, info: tarfile.TarInfo) -> str | None:
    """The member's checked name, or None for a directory entry."""
    name = _checked_name(path, "tar", info.name)
    if info.issym() or info.islnk():
        raise InputError(path, f"tar member {info.name!r} is a link; an OVA holds only regular files")
    if info.isdir():
        return None
    if not info.isreg():
        raise InputError(path, f"tar member {info.name!r} is not a regular file (device or FIFO)")
    return name


def _tar_in_place(path: str) -> dict[str, Member]:
    try:
        with tarfile.open(path, "r:") as tar:
            infos = []
            for info in tar:
                infos.append(info)
                if len(infos) > MAX_MEMBERS:
                    raise InputError(path, f"more than {MAX_MEMBERS} members: not an OVA")
    except tarfile.ReadError as e:
        raise InputError(path, f"neither a tar nor a zip archive (nor a gzip, xz or bzip2 compressed tar): {e}") from None
    except (tarfile.TarError, EOFError) as e:
        raise InputError(path, f"damaged tar archive: {e}") from None
    size = os.path.getsize(path)
    found: dict[str, Member] = {}
    for info in infos:
        name = _tar_member(path, info)
        if name is None:
            continue
        if info.offset_data + info.size > size:
            raise InputError(path, f"tar member {info.name!r} declares {info.size} bytes past the end of the archive")
        _add(path, found, Member(name, info.size, offset=info.offset_data), "tar", info.name)
    return found


class _Budget:
    """What a streamed pass may still decompress, and keep."""

    def __init__(self, path: str):
        self.path = path
        self.left = MAX_RATIO * os.path.getsize(path) + SLACK
        self.bound = self.left
        self.kept = MAX_KEPT

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise InputError(self.path, f"expands past {self.bound} bytes ({MAX_RATIO} times its size plus "
                                        f"{SLACK // 2**20} MiB): refused as a decompression bomb")


def _scan(path: str, name: str, size: int, f: IO[bytes], budget: _Budget) -> Member:
    """One pass over a member's bytes: head, tail, digests, and the content of a descriptor."""
    budget.spend(size)  # the declared size first: a bomb is refused before it is inflated
    limit = MAX_OVF if name.lower().endswith(".ovf") else MAX_MANIFEST if name.lower().endswith(".mf") else 0
    keep = bool(limit) and size <= limit
    if keep and size > budget.kept:
        raise InputError(path, f"its descriptors and manifests take more than {MAX_KEPT // 2**20} MiB: not an OVA")
    hashes = {a: hashlib.new(a) for a in LENGTH}
    head, tail, kept, seen = b"", b"", [], 0
    while chunk := f.read(CHUNK):
        seen += len(chunk)
        if seen > size:
            raise InputError(path, f"member {name} holds more than the {size} bytes it declares")
        for h in hashes.values():
            h.update(chunk)
        if len(head) < HEAD:
            head += chunk[:HEAD - len(head)]
        tail = (tail + chunk)[-512:]
        if keep:
            kept.append(chunk)
    if seen != size:
        raise InputError(path, f"member {name} holds {seen} bytes, its header declares {size}")
    data = b"".join(kept) if keep else None
    if data is not None:
        budget.kept -= len(data)
    return Member(name, size, head=head, tail=tail, digests={a: h.hexdigest() for a, h in hashes.items()}, data=data)


@contextmanager
def _compressed_tar(path: str) -> Iterator[tarfile.TarFile]:
    """A compressed tar read as a stream, decompressed by the module its magic bytes name (not by
    tarfile's own stream, which raises AttributeError instead of an error on some damaged gzip headers)."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        opener = next(cls for m, cls in _DECOMPRESSORS.items() if magic.startswith(m))
        with opener(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            yield tar


def _streamed(path: str, kind: str) -> dict[str, Member]:
    budget = _Budget(path)
    found: dict[str, Member] = {}
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_MEMBERS:
                    raise InputError(path, f"more than {MAX_MEMBERS} members: not an OVA")
                for info in infos:
                    name = _zip_member(path, info)
                    if name is not None:
                        with zf.open(info) as f:
                            _add(path, found, _scan(path, name, info.file_size, f, budget), "zip", info.filename)
        else:
            with _compressed_tar(path) as tar:
                for info in tar:
                    name = _tar_member(path, info)
                    if name is not None:
                        _add(path, found, _scan(path, name, info.size, tar.extractfile(info), budget), "tar", info.name)
    except (tarfile.ReadError, zipfile.BadZipFile) as e:
        raise InputError(path, f"damaged or not a {'zip' if kind == 'zip' else 'compressed tar'} archive: {e}") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, NotImplementedError) as e:
        raise InputError(path, f"cannot decompress the archive: {e}") from None
    return found


def _zip_member(path: str, info: zipfile.ZipInfo) -> str | None:
    name = _checked_name(path, "zip", info.filename)
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_ISLNK(mode):
        raise InputError(path, f"zip member {info.filename!r} is a link; an OVA holds only regular files")
    if info.is_dir():
        return None
    if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        raise InputError(path, f"zip member {info.filename!r} is not a regular file (device or FIFO)")
    if info.flag_bits & 1:
        raise InputError(path, f"zip member {info.filename!r} is encrypted")
    return name


@contextmanager
def streamed_member(path: str, name: str) -> Iterator[IO[bytes]]:
    """The bytes of member `name` of a zip or compressed tar, streamed (for the fetch stage)."""
    if kind_of(path) == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and posixpath.normpath(info.filename) == name:
                    with zf.open(info) as f:
                        yield f
                    return
    with _compressed_tar(path) as tar:
        for info in tar:
            if info.isreg() and posixpath.normpath(info.name) == name:
                yield tar.extractfile(info)
                return
    raise OSError(f"member {name} is no longer in the archive")
