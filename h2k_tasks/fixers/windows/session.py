"""What the Windows fixer modules share: the guest, its facts, the chosen drivers and the open hives."""
from __future__ import annotations

import io
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2k_tasks.fixers import Change
from h2k_tasks.windows.hives import Hive
from h2k_tasks.windows.virtio_win import DriverChoice, VirtioWin


def resolve(g, path: str) -> str:
    """`path` with every existing component spelled as on the (case-preserving NTFS) guest."""
    path = "/" + path.strip("/")
    if path == "/":
        return path
    try:
        return g.case_sensitive_path(path)
    except RuntimeError:  # a missing directory on the way: resolve what exists above it
        parent, name = path.rsplit("/", 1)
        return f"{resolve(g, parent).rstrip('/')}/{name}"


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

    def write_tree(self, fixer: str, directory: str, files: dict[str, bytes]) -> str:
        """Write files (relative paths) under a guest directory in one transfer, skipping those that
        already hold the same bytes; returns the directory's real guest path."""
        real = resolve(self.g, directory)
        existing: dict[str, tuple[str, bytes]] = {}
        if self.g.is_dir(real):
            out = self.work / "tree-out.tar"
            self.g.tar_out(real, str(out))
            with tarfile.open(out) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        name = member.name.removeprefix("./")
                        existing[name.lower()] = (name, tar.extractfile(member).read())
        changed = {}
        for rel, data in files.items():
            spelled, old = existing.get(rel.lower(), (rel, None))
            if old != data:
                changed[spelled] = (data, old is not None)
        if not changed:
            return real
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, (data, _) in changed.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        archive = self.work / "tree-in.tar"
        archive.write_bytes(buffer.getvalue())
        self.g.mkdir_p(real)
        self.g.tar_in(str(archive), real)
        for name, (data, replaced) in changed.items():
            self.changes.append(Change(fixer=fixer, kind="file", path=f"{real}/{name}",
                                       summary=f"{'replaced' if replaced else 'added'} {len(data)} bytes"))
        return real
