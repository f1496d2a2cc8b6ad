"""qcow2 headers read by hand, before qemu opens anything: the backing file name and format, an
external data file, and encryption. Every named file is checked against the source's scope first,
so qemu never follows a backing file to `/etc/shadow`, a `json:` spec or an `nbd:` server."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from h2k_planner.errors import InputError
from h2k_planner.sources.scope import ChainWalk, Scope

_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_DATA_FILE = 0x44415441
_MAX_NAME = 1023


@dataclass
class Qcow2Header:
    size: int
    encrypted: bool
    backing: str | None
    backing_format: str | None
    data_file: str | None


def read_header(path: str) -> Qcow2Header:
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
        if len(head) < 72 or head[:4] != b"QFI\xfb":
            raise InputError(path, "not a qcow2 image (bad magic or truncated header)")
        version, bf_offset, bf_size, _, size, crypt = struct.unpack_from(">IQIIQI", head, 4)
        if version not in (2, 3):
            raise InputError(path, f"qcow2 version {version} is not supported")
        ext_start = 72
        if version == 3:
            if len(head) < 104:
                raise InputError(path, "truncated qcow2 v3 header")
            ext_start = struct.unpack_from(">I", head, 100)[0]
        exts = _extensions(path, head, ext_start)
        backing = None
        if bf_offset:
            if bf_size == 0 or bf_size > _MAX_NAME:
                raise InputError(path, f"qcow2 backing file name of {bf_size} bytes is invalid")
            f.seek(bf_offset)
            backing = _text(path, f.read(bf_size), "backing file name")
    return Qcow2Header(
        size=size, encrypted=crypt != 0, backing=backing,
        backing_format=_text(path, exts[_EXT_BACKING_FORMAT], "backing format") if _EXT_BACKING_FORMAT in exts else None,
        data_file=_text(path, exts[_EXT_DATA_FILE], "data file name") if _EXT_DATA_FILE in exts else None,
    )


def _extensions(path: str, head: bytes, pos: int) -> dict[int, bytes]:
    exts: dict[int, bytes] = {}
    while pos + 8 <= len(head):
        kind, length = struct.unpack_from(">II", head, pos)
        if kind == 0:
            return exts
        if pos + 8 + length > len(head):
            raise InputError(path, "qcow2 header extension runs past the header")
        exts[kind] = head[pos + 8 : pos + 8 + length]
        pos += 8 + (length + 7) // 8 * 8
    raise InputError(path, "qcow2 header extensions are not terminated")


def _text(path: str, raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, f"qcow2 {what} is not UTF-8") from None
    if "\0" in text:
        raise InputError(path, f"qcow2 {what} contains a NUL byte")
    return text


def qcow2_chain(path: str, scope: Scope) -> tuple[list[tuple[str, str]], list[Qcow2Header]]:
    """[(file, format)] from `path` down its backing chain, top first, and every qcow2 header read;
    extra files (external data files) are listed after the image that names them."""
    files: list[tuple[str, str]] = []
    headers: list[Qcow2Header] = []
    walk = ChainWalk(path, "backing chain")
    current, fmt = os.path.abspath(path), "qcow2"
    while True:
        walk.visit(current)
        files.append((current, fmt))
        if fmt != "qcow2":
            return files, headers
        hdr = read_header(current)
        headers.append(hdr)
        base = os.path.dirname(current)
        if hdr.data_file:
            files.append((scope.resolve(hdr.data_file, base, current), "data-file"))
        if not hdr.backing:
            return files, headers
        parent = scope.resolve(hdr.backing, base, current)
        if not os.path.isfile(parent):
            raise InputError(current, f"backing file {hdr.backing} does not exist")
        if hdr.backing_format not in ("qcow2", "raw"):
            raise InputError(current, f"backing file {hdr.backing} has format {hdr.backing_format or '(not recorded)'}; "
                                      "only qcow2 or raw backing files with a recorded format are read")
        current, fmt = parent, hdr.backing_format
