"""What the Windows fixer modules share: the guest, its facts, the chosen drivers and the open hives."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2k_tasks.fixers import Change
from h2k_tasks.windows.hives import Hive
from h2k_tasks.windows.virtio_win import DriverChoice, VirtioWin


def resolve(g, path: str) -> str:
    """`path` with every existing component spelled as on the (case-preserving NTFS) guest."""
    real = ""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        try:
            candidate = g.case_sensitive_path(f"{real}/{part}")
        except RuntimeError:
            return "/".join([real, *parts[i:]])
        if not g.exists(candidate):
            return "/".join([real, *parts[i:]])
        real = candidate
    return real or "/"


@dataclass
class Session:
    g: Any
    facts: dict
    source: VirtioWin
    choices: list[DriverChoice]
    system: Hive
    software: Hive
    options: dict
    vm: Any
    work: Path
    changes: list[Change] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def control_set(self) -> str:
        return self.facts["current_control_set"]

    @property
    def systemroot(self) -> str:
        return self.facts["systemroot"]

    def windows_path(self, guest_path: str) -> str:
        """The Windows spelling (C:\\...) of a path on the system volume."""
        return f"{self.facts['system_drive']}:" + guest_path.replace("/", "\\")

    def write_file(self, fixer: str, path: str, data: bytes) -> str:
        """Write a guest file unless it already holds `data`; returns its real guest path."""
        real = resolve(self.g, path)
        exists = self.g.is_file(real)
        if exists and self.g.filesize(real) == len(data) and self.g.read_file(real) == data:
            return real
        self.g.mkdir_p(real.rsplit("/", 1)[0] or "/")
        with tempfile.NamedTemporaryFile(dir=self.work) as tmp:
            tmp.write(data)
            tmp.flush()
            self.g.upload(tmp.name, real)
        self.changes.append(Change(fixer=fixer, kind="file", path=real,
                                   summary=f"{'replaced' if exists else 'added'} {len(data)} bytes"))
        return real
