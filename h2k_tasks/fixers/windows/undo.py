"""The `.reg` text that reverts recorded registry changes, one text per hive.

Apply with `hivexregedit --merge --prefix 'HKEY_LOCAL_MACHINE\\<HIVE>' <hive file> <file.reg>`.
Keys the fix created are deleted (`[-key]`), values it set on existing keys get their old data back,
values it added are deleted (`"name"=-`).
"""
from __future__ import annotations

from h2k_tasks.fixers import Change
from h2k_tasks.windows.hives import ABSENT, KEY_CREATED, parse_value_diff

HEADER = "Windows Registry Editor Version 5.00\n"


def _reg_key(path: str) -> str:
    return "HKEY_LOCAL_MACHINE\\" + path.removeprefix("HKLM\\")


def undo_reg(changes: list[Change]) -> dict[str, str]:
    """{hive name ("SYSTEM", "SOFTWARE"): .reg text undoing `changes`} for every hive the changes touched."""
    created: dict[str, list[str]] = {}
    restore: dict[str, dict[str, dict[str, str]]] = {}
    for c in changes:
        if c.kind != "registry" or not c.path.startswith("HKLM\\"):
            continue
        hive = c.path.split("\\")[1]
        if c.diff == KEY_CREATED:
            created.setdefault(hive, []).append(c.path)
            continue
        parsed = parse_value_diff(c.diff)
        if parsed:
            name, old, _new = parsed
            restore.setdefault(hive, {}).setdefault(c.path, {}).setdefault(name, old)  # the first old wins
    texts = {}
    for hive in sorted(set(created) | set(restore)):
        keys = created.get(hive, [])
        lowered = [k.lower() for k in keys]
        topmost = [k for k in keys if not any(k.lower().startswith(o + "\\") for o in lowered)]
        blocks = []
        for key, values in restore.get(hive, {}).items():
            if any(key.lower() == k or key.lower().startswith(k + "\\") for k in lowered):
                continue
            lines = [f"{name}={'-' if old == ABSENT else old}" for name, old in values.items()]
            blocks.append(f"[{_reg_key(key)}]\n" + "\n".join(lines) + "\n")
        blocks += [f"[-{_reg_key(k)}]\n" for k in reversed(topmost)]
        texts[hive] = HEADER + "\n" + "\n".join(blocks)
    return texts
