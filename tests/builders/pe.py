"""A header-only PE image (no sections): enough for `file` and libguestfs to read its architecture."""
from __future__ import annotations

import struct

_MACHINE = {"x86_64": 0x8664, "i386": 0x014C}


def pe_header_only(arch: str = "x86_64") -> bytes:
    """A 512-byte console PE32 (i386) or PE32+ (x86_64) image with no sections and no code."""
    if arch not in _MACHINE:
        raise ValueError(f"unknown PE architecture {arch!r}")
    wide = arch == "x86_64"
    pe_offset = 0x80
    dos = b"MZ" + b"\0" * 0x3A + struct.pack("<I", pe_offset)
    dos = dos.ljust(pe_offset, b"\0")
    optional_size = 240 if wide else 224
    characteristics = 0x0022 if wide else 0x0102  # executable, large-address-aware / 32-bit machine
    coff = struct.pack("<HHIIIHH", _MACHINE[arch], 0, 0, 0, 0, optional_size, characteristics)
    std = struct.pack("<HBBIIIII", 0x20B if wide else 0x10B, 14, 0, 0, 0, 0, 0x1000, 0x1000)
    if wide:
        std += struct.pack("<Q", 0x140000000)  # image base
    else:
        std += struct.pack("<II", 0, 0x400000)  # base of data, image base
    nt = struct.pack("<IIHHHHHHIIII", 0x1000, 0x200, 6, 1, 6, 1, 6, 1, 0, 0x1000, 0x200, 0)
    nt += struct.pack("<HH", 3, 0x8160)  # console subsystem; dll characteristics
    reserve = struct.pack("<QQQQ", 0x100000, 0x1000, 0x100000, 0x1000) if wide else struct.pack(
        "<IIII", 0x100000, 0x1000, 0x100000, 0x1000
    )
    nt += reserve + struct.pack("<II", 0, 16) + b"\0" * (16 * 8)  # loader flags, 16 empty data directories
    optional = std + nt
    assert len(optional) == optional_size, len(optional)
    image = dos + b"PE\0\0" + coff + optional
    return image.ljust(512, b"\0")
