"""verify: prove a converted disk equals its source: metadata check, virtual size, a full
`qemu-img compare`, and the output's sha256 for the report."""
from __future__ import annotations

import hashlib
from typing import Callable

from h2k_planner.models import Disk, Output
from h2k_tasks import qemu_img
from h2k_tasks.stages import StageFailed

CHUNK = 4 * 1024 * 1024


def sha256_file(path: str, tick: Callable[[], bool] = lambda: True) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        n = 0
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += 1
            if n % 64 == 0 and not tick():
                raise StageFailed(f"{path}: checksum interrupted")
    return h.hexdigest()


def check_output(path: str, fmt: str, expected_size: int) -> dict:
    """Metadata check and virtual size of one output; raises StageFailed on any problem."""
    result = qemu_img.check(path, fmt)
    if result.get("corruptions") or result.get("check-errors"):
        raise StageFailed(f"{path}: qemu-img check found corruption: {result}")
    size = int(qemu_img.info(path, fmt)["virtual-size"])
    if size != expected_size:
        raise StageFailed(f"{path}: virtual size {size} differs from the source's {expected_size}")
    return {"check": "ok" if fmt != "raw" else "n/a (raw)", "virtual_size": size}


def verify_disk(disk: Disk, output: Output, dest: str, tick: Callable[[], bool]) -> dict:
    result = check_output(dest, output.format, disk.virtual_size)
    if not qemu_img.compare(disk.source, disk.format, dest, output.format, tick):
        raise StageFailed(f"{dest}: content differs from the source {disk.source}")
    return result | {"identical": True, "sha256": sha256_file(dest, tick)}
