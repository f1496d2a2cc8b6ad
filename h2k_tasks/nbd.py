"""NBD servers a stage starts for the copier (h2k_tasks/copier.py): `qemu-nbd` on a local image,
`nbdkit` on a remote one, each on a unix socket in the stage's scratch directory.

A server runs in its own process group and dies with the worker (PR_SET_PDEATHSIG, as in
h2k_tasks/process.py); it is killed when the block ends, whatever ends it. A server that exits
before its socket answers fails with the tail of its stderr.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

import nbd

from h2k_tasks import process

START_TIMEOUT = 60.0


class ServerFailed(process.ProcessFailed):
    """An NBD server exited or never answered on its socket."""


def uri(sock: str) -> str:
    return f"nbd+unix:///?socket={sock}"


def _answers(sock: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(sock)
        except OSError:
            return False
    return True


@contextmanager
def serve(cmd: list[str], sock: str) -> Iterator[str]:
    """Run the NBD server `cmd`, which listens on unix socket `sock`; yields the export's URI."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=process.child_setup)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not (os.path.exists(sock) and _answers(sock)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    process.kill_group(proc)
                    err.seek(0)
                    tail = err.read().decode(errors="replace").strip().splitlines()
                    raise ServerFailed(cmd, proc.returncode, tail[-1] if tail else "did not answer on its socket")
                time.sleep(0.02)
            yield uri(sock)
        finally:
            process.kill_group(proc)
            try:
                os.unlink(sock)
            except FileNotFoundError:
                pass


def qemu_nbd(path: str, fmt: str, sock: str, *, writable: bool = False, connections: int = 8) -> list[str]:
    """The command exporting image `path` (format `fmt`: its guest-visible content). Read-only with a
    shared lock (-U is not needed: nothing else writes an input); writable exports unmap zeroes."""
    cmd = ["qemu-nbd", "--socket", sock, "--format", fmt, "--shared", str(connections), "--persistent",
           "--cache", "writeback", "--aio", "threads"]
    if writable:
        cmd += ["--discard", "unmap", "--detect-zeroes", "unmap"]
    else:
        cmd += ["--read-only"]
    return cmd + [path]


def connect(export: str) -> nbd.NBD:
    """A client handle on `export` that also asks for the allocation map (base:allocation)."""
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(export)
    return h
