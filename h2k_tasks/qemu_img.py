"""The qemu-img commands the stages run, each with the source format given explicitly."""
from __future__ import annotations

import json
import re
import subprocess
from typing import Callable

from h2k_tasks import process

_PCT = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def convert_cmd(src: str, src_fmt: str, dst: str, fmt: str, compress: bool, rate_limit: int = 0) -> list[str]:
    cmd = ["qemu-img", "convert", "-p", "-f", src_fmt, "-O", fmt]
    if rate_limit:
        cmd += ["-r", str(rate_limit)]
    if compress:
        cmd += ["-c", "-o", "compression_type=zstd"]
    return cmd + [src, dst]


def convert(src: str, src_fmt: str, dst: str, fmt: str, compress: bool, size: int,
            tick: Callable[[], bool], progress: Callable[[int], None], rate_limit: int = 0) -> None:
    """One read of the whole chain, one write of the output, progress in bytes; `rate_limit`
    caps the read rate in bytes per second (0: no cap)."""

    def on_output(line: str) -> None:
        m = _PCT.search(line)
        if m:
            progress(int(float(m.group(1)) / 100 * size))

    process.run(convert_cmd(src, src_fmt, dst, fmt, compress, rate_limit), tick=tick, on_output=on_output)


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


def compare(a: str, a_fmt: str, b: str, b_fmt: str, tick: Callable[[], bool]) -> bool:
    """True when both images have the same guest-visible content."""
    try:
        process.run(["qemu-img", "compare", "-U", "-f", a_fmt, "-F", b_fmt, a, b], tick=tick)
    except process.ProcessFailed as e:
        if e.returncode == 1:
            return False
        raise
    return True
