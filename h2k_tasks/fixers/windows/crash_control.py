"""Stop a crashing guest from rebooting in a loop, so a boot failure on KVM leaves its stop code on screen."""
from __future__ import annotations

from h2k_tasks.windows.hives import dword
from h2k_tasks.fixers.windows.session import Session

NAME = "windows.crash_control"


def fix(s: Session) -> None:
    s.system.set(NAME, f"{s.control_set}\\Control\\CrashControl", "AutoReboot", dword(0), s.changes)
