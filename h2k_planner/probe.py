"""What a disk file really is: its format from its first bytes, then `qemu-img info` to confirm.

File extensions are never trusted. The format found here is passed to qemu-img explicitly
(`-f`), so qemu never guesses (a raw file that looks like qcow2 must stay raw).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from h2k_planner.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"

# (offset, magic, format) checked in order; the first match wins.
_MAGICS: list[tuple[int, bytes, str]] = [
    (0, b"QFI\xfb", "qcow2"),
    (0, b"KDMV", "vmdk"),  # hosted sparse extent, may embed a descriptor
    (0, b"COWD", "vmdk"),  # ESX vmfsSparse extent
    (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"),  # dynamic VHD: footer copy at the start
    (64, b"\x7f\x10\xda\xbe", "vdi"),
]


def detect_format(path: str) -> str:
    """Format name as qemu-img calls it, read from the file's content."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
            raise InputError(path, "is not a regular file (device, FIFO or socket)")
        with open(path, "rb") as f:
            head = f.read(1024)
            size = os.fstat(f.fileno()).st_size
            tail = b""
            if size >= 512:
                f.seek(size - 512)
                tail = f.read(512)
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a disk image") from None
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except PermissionError:
        raise InputError(path, "cannot be read (permission denied)") from None
    if not head:
        raise InputError(path, "is empty")
    return format_of(head, tail)


def format_of(head: bytes, tail: bytes) -> str:
    """Format name from an image's first 1024 and last 512 bytes."""
    if head.lstrip(b"\xef\xbb\xbf").startswith(DESCRIPTOR_MAGIC):
        return "vmdk"
    for offset, magic, fmt in _MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    if tail.startswith(b"conectix"):
        return "vpc"  # fixed VHD: footer only at the end
    return "raw"


def in_parallel(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """`[fn(x) for x in items]`, a few at a time: each waits on a qemu-img process. The first item
    in order that raises raises here, as in the loop."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(2 * (os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def qemu_img_info(path: str, fmt: str) -> list[dict]:
    """`qemu-img info --backing-chain` as a list, top image first. Raises InputError on failure."""
    cmd = ["qemu-img", "info", "--output=json", "--backing-chain", "-U", "-f", fmt, path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InputError(path, f"qemu-img cannot read it as {fmt}: {qemu_error(proc.stderr)}")
    data = json.loads(proc.stdout)
    return data if isinstance(data, list) else [data]


def qemu_error(stderr: str) -> str:
    """The line of qemu's error output that says what is wrong: its first `ERROR` line (checks),
    else its first line that is not a warning (the cause; later lines repeat it as "Could not open")."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("ERROR"):
            return ln.removeprefix("ERROR").lstrip(": ")
    causes = [ln.removeprefix("qemu-img:").strip() for ln in lines if "warning:" not in ln]
    return causes[0] if causes else "unknown error"
