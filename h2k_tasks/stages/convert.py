"""convert: copy the source's guest-visible content into a new output image through the copier
(h2k_tasks/copier.py), which reads the source once and hashes it on the way.

The output grows under a temp name in the VM's output directory and is renamed only when complete,
and only while this attempt still owns the stage (`owns()`), so a fenced duplicate never replaces a
good output. Beside the temp a mark records how far the copy got; an attempt whose predecessor died
takes its temp and mark over, if the mark was made from the same source, and copies on from there.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Iterator

import nbd as libnbd

from h2k_planner.models import Disk, Output
from h2k_tasks import atomic, copier, nbd, process, qemu_img
from h2k_tasks.stages import StageFailed


def mark_path(temp: str) -> str:
    return f"{temp}-mark"


def _write_mark(temp: str, source: dict, mark: copier.Mark) -> None:
    atomic.write_atomic(mark_path(temp), json.dumps({"source": source, "mark": mark.model_dump()}))


def _durable_mark(temp: str, source: dict, mark: copier.Mark) -> None:
    """After the copier's flush (qemu's metadata is in the OS, nbd.qemu_nbd_output): the image on
    disk, then the mark that counts on it."""
    atomic.fsync_path(temp)
    _write_mark(temp, source, mark)


def take_over(dest: str, gen: int, source: dict, fmt: str) -> tuple[str, copier.Mark | None]:
    """This attempt's temp path and the mark to resume from: the newest dead attempt's temp, renamed
    to this attempt's name, if its mark was made from `source` and its image checks clean; None
    (after removing every dead attempt's files) otherwise."""
    temp = atomic.temp_path(dest, f"g{gen}")
    d, name = os.path.split(dest)
    for old in reversed(atomic.dead_attempts(d, f".{name}.tmp-g", gen)):
        if old.endswith("-mark") or not os.path.exists(mark_path(old)):
            continue
        try:
            with open(mark_path(old)) as f:
                saved = json.load(f)
            if saved["source"] != source or qemu_img.check(old, fmt).get("corruptions"):
                continue
            mark = copier.Mark.model_validate(saved["mark"])
        except (OSError, ValueError, KeyError, process.ProcessFailed):
            continue
        os.replace(old, temp)
        _write_mark(temp, source, mark)
        atomic.remove_temps(dest, gen)
        return temp, mark
    atomic.remove_temps(dest, gen)
    return temp, None


@contextlib.contextmanager
def local_source(disk: Disk) -> Iterator[str]:
    """The export convert reads a source on this host's filesystem from."""
    with contextlib.ExitStack() as stack:
        try:
            address = stack.enter_context(nbd.serve(nbd.qemu_nbd(disk.source, disk.format)))
        except nbd.ServerFailed as e:
            raise StageFailed(f"{disk.source}: cannot read the source: {e.tail}") from None
        yield address


def convert_disk(disk: Disk, src: str, output: Output, dest: str, gen: int, source: dict,
                 tick: Callable[[], bool], progress: Callable[[int], None],
                 owns: Callable[[], bool], cancelled: Callable[[], bool], rate_limit: int = 0,
                 segment: int = 1 << 30) -> dict:
    """Copy the export at `src` (the guest-visible content of `disk`) into `dest`. `source`: the
    source's identity as fetched (a mark made from another is not resumed). An attempt stopped by a
    cancel removes its temp and mark; one that lost its lease leaves them to the attempt that took
    over."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    temp, mark = take_over(dest, gen, source, output.format)
    if mark is None:
        qemu_img.create(temp, output.format, disk.virtual_size, output.compress)

    def tick_and_flush() -> bool:
        atomic.start_writeback(temp)
        return tick()

    try:
        with nbd.serve(nbd.qemu_nbd_output(temp, output.format, output.compress)) as dst:
            copied = copier.copy(src, dst, disk.virtual_size, segment=segment, mark=mark,
                                 on_mark=lambda m: _durable_mark(temp, source, m), tick=tick_and_flush,
                                 progress=progress, rate_limit=rate_limit)
    except process.Interrupted:
        if cancelled():
            _discard(temp)
        raise
    except copier.CopyFailed as e:  # the temp and its mark stay for a resume
        raise StageFailed(f"{disk.source}: {e}") from None
    except (nbd.ServerFailed, libnbd.Error) as e:
        raise StageFailed(f"{disk.source}: the copy to {dest} failed: {e}") from None
    if not owns():
        raise process.Interrupted("lease lost before publishing the output")
    atomic.publish(temp, dest)
    _discard(temp)
    return atomic.identity(dest) | copied.model_dump()


def _discard(temp: str) -> None:
    atomic.discard(temp)
    atomic.discard(mark_path(temp))
