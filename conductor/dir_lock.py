"""An exclusive lock on a directory, held for the life of this process: `flock` on a `lock` file
in it, which records the holder's PID. The kernel drops it when the process dies, however."""
from __future__ import annotations

import fcntl
import os

from h2k_planner.errors import InputError


def hold(directory: str, owner: str) -> int:
    """Lock `directory` (created if missing) and return the lock's file descriptor, kept open (not
    inherited by children) until this process exits. If another process holds it, raise
    InputError naming `owner` (the path the user gave) and that process."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(owner, f"in use by another h2k run (pid {holder}, holding {path}); "
                                "wait for it to end or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
