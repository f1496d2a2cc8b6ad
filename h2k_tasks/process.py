"""Running the long external programs (qemu-img, QEMU) a stage drives.

The child runs in its own process group and dies with its parent (PR_SET_PDEATHSIG), so a
killed worker leaves no orphan writing to an artifact. While it runs, `tick()` is called about
every half second (heartbeat, progress, cancel check); if it returns False the whole process
group is killed.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections import deque
from typing import Callable

PR_SET_PDEATHSIG = 1


class ProcessFailed(Exception):
    def __init__(self, cmd: list[str], returncode: int, tail: str):
        self.cmd, self.returncode, self.tail = cmd, returncode, tail
        super().__init__(f"{os.path.basename(cmd[0])} exited {returncode}: {tail}")


class TimedOut(ProcessFailed):
    """The program ran past its timeout; its process group was killed."""


class Interrupted(Exception):
    """The stage lost its lease or was cancelled; the child was killed."""


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (kept across exec). With
    `parent` given (the pid that forked us), exit at once if it already died before the request."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def child_of_this_process() -> Callable[[], None]:
    """A `preexec_fn` for Popen: the child dies with this process."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)


def child_setup() -> None:
    """A `preexec_fn`: the child leads its own process group and dies with this process."""
    os.setpgid(0, 0)
    die_with_parent()


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(
    cmd: list[str],
    tick: Callable[[], bool] | None = None,
    on_output: Callable[[str], None] | None = None,
    interval: float = 0.5,
    timeout: float | None = None,
) -> str:
    """Run `cmd`; returns its combined output (last 200 lines). Output is split on CR and LF and
    each piece handed to `on_output` as it arrives. Past `timeout` seconds it is killed (TimedOut)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=child_setup, bufsize=0,
    )
    tail: deque[str] = deque(maxlen=200)

    def reader() -> None:
        buf = b""
        while chunk := proc.stdout.read(4096):
            buf += chunk
            *pieces, buf = buf.replace(b"\r", b"\n").split(b"\n")
            for piece in pieces:
                text = piece.decode(errors="replace").strip()
                if text:
                    tail.append(text)
                    if on_output:
                        on_output(text)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                pass
            if deadline is not None and time.monotonic() > deadline:
                kill_group(proc)
                raise TimedOut(cmd, -signal.SIGKILL, f"no end within {timeout:g}s")
            if tick is not None and not tick():
                kill_group(proc)
                raise Interrupted(f"{os.path.basename(cmd[0])} stopped")
    except BaseException:
        kill_group(proc)
        raise
    t.join(timeout=5)
    out = "\n".join(tail)
    if proc.returncode != 0:
        raise ProcessFailed(cmd, proc.returncode, tail[-1] if tail else "")
    return out
