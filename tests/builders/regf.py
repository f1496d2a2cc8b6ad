"""A minimal registry hive writer: an empty hive that hivex can open and fill.

The file is a 4 KiB base block ("regf", with its XOR checksum) followed by one 4 KiB hive bin
holding a root key ("nk"), one security cell ("sk") it points to, and free space. Everything
else (keys, values) is added afterwards with hivex.
"""
from __future__ import annotations

import struct
from pathlib import Path

import hivex

BLOCK = 4096
_NO_CELL = 0xFFFFFFFF
_FILETIME_2020 = 132223104000000000  # 2020-01-01, a fixed timestamp keeps images reproducible


def _sid(authority: int, *subs: int) -> bytes:
    return struct.pack("<BB", 1, len(subs)) + authority.to_bytes(6, "big") + b"".join(
        struct.pack("<I", s) for s in subs
    )


def _ace(mask: int, sid: bytes) -> bytes:
    # ACCESS_ALLOWED_ACE, inherited by sub-keys (CONTAINER_INHERIT_ACE)
    return struct.pack("<BBHI", 0, 0x02, 8 + len(sid), mask) + sid


def security_descriptor() -> bytes:
    """A self-relative descriptor: owner Administrators, group SYSTEM, a DACL granting them full access."""
    system = _sid(5, 18)
    admins = _sid(5, 32, 544)
    users = _sid(5, 32, 545)
    aces = _ace(0xF003F, system) + _ace(0xF003F, admins) + _ace(0x20019, users)
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(aces), 3, 0) + aces
    header = 20
    owner_off = header
    group_off = owner_off + len(admins)
    dacl_off = group_off + len(system)
    sd = struct.pack("<BBHIIII", 1, 0, 0x8004, owner_off, group_off, 0, dacl_off)
    return sd + admins + system + dacl


def _cell(data: bytes) -> bytes:
    size = (4 + len(data) + 7) & ~7
    return struct.pack("<i", -size) + data + b"\0" * (size - 4 - len(data))


def _root_key(name: str, sk_offset: int) -> bytes:
    raw = name.encode("ascii")
    return (
        b"nk"
        + struct.pack("<H", 0x2C)  # hive entry | no delete | compressed (ASCII) name
        + struct.pack("<Q", _FILETIME_2020)
        + struct.pack("<I", 0)  # access bits
        + struct.pack("<I", _NO_CELL)  # parent
        + struct.pack("<II", 0, 0)  # sub-keys, volatile sub-keys
        + struct.pack("<II", _NO_CELL, _NO_CELL)  # their lists
        + struct.pack("<II", 0, _NO_CELL)  # values and their list
        + struct.pack("<I", sk_offset)
        + struct.pack("<I", _NO_CELL)  # class name
        + struct.pack("<IIIII", 0, 0, 0, 0, 0)  # max lengths, work var
        + struct.pack("<HH", len(raw), 0)
        + raw
    )


def _security_cell(own_offset: int) -> bytes:
    sd = security_descriptor()
    # a single sk cell is its own previous and next in the list of security cells
    return b"sk" + struct.pack("<HIIII", 0, own_offset, own_offset, 1, len(sd)) + sd


def _base_block(root_offset: int, bins_size: int, name: str) -> bytes:
    head = (
        b"regf"
        + struct.pack("<II", 1, 1)  # sequence numbers: equal means the hive is clean
        + struct.pack("<Q", _FILETIME_2020)
        + struct.pack("<IIII", 1, 3, 0, 1)  # version 1.3, primary file, direct-memory-load format
        + struct.pack("<III", root_offset, bins_size, 1)
        + name.encode("utf-16-le")[:64].ljust(64, b"\0")
    )
    head = head.ljust(0x1FC, b"\0")
    checksum = 0
    for (word,) in struct.iter_unpack("<I", head):
        checksum ^= word
    if checksum == 0xFFFFFFFF:
        checksum = 0xFFFFFFFE
    elif checksum == 0:
        checksum = 1
    return (head + struct.pack("<I", checksum)).ljust(BLOCK, b"\0")


def empty_hive(root_name: str = "ROOT", file_name: str = "") -> bytes:
    """The bytes of an empty hive whose root key is `root_name`."""
    hbin_header = 32
    root_offset = hbin_header
    root_len = len(_cell(_root_key(root_name, 0)))
    sk_offset = root_offset + root_len
    cells = _cell(_root_key(root_name, sk_offset)) + _cell(_security_cell(sk_offset))
    free = BLOCK - hbin_header - len(cells)
    hbin = (
        b"hbin"
        + struct.pack("<II", 0, BLOCK)  # offset of this bin, its size
        + b"\0" * 8
        + struct.pack("<Q", _FILETIME_2020)
        + struct.pack("<I", 0)
        + cells
        + struct.pack("<i", free)  # positive size: a free cell filling the rest of the bin
        + b"\0" * (free - 4)
    )
    assert len(hbin) == BLOCK
    return _base_block(root_offset, BLOCK, file_name or root_name) + hbin


def write_empty_hive(path: str | Path, root_name: str = "ROOT") -> Path:
    path = Path(path)
    path.write_bytes(empty_hive(root_name))
    return path


def hive_tree(path: Path) -> dict:
    """A whole hive read back with hivex: {lower-case key path: {lower-case value name: (type, bytes)}}."""
    h = hivex.Hivex(str(path))
    out = {}

    def visit(node, name):
        out[name.lower()] = {h.value_key(v).lower(): h.value_value(v) for v in h.node_values(node)}
        for child in h.node_children(node):
            visit(child, f"{name}\\{h.node_name(child)}" if name else h.node_name(child))

    visit(h.root(), "")
    return out
