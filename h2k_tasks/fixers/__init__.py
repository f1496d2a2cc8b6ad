"""Offline guest fixers. Each fixer is a module with `fix(ctx: FixContext) -> list[Change]`.

A fixer is idempotent (a second run changes nothing and returns []), touches the guest only
through `ctx.g` (a libguestfs handle with the guest's filesystems mounted read-write on a
throwaway overlay), and records every change it made. In a dry run the overlay is discarded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


class Change(BaseModel):
    """One change made to the guest, for the report."""

    fixer: str
    kind: str  # "file", "file-removed", "registry", "package", "service", "command"
    path: str  # guest path, or hive\\key for registry changes
    summary: str
    diff: str = ""  # unified diff for text files, "old -> new" for values


@dataclass
class FixContext:
    g: Any  # guestfs.GuestFS, mounted read-write
    root: str  # inspection root device
    inspection: dict  # what the inspection recorded (see stages/guest.py)
    vm: Any  # h2k_planner.models.VM
    options: dict = field(default_factory=dict)  # per-VM fix options from the config
    log: list[str] = field(default_factory=list)  # human-readable notes for the report
