"""NBD servers a stage starts for the copier (h2k_tasks/copier.py): `qemu-nbd` on a local image,
`nbdkit` on a remote one, `qemu-nbd` on an image read through another server's export.

Each server listens on an abstract unix socket (Linux's socket namespace: no file to clean up, no
path-length limit, nothing written outside the output directory) that this process binds and hands
over by socket activation (LISTEN_FDS), so it answers as soon as it runs. A server runs in its own
process group and dies with the worker (PR_SET_PDEATHSIG, as in h2k_tasks/process.py); it is killed
when the block ends, whatever ends it. A server that cannot serve fails with the tail of its stderr.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from typing import IO, Iterator

import nbd

from h2k_tasks import process

LISTEN_FD = 3  # sd_listen_fds(3): the first passed socket
CONNECTIONS = 16  # clients a qemu-nbd export serves at once; one more waits for a free slot


_stderr: dict[str, IO[bytes]] = {}


def last_words(address: str) -> str:
    """The last line the server at `address` wrote to its stderr ("" if none): why it dropped a
    client, when it does so instead of replying with an error."""
    err = _stderr.get(address)
    if err is None:
        return ""
    err.seek(0)
    lines = err.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


class ServerFailed(process.ProcessFailed):
    """An NBD server exited or did not complete the handshake."""


def _activated(listener: int):
    def setup() -> None:
        process.child_setup()
        os.dup2(listener, LISTEN_FD)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"
    return setup


@contextmanager
def serve(cmd: list[str]) -> Iterator[str]:
    """Run the NBD server `cmd` (given no socket option: it is socket-activated) and yield its export
    address, for `connect`."""
    address = f"h2k-nbd-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with tempfile.TemporaryFile() as err:
        try:
            listener.bind("\0" + address)
            listener.listen(64)
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=_activated(listener.fileno()),
                                    pass_fds=(listener.fileno(), LISTEN_FD))
        finally:
            listener.close()
        _stderr[address] = err
        try:
            try:
                connect(address).shutdown()
            except nbd.Error as e:
                process.kill_group(proc)
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()
                raise ServerFailed(cmd, proc.returncode, tail[-1] if tail else str(e)) from None
            yield address
        finally:
            process.kill_group(proc)
            del _stderr[address]


def qemu_nbd(path: str, fmt: str) -> list[str]:
    """The command exporting image `path`, read-only, as its guest-visible content (format `fmt`, with
    its backing chain)."""
    return ["qemu-nbd", "--format", fmt, "--read-only", "--shared", str(CONNECTIONS), "--persistent", path]


def qemu_nbd_output(path: str, fmt: str, compress: bool) -> list[str]:
    """The command exporting output image `path` for writing; zeroes are unmapped, and with `compress`
    every cluster is written compressed (qemu's compress filter).

    `--cache=unsafe`: a client's flush still writes qemu's cached metadata out to the OS, but qemu
    never calls fdatasync itself. In its default mode qcow2 syncs the file whenever an allocation
    has to be ordered after another, which halves the write rate (docs/throughput.md 3); durability is
    the writer's part instead: convert fsyncs the image after each flush, before it writes the mark
    that counts on it."""
    cmd = ["qemu-nbd", "--cache=unsafe", "--shared", str(CONNECTIONS), "--persistent", "--discard", "unmap",
           "--detect-zeroes", "unmap"]
    if compress:
        escaped = path.replace(",", ",,")
        return cmd + ["--image-opts", f"driver=compress,file.driver=qcow2,file.file.driver=file,"
                                      f"file.file.filename={escaped}"]
    return cmd + ["--format", fmt, path]


def connect(address: str) -> nbd.NBD:
    """A client handle on the export at `address` that also asks for the allocation map."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + address)
    except OSError as e:
        sock.close()
        raise nbd.Error(f"connect to the NBD server: {e.strerror}", e.errno) from None
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_socket(sock.detach())
    return h


def qemu_nbd_over(address: str, fmt: str) -> list[str]:
    """The command exporting, read-only, the guest-visible content of the `fmt` image that the NBD
    export at `address` holds (qemu reads the image's metadata, then only what it maps, from that
    export)."""
    return ["qemu-nbd", "--read-only", "--shared", str(CONNECTIONS), "--persistent", "--image-opts",
            f"driver={fmt},file.driver=nbd,file.server.type=unix,file.server.path={address},"
            "file.server.abstract=on"]
