"""Live progress: a bar per disk (bytes, rate, ETA) while a wave runs, a summary table at the end."""
from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.table import Table

from conductor.driver import VMView


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
                if key not in self.bars:
                    self.bars[key] = self.progress.add_task(f"{vm.name}/disk{disk.index}",
                                                            total=disk.virtual_size, stage="queued")
                rec = view.records[(lane, "convert")]
                done = disk.virtual_size if view.done((lane, "convert")) else int(rec.get("bytes") or 0)
                self.progress.update(self.bars[key], completed=done, stage=_stage_text(view, lane))


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
