"""The qemu-img commands the stages run, each with the format given explicitly."""
from __future__ import annotations

import json
import subprocess

from h2k_tasks import process



def create(path: str, fmt: str, size: int, compress: bool) -> None:
    """An empty image of `size` bytes. A compressed qcow2's clusters divide the size (up to 64 KiB),
    since every write to it is whole clusters."""
    opts = []
    if compress:
        opts = ["-o", f"compression_type=zstd,cluster_size={max(512, min(65536, size & -size))}"]
    out = _bounded(["qemu-img", "create", "-q", "-f", fmt, *opts, path, str(size)], INFO_TIMEOUT)
    if out.returncode != 0:
        raise process.ProcessFailed(["qemu-img", "create"], out.returncode, out.stderr.strip())


INFO_TIMEOUT = 120.0  # reads a header; only a dead mount takes longer
CHECK_TIMEOUT = 1800.0  # reads every metadata table: minutes for a multi-TiB image


def _bounded(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise process.TimedOut(cmd, -9, f"no answer within {timeout:g}s") from None


def info(path: str, fmt: str) -> dict:
    cmd = ["qemu-img", "info", "--output=json", "-U", "-f", fmt, path]
    out = _bounded(cmd, INFO_TIMEOUT)
    if out.returncode != 0:
        raise subprocess.CalledProcessError(out.returncode, cmd, out.stdout, out.stderr)
    return json.loads(out.stdout)


def check(path: str, fmt: str) -> dict:
    """`qemu-img check` for formats that have metadata to check; {} for raw."""
    if fmt == "raw":
        return {}
    proc = _bounded(["qemu-img", "check", "--output=json", "-U", "-f", fmt, path], CHECK_TIMEOUT)
    if proc.returncode not in (0, 2, 3) or not proc.stdout.strip():
        raise process.ProcessFailed(["qemu-img", "check"], proc.returncode, proc.stderr.strip())
    return json.loads(proc.stdout)
