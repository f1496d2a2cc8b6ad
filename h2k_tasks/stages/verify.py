"""verify: prove a converted disk equals its source without reading the source again: a metadata
check and the virtual size of the output, then the output's content digest (read once through its
own export) against the digest the copier took of the source while converting."""
from __future__ import annotations

from typing import Callable

from h2k_planner.models import Disk, Output
from h2k_tasks import atomic, copier, nbd, qemu_img
from h2k_tasks.stages import StageFailed

def check_output(path: str, fmt: str, expected_size: int) -> dict:
    """Metadata check and virtual size of one output; raises StageFailed on any problem."""
    result = qemu_img.check(path, fmt)
    if result.get("corruptions") or result.get("check-errors"):
        raise StageFailed(f"{path}: qemu-img check found corruption: {result}")
    size = int(qemu_img.info(path, fmt)["virtual-size"])
    if size != expected_size:
        raise StageFailed(f"{path}: virtual size {size} differs from the source's {expected_size}")
    return {"check": "ok" if fmt != "raw" else "n/a (raw)", "virtual_size": size}


def content_sha256(path: str, fmt: str, size: int, tick: Callable[[], bool]) -> str:
    """The guest-visible content digest of image `path` (h2k_tasks/copier.py)."""
    with nbd.serve(nbd.qemu_nbd(path, fmt)) as export:
        return copier.copy(export, None, size, segment=64 * copier.GROUP, tick=tick).content_sha256


def verify_disk(disk: Disk, output: Output, dest: str, converted: dict, tick: Callable[[], bool]) -> dict:
    """`converted`: the convert stage's result (the source's content digest)."""
    result = check_output(dest, output.format, disk.virtual_size)
    digest = content_sha256(dest, output.format, disk.virtual_size, tick)
    if digest != converted["content_sha256"]:
        raise StageFailed(f"{dest}: content differs from the source {disk.source}: output content digest "
                          f"{digest}, source {converted['content_sha256']}")
    return result | {"identical": True, "source_content_sha256": converted["content_sha256"],
                     "content_sha256": digest, "output": atomic.identity(dest)}
