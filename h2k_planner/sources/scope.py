"""Where a source may read: its own directory, plus any `--allow-path DIR` the user gave.

Every file a source names (a VMX's disks, a descriptor's extents, a snapshot's parent, a qcow2's
backing file, an OVF's references) is resolved with symlinks followed and must land inside the
scope, be a regular file, and be named as a plain path (no `json:`/`nbd:` pseudo-protocols).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from h2k_planner.errors import InputError

MAX_VIRTUAL = 64 * 2**40  # 64 TiB: larger declared sizes are refused as absurd
MAX_CHAIN = 64  # images in one backing/snapshot chain: deeper is a depth bomb
_PROTOCOL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Scope:
    root: str
    allowed: tuple[str, ...] = ()

    @classmethod
    def of(cls, source: str, allow: tuple[str, ...] | list[str] = ()) -> "Scope":
        """The scope of a source file (its directory) or source directory."""
        source = os.path.abspath(source)
        root = source if os.path.isdir(source) else os.path.dirname(source)
        return cls(os.path.realpath(root), tuple(os.path.realpath(a) for a in allow))

    def resolve(self, name: str, base: str, referrer: str) -> str:
        """The absolute path of `name` as `referrer` (in directory `base`) names it, checked."""
        if not name or "\0" in name:
            raise InputError(referrer, f"names an empty or invalid file name {name!r}")
        if _PROTOCOL.match(name) and not os.path.exists(os.path.join(base, name)):
            raise InputError(referrer, f"names {name!r}: pseudo-protocols are refused, only plain files are read")
        path = os.path.normpath(os.path.join(base, name))
        return self.check(path, referrer)

    def check(self, path: str, referrer: str) -> str:
        real = os.path.realpath(path)
        if not any(real == d or real.startswith(d.rstrip("/") + "/") for d in (self.root, *self.allowed)):
            raise InputError(referrer, f"refers to {path} outside the source directory {self.root} "
                                       "(pass --allow-path DIR to permit)")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            return path  # the caller reports what is missing in its own words
        if not stat.S_ISREG(st.st_mode):
            raise InputError(referrer, f"refers to {path}, which is not a regular file")
        return path


def check_size(path: str, size: int, what: str = "declared size") -> int:
    if size < 0 or size > MAX_VIRTUAL:
        raise InputError(path, f"{what} of {size} bytes is absurd (limit {MAX_VIRTUAL} bytes)")
    return size


class ChainWalk:
    """Guards a walk down a backing or snapshot chain against loops and depth bombs."""

    def __init__(self, top: str, what: str):
        self.top, self.what, self.seen = top, what, set()

    def visit(self, current: str) -> None:
        real = os.path.realpath(current)
        if real in self.seen:
            raise InputError(current, f"{self.what} loops back on itself")
        if len(self.seen) >= MAX_CHAIN:
            raise InputError(self.top, f"{self.what} deeper than {MAX_CHAIN} levels")
        self.seen.add(real)
