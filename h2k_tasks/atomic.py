"""Outputs appear whole or not at all: written under a temp name beside the final one, fsync'd,
renamed, and the directory fsync'd."""
from __future__ import annotations

import ctypes
import glob
import os
import re
from contextlib import contextmanager
from typing import Iterator


_GEN = re.compile(r"(\d+)(?:-|$)")


def temp_path(final: str, tag: str) -> str:
    d, name = os.path.split(final)
    return os.path.join(d, f".{name}.tmp-{tag}")


def discard(path: str) -> None:
    """Remove a temp file that will not be published (it may already be gone)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def staged(final: str, gen: int) -> Iterator[str]:
    """A temp path beside `final` for the attempt of lease generation `gen`, after removing the temps
    of dead attempts; any exception inside the block removes it. The caller publishes it once it is whole."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    remove_temps(final, gen)
    temp = temp_path(final, f"g{gen}")
    try:
        yield temp
    except BaseException:
        discard(temp)
        raise


def dead_attempts(directory: str, prefix: str, gen: int) -> list[str]:
    """What attempts older than lease generation `gen` left in `directory`: the entries named `<prefix><N>`
    or `<prefix><N>-...` with N < gen. A newer claim superseded them, so their lease is gone; a live
    attempt's (N >= gen) is never among them."""
    found = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*"))):
        m = _GEN.match(os.path.basename(path)[len(prefix):])
        if m and int(m.group(1)) < gen:
            found.append(path)
    return found


def remove_temps(final: str, gen: int) -> list[str]:
    """Delete temp files left for `final` by dead attempts (older generations than `gen`)."""
    d, name = os.path.split(final)
    found = dead_attempts(d, f".{name}.tmp-g", gen)
    for path in found:
        discard(path)
    return found


_libc = ctypes.CDLL("libc.so.6", use_errno=True)
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(path: str) -> None:
    """Ask the kernel to start writing `path`'s dirty pages now, without waiting, so the final
    fsync has little left to do (the write-out overlaps the conversion)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: str, final: str) -> None:
    fsync_path(temp)
    os.replace(temp, final)
    fsync_path(os.path.dirname(final) or ".")


def write_atomic(final: str, data: str | bytes, tag: str = "w") -> None:
    temp = temp_path(final, f"{tag}-{os.getpid()}")
    with open(temp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    publish(temp, final)


def identity(path: str) -> dict:
    """What a finished artifact looked like when committed: enough to tell it is still the same."""
    st = os.stat(path)
    return {"path": path, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def still_same(recorded: dict | None) -> bool:
    if not recorded:
        return False
    try:
        now = identity(recorded["path"])
    except (FileNotFoundError, KeyError):
        return False
    return all(now[k] == recorded.get(k) for k in ("inode", "size", "mtime_ns"))
