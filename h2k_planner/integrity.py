"""Source integrity before any byte is converted: every layer of a disk's chain is checked with
`qemu-img check` where its format has metadata to check, and its size against what its header
declares where qemu does not compare them. A damaged source raises InputError naming the file."""
from __future__ import annotations

import json
import os
import struct
import subprocess

from h2k_planner.errors import InputError
from h2k_planner.models import Disk
from h2k_planner.probe import qemu_error, qemu_img_info

CHECKED_FORMATS = {"qcow2", "vmdk", "vhdx", "vdi"}  # qemu 7.2 has no check for vpc; it refuses a truncated one on open
CHECK_TIMEOUT = 600
_VDI_HEADER = 0x188


def check_disk(disk: Disk) -> None:
    """Refuse `disk` if any layer of its chain is damaged; disks unpacked only at fetch, and encrypted
    layers, are skipped."""
    if disk.packed or (disk.depth == 1 and disk.format not in CHECKED_FORMATS | {"vdi"}):
        return  # a raw or VHD file alone: nothing qemu-img could check (its size was checked on load)
    for layer in qemu_img_info(disk.source, disk.format):
        fmt, path = layer["format"], layer["filename"]
        if layer.get("encrypted"):
            continue  # unreadable without its key: the source's encrypted-disk concern speaks for it
        if fmt == "vdi":
            check_vdi_size(path)
        if fmt in CHECKED_FORMATS:
            check_image(path, fmt)


def check_image(path: str, fmt: str) -> None:
    """`qemu-img check`: corruptions or check errors refuse the image; leaked clusters do not."""
    cmd = ["qemu-img", "check", "--output=json", "-U", "-f", fmt, path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise InputError(path, f"qemu-img check did not finish in {CHECK_TIMEOUT}s") from None
    if proc.returncode in (0, 3):  # 3: leaked clusters only, which lose no data
        return
    try:
        found = json.loads(proc.stdout)
    except json.JSONDecodeError:
        found = {}
    counts = [f"{found[k]} {what}" for k, what in (("corruptions", "corruption(s)"), ("check-errors", "check error(s)"))
              if found.get(k)]
    outcome = f"found {', '.join(counts)}" if counts else "failed"
    raise InputError(path, f"{fmt} image is damaged (truncated or corrupt): qemu-img check {outcome}: "
                           f"{qemu_error(proc.stderr)}")


def check_vdi_size(path: str) -> None:
    """A VDI's data area must hold every block its header counts as allocated; qemu reads the
    missing ones of a truncated file as zeros and its check does not compare sizes."""
    with open(path, "rb") as f:
        head = f.read(_VDI_HEADER)
    if len(head) < _VDI_HEADER:
        raise InputError(path, "VDI header is truncated")
    offset_data, = struct.unpack_from("<I", head, 0x158)
    block_size, = struct.unpack_from("<I", head, 0x178)
    allocated, = struct.unpack_from("<I", head, 0x184)
    need = offset_data + allocated * block_size
    have = os.path.getsize(path)
    if have < need:
        raise InputError(path, f"VDI image is truncated: its header counts {allocated} allocated blocks "
                               f"ending at byte {need}, the file holds {have}")
