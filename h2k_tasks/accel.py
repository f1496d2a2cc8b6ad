"""Which QEMU accelerator this worker can really use: KVM when it runs guest code, else TCG.

`/dev/kvm` existing proves nothing (on some hosts `-accel kvm -cpu host` aborts on an MSR
assertion, or guests hang), so the probe boots a 512-byte boot sector that writes to QEMU's
isa-debug-exit port: QEMU then exits with status 85 only if the virtual CPU really ran it.
The probe uses exactly the accel and `-cpu` that boot tests use, and runs once per process.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import subprocess
import tempfile

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 5.0
# mov al, 0x2a ; out 0xf4, al ; hlt ; jmp $  -> isa-debug-exit makes QEMU exit (0x2a << 1) | 1
_BOOT_SECTOR = bytes([0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE]).ljust(510, b"\0") + b"\x55\xaa"
_EXIT_RAN = 85

CANDIDATES: dict[str, list[str]] = {
    "kvm": ["-accel", "kvm", "-cpu", "host"],
    # "max" gives the x86-64-v2+ features that recent distributions require.
    "tcg": ["-accel", "tcg", "-cpu", "max"],
}


class NoAcceleratorError(RuntimeError):
    """Neither KVM nor TCG could run the probe's guest code."""


@dataclasses.dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    qemu_args: tuple[str, ...]  # the -accel and -cpu arguments boot tests must use
    reason: str  # one line for the log and the report: why this accelerator


def run_probe(qemu_args: list[str] | tuple[str, ...], timeout: float = PROBE_TIMEOUT) -> str | None:
    """Boot the probe sector with `qemu_args`; return None if the CPU ran it, else what went wrong."""
    with tempfile.TemporaryDirectory(prefix="h2k-accel-") as tmp:
        sector = os.path.join(tmp, "probe.img")
        with open(sector, "wb") as f:
            f.write(_BOOT_SECTOR)
        cmd = [
            QEMU, *qemu_args, "-machine", "pc", "-m", "32", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "none", "-monitor", "none",
            "-drive", f"file={sector},format=raw,snapshot=on",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            return f"{QEMU} not found"
        except subprocess.TimeoutExpired:
            return f"guest code did not finish within {timeout:g}s (hung)"
    if proc.returncode == _EXIT_RAN:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    detail = lines[-1] if lines else "no message"
    if proc.returncode < 0:
        return f"killed by {signal.Signals(-proc.returncode).name}: {detail}"
    return f"exit status {proc.returncode}: {detail}"


def _dev_kvm_problem() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


@functools.lru_cache(maxsize=1)
def probe_accel() -> Accel:
    """Probe once per process: KVM if it runs the probe's guest code, else TCG (with the reason)."""
    kvm_problem = _dev_kvm_problem() or run_probe(CANDIDATES["kvm"])
    if kvm_problem is None:
        accel = Accel("kvm", tuple(CANDIDATES["kvm"]), "KVM ran the probe guest code")
        log.info("accelerator: kvm (%s)", accel.reason)
        return accel
    tcg_problem = run_probe(CANDIDATES["tcg"])
    if tcg_problem is not None:
        raise NoAcceleratorError(f"KVM unusable ({kvm_problem}); TCG unusable too ({tcg_problem})")
    accel = Accel("tcg", tuple(CANDIDATES["tcg"]), f"KVM unusable, using TCG: {kvm_problem}")
    log.warning("accelerator: tcg (%s)", accel.reason)
    return accel


def libguestfs_env(accel: Accel | None = None) -> dict[str, str]:
    """Environment settings for libguestfs: direct backend, forced TCG when KVM is unusable."""
    accel = accel or probe_accel()
    env = {"LIBGUESTFS_BACKEND": "direct"}
    if accel.name == "tcg":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env
