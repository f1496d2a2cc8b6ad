"""convert: flatten the source chain and convert it to the output format in one qemu-img pass.

Written to a temp name in the VM's output directory and renamed only when complete; temp files
of dead attempts are removed first. The final rename happens only while this attempt still
owns the stage (`owns()`), so a fenced duplicate never replaces a good output.
"""
from __future__ import annotations

from typing import Callable

from h2k_planner.models import Disk, Output
from h2k_tasks import atomic, process, qemu_img
from h2k_tasks.stages import StageFailed


def convert_disk(disk: Disk, output: Output, dest: str, gen: int,
                 tick: Callable[[], bool], progress: Callable[[int], None],
                 owns: Callable[[], bool], rate_limit: int = 0) -> dict:
    with atomic.staged(dest, gen) as temp:

        def tick_and_flush() -> bool:
            atomic.start_writeback(temp)
            return tick()

        try:
            qemu_img.convert(disk.source, disk.format, temp, output.format, output.compress,
                             disk.virtual_size, tick_and_flush, progress, rate_limit)
        except process.ProcessFailed as e:
            raise StageFailed(f"{disk.source}: qemu-img convert failed: {e.tail}") from None
        if not owns():
            raise process.Interrupted("lease lost before publishing the output")
    atomic.publish(temp, dest)
    progress(disk.virtual_size)
    return atomic.identity(dest)
