"""The whole chosen driver set staged under %SystemRoot%\\Drivers\\VirtIO and added to DevicePath.

Plug and Play searches DevicePath (and its sub-directories) when new hardware appears, so NetKVM,
Balloon, vioserial, viorng and the rest bind on first boot even before the first-boot installer runs.
"""
from __future__ import annotations

from h2k_tasks.windows.hives import expand_sz
from h2k_tasks.fixers.windows.session import Session

NAME = "windows.driver_staging"
STAGE = "Drivers\\VirtIO"
CURRENT_VERSION = "Microsoft\\Windows\\CurrentVersion"


def staged_path(s: Session) -> str:
    return f"{s.systemroot}/{STAGE.replace(chr(92), '/')}"


def fix(s: Session) -> None:
    files = {}
    for choice in s.choices:
        for rel in choice.files:
            files[f"{choice.driver}/{rel.rsplit('/', 1)[1]}"] = s.source.read(rel)
        s.log.append(f"staged: {choice.describe()}")
    s.write_tree(NAME, staged_path(s), files)
    entry = f"%SystemRoot%\\{STAGE}"
    current = s.software.get_str(CURRENT_VERSION, "DevicePath") or "%SystemRoot%\\inf"
    if entry.lower() not in (p.lower() for p in current.split(";")):
        s.software.set(NAME, CURRENT_VERSION, "DevicePath", expand_sz(f"{current};{entry}"), s.changes)
