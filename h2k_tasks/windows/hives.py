"""Registry hives edited offline with hivex, every edit recorded as a `Change` that an undo `.reg` can revert.

A value change is recorded with `path` = `HKLM\\<HIVE>\\<key>` and `diff` = `"<name>"=<old> -> <new>` in
`.reg` notation (`(absent)` when there was none); a created key with `diff` = `(absent) -> (key)`.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

import hivex

from h2k_tasks.fixers import Change

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
ABSENT = "(absent)"
KEY_CREATED = f"{ABSENT} -> (key)"


def sz(text: str) -> tuple[int, bytes]:
    return REG_SZ, (text + "\0").encode("utf-16-le")


def expand_sz(text: str) -> tuple[int, bytes]:
    return REG_EXPAND_SZ, (text + "\0").encode("utf-16-le")


def multi_sz(items: list[str]) -> tuple[int, bytes]:
    return REG_MULTI_SZ, "".join(i + "\0" for i in items).encode("utf-16-le") + b"\0\0"


def dword(n: int) -> tuple[int, bytes]:
    return REG_DWORD, struct.pack("<I", n)


def binary(data: bytes) -> tuple[int, bytes]:
    return REG_BINARY, data


def decode_string(data: bytes) -> str:
    return data.decode("utf-16-le", errors="replace").split("\0", 1)[0]


def decode_multi(data: bytes) -> list[str]:
    return [s for s in data.decode("utf-16-le", errors="replace").split("\0") if s]


def reg_data(kind: int, data: bytes) -> str:
    """A value's type and bytes in `.reg` notation, exact to the byte."""
    if kind == REG_DWORD and len(data) == 4:
        return f"dword:{struct.unpack('<I', data)[0]:08x}"
    return f"hex({kind:x}):" + ",".join(f"{b:02x}" for b in data)


def reg_name(name: str) -> str:
    if name == "":
        return "@"
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_VALUE_DIFF = re.compile(r'^(@|"(?:[^"\\]|\\.)*")=(\S+) -> (\S+)$')


def parse_value_diff(diff: str) -> tuple[str, str, str] | None:
    """(name in .reg notation, old, new) from a recorded value change, None for a key change."""
    m = _VALUE_DIFF.match(diff)
    return (m.group(1), m.group(2), m.group(3)) if m else None


class Hive:
    """One guest hive downloaded to `work`, edited with hivex, uploaded back by `save` if anything changed."""

    def __init__(self, g, guest_path: str, name: str, work: Path):
        self.g, self.guest_path, self.name = g, guest_path, name
        self.local = work / name
        g.download(guest_path, str(self.local))
        self.h = hivex.Hivex(str(self.local), write=True)
        self.dirty = False

    def _walk(self, key: str) -> int | None:
        node = self.h.root()
        for part in filter(None, key.split("\\")):
            node = self.h.node_get_child(node, part)
            if not node:
                return None
        return node

    def has_key(self, key: str) -> bool:
        return self._walk(key) is not None

    def subkeys(self, key: str) -> list[str]:
        node = self._walk(key)
        return [self.h.node_name(c) for c in self.h.node_children(node)] if node else []

    def _value(self, key: str, name: str) -> int | None:
        node = self._walk(key)
        if node is None:
            return None
        for v in self.h.node_values(node):
            if self.h.value_key(v).lower() == name.lower():
                return v
        return None

    def get(self, key: str, name: str) -> tuple[int, bytes] | None:
        v = self._value(key, name)
        return self.h.value_value(v) if v is not None else None

    def get_str(self, key: str, name: str) -> str | None:
        value = self.get(key, name)
        return decode_string(value[1]) if value and value[0] in (REG_SZ, REG_EXPAND_SZ) else None

    def get_dword(self, key: str, name: str) -> int | None:
        value = self.get(key, name)
        return struct.unpack("<I", value[1][:4])[0] if value and len(value[1]) >= 4 else None

    def _path(self, key: str) -> str:
        return f"HKLM\\{self.name}\\{key}"

    def ensure_key(self, fixer: str, key: str, changes: list[Change]) -> int:
        node = self.h.root()
        walked: list[str] = []
        for part in filter(None, key.split("\\")):
            walked.append(part)
            child = self.h.node_get_child(node, part)
            if not child:
                child = self.h.node_add_child(node, part)
                self.dirty = True
                changes.append(Change(fixer=fixer, kind="registry", path=self._path("\\".join(walked)),
                                      summary="created key", diff=KEY_CREATED))
            node = child
        return node

    def set(self, fixer: str, key: str, name: str, value: tuple[int, bytes], changes: list[Change]) -> None:
        """Set one value (creating its key), recording a change unless it already holds exactly this."""
        kind, data = value
        existing = self._value(key, name)
        old = self.h.value_value(existing) if existing is not None else None
        if old == (kind, data):
            return
        if existing is not None:
            name = self.h.value_key(existing)  # keep the name's spelling: registry names ignore case
        node = self.ensure_key(fixer, key, changes)
        self.h.node_set_value(node, {"key": name, "t": kind, "value": data})
        self.dirty = True
        before = reg_data(*old) if old else ABSENT
        changes.append(Change(fixer=fixer, kind="registry", path=self._path(key),
                              summary=f"set {name or '(default)'}",
                              diff=f"{reg_name(name)}={before} -> {reg_data(kind, data)}"))

    def save(self) -> None:
        if self.dirty:
            self.h.commit(None)
            self.g.upload(str(self.local), self.guest_path)
            self.dirty = False
