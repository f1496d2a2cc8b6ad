"""Live progress: a bar per disk (bytes, rate, ETA) while a wave runs on a terminal, else a plain
line per stage start and end; a summary table at the end with every failed VM's errors under it.

A disk's bytes are those its conversion moves (every source is read in place: local files by
qemu-nbd, vSphere disks streamed from their datastore), out of the disk's virtual size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from conductor.driver import VMView
from h2k_planner.models import Disk


@dataclass
class Bytes:
    done: int = 0
    total: int = 0
    moving: int = 0  # bytes moved so far by stages still running
    seconds: float = 0.0  # the longest running time among them

    def __add__(self, other: Bytes) -> Bytes:
        return Bytes(self.done + other.done, self.total + other.total, self.moving + other.moving,
                     max(self.seconds, other.seconds))

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, None while nothing is moving."""
        if not self.moving or self.seconds <= 0:
            return None
        return (self.total - self.done) / (self.moving / self.seconds)


def _stage_bytes(view: VMView, key: tuple[str, str], expected: int) -> Bytes:
    rec = view.records[key]
    total = int(rec.get("total") or 0) or expected
    if view.done(key):
        total = int(rec.get("bytes") or 0) or total
        return Bytes(total, total)
    if rec.get("status") == "running" and rec.get("started"):
        got = int(rec.get("bytes") or 0)
        return Bytes(got, total, got, float(rec.get("updated") or 0) - float(rec["started"]))
    return Bytes(0, total)


def disk_bytes(view: VMView, disk: Disk) -> Bytes:
    return _stage_bytes(view, (f"d{disk.index}", "convert"), disk.virtual_size)


def vm_bytes(view: VMView) -> Bytes:
    return sum((disk_bytes(view, d) for d in view.pvm.vm.disks), Bytes())


class WaveProgress:
    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[stage]}"),
            console=console, transient=False,
        )
        self.bars: dict[tuple[str, str], int] = {}

    def __enter__(self) -> "WaveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, views: list[VMView]) -> None:
        for view in views:
            vm = view.pvm.vm
            for disk in vm.disks:
                lane = f"d{disk.index}"
                key = (vm.name, lane)
                moved = disk_bytes(view, disk)
                if key not in self.bars:
                    self.bars[key] = self.progress.add_task(f"{vm.name}/disk{disk.index}",
                                                            total=moved.total, stage="queued")
                self.progress.update(self.bars[key], completed=moved.done, total=moved.total,
                                     stage=_stage_text(view, lane))


class LineProgress:
    """A line per stage start and end (with its bytes and rate), for logs rather than terminals."""

    def __init__(self, console: Console):
        self.console = console
        self.seen: dict[tuple[str, str, str], str] = {}

    def update(self, views: list[VMView]) -> None:
        for view in views:
            for (lane, stage), rec in view.records.items():
                if rec.get("run") != str(view.run) or view.run == 0:
                    continue  # an earlier run's record
                key = (view.pvm.vm.name, lane, stage)
                status = rec.get("status", "")
                if self.seen.get(key) == status or status not in ("running", "succeeded", "failed", "cancelled"):
                    continue
                if key not in self.seen and status != "running" and rec.get("started"):  # began and ended between two passes
                    self._print(key, "started")
                self.seen[key] = status
                self._print(key, stage_line(rec))

    def _print(self, key: tuple[str, str, str], text: str) -> None:
        vm, lane, stage = key
        self.console.print(f"{vm} {lane}/{stage} {text}", markup=False, highlight=False, soft_wrap=True)


def stage_line(rec: dict) -> str:
    """`started`, `succeeded 1.0 GiB in 12.3s (85.1 MiB/s)`, `failed: reason`."""
    status = rec["status"]
    if status == "running":
        return "started"
    if status in ("failed", "cancelled"):
        return f"{status}: {rec['error']}" if rec.get("error") else status
    moved = int(rec.get("bytes") or 0)
    seconds = float(rec.get("ended") or 0) - float(rec.get("started") or 0) if rec.get("started") else 0.0
    if not moved or seconds <= 0:
        return status
    return f"{status} {binary_size(moved)} in {seconds:.1f}s ({binary_size(moved / seconds)}/s)"


def binary_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _stage_text(view: VMView, lane: str) -> str:
    if view.finished:
        return view.status
    for (l, stage), rec in view.records.items():
        if l in (lane, "vm") and rec.get("status") in ("running", "failed"):
            return f"{stage} ({rec['status']})"
    return view.status


def summary_table(rows: list[dict]) -> Table:
    table = Table(title="hyper2kvm: wave summary")
    for col in ("VM", "status", "disks", "seconds", "report"):
        table.add_column(col)
    for row in rows:
        style = "green" if row["status"] == "succeeded" else "red"
        table.add_row(row["vm"], f"[{style}]{row['status']}[/{style}]", str(row["disks"]),
                      f"{row['seconds']:.1f}" if row["seconds"] is not None else "-",
                      os.path.relpath(row["report"]) if row["report"] else "-")
    return table


def failure_lines(rows: list[dict]) -> list[str]:
    """Under the summary: each VM that did not succeed, with every failed stage's reason."""
    lines = []
    for row in rows:
        if row["status"] == "succeeded":
            continue
        lines += [f"{row['vm']}: {error}" for error in row["errors"]] or [f"{row['vm']}: {row['status']}"]
    return lines
