"""Which QEMU accelerator this host can really use: decided by a probe once per boot, kept per host.

`/dev/kvm` existing proves nothing. On some hosts `-accel kvm` aborts on an MSR assertion; on others
(nested virtualisation, half-configured hosts) guest code runs for a while and then stalls, so a
boot sector that runs seven instructions proves little either. The probe therefore runs what the
stages run: the same QEMU binary, `-accel kvm` and the CPU model that the libguestfs appliance and
the boot test get, and boots the host's own kernel (the one supermin puts in the appliance) on two
vCPUs with no root file system until it panics ("VFS: Unable to mount root fs") and QEMU exits. That
crosses the switch to long mode, SMP bring-up, timer calibration and the device probes, where broken
KVMs stall. Without a readable kernel it boots a 512-byte boot sector instead, and says so. TCG is
checked with the boot sector.

The verdict (accelerator and reason) is kept in a cache file per QEMU binary, valid for this boot of
this host, this binary and this /dev/kvm, so every worker process, `h2k plan --inspect` and the test
suite share one verdict and probe once. A stage that sees KVM miss a deadline anyway (a libguestfs
launch in h2k_tasks/appliance.py, a boot in h2k_tasks/boot_test.py) retries under TCG and, when that
works, calls `remember()`: the host is on TCG for the rest of its boot, with the reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time

from h2k_tasks import atomic
from h2k_tasks.process import child_setup

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
# What libguestfs 1.48 gives its appliance on x86-64 under both accelerators; the boot test uses the
# same, so the probe, the appliance and the boot test run one CPU model. "max" also gives the
# x86-64-v2+ features recent distributions require.
CPU_MODEL = "max,la57=off"
KVM_DEADLINE = 60.0  # a healthy KVM boots the probe kernel, or launches the appliance, in seconds
SECTOR_TIMEOUT = 10.0
PROBE_NAME = "h2k-accel-probe"  # QEMU's -name, so an operator sees what the process is
_PROBE_VERSION = 2  # bump when the probe changes: older verdicts are then probed again
_PANIC = "Kernel panic - not syncing"

# mov al, 0x2a ; out 0xf4, al ; hlt ; jmp $  -> isa-debug-exit makes QEMU exit (0x2a << 1) | 1
_BOOT_SECTOR = bytes([0xB0, 0x2A, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE]).ljust(510, b"\0") + b"\x55\xaa"
_EXIT_RAN = 85

CANDIDATES: dict[str, tuple[str, ...]] = {
    "kvm": ("-accel", "kvm", "-cpu", CPU_MODEL),
    "tcg": ("-accel", "tcg", "-cpu", CPU_MODEL),
}


class NoAcceleratorError(RuntimeError):
    """Neither KVM nor TCG could run the probe's guest code."""


@dataclasses.dataclass(frozen=True)
class Hypervisor:
    """The QEMU binary a worker runs (its own config) and how long KVM gets to show life."""

    qemu: str = QEMU
    kvm_deadline: float = KVM_DEADLINE

    def path(self) -> str:
        found = shutil.which(self.qemu)
        if not found:
            raise NoAcceleratorError(f"{self.qemu} not found (apt-get install qemu-system-x86)")
        return os.path.realpath(found)


@dataclasses.dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    qemu_args: tuple[str, ...]  # the -accel and -cpu arguments
    reason: str  # one line for the log and the report: why this accelerator

    def report(self) -> dict:
        return {"name": self.name, "reason": self.reason}


def tcg_instead(why: str) -> Accel:
    """TCG for one retry after KVM failed at run time (not remembered until the retry works)."""
    return Accel("tcg", CANDIDATES["tcg"], f"KVM passed the probe, then {why}: fell back to TCG")


def _qemu(hv_path: str, qemu_args: tuple[str, ...], *rest: str) -> list[str]:
    return [hv_path, *qemu_args, "-name", PROBE_NAME, "-machine", "pc", "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-no-reboot", *rest]


def _run(cmd: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit status, or None when it hung past `timeout`; its output)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL, preexec_fn=child_setup)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out
    return proc.returncode, proc.stdout + proc.stderr


def _failure(status: int, out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    detail = lines[-1] if lines else "no message"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}: {detail}"
    return f"exit status {status}: {detail}"


def probe_sector(hv_path: str, qemu_args: tuple[str, ...], timeout: float = SECTOR_TIMEOUT) -> str | None:
    """Boot the probe sector; None if the virtual CPU ran it, else what went wrong."""
    with tempfile.TemporaryDirectory(prefix="h2k-accel-") as tmp:
        sector = os.path.join(tmp, "probe.img")
        with open(sector, "wb") as f:
            f.write(_BOOT_SECTOR)
        status, out = _run(_qemu(hv_path, qemu_args, "-m", "32", "-serial", "none",
                                 "-drive", f"file={sector},format=raw,snapshot=on",
                                 "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"), timeout)
    if status is None:
        return f"guest code did not finish within {timeout:g}s (hung)"
    return None if status == _EXIT_RAN else _failure(status, out)


def host_kernel() -> str | None:
    """The running kernel's image if readable (supermin boots it in the appliance), else the newest."""
    running = f"/boot/vmlinuz-{os.uname().release}"
    images = [running] + sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime, reverse=True)
    return next((k for k in images if os.path.isfile(k) and os.access(k, os.R_OK)), None)


def probe_kernel(hv_path: str, qemu_args: tuple[str, ...], kernel: str, timeout: float) -> str | None:
    """Boot `kernel` on 2 vCPUs with no root until it panics; None if it got there, else what happened."""
    status, out = _run(_qemu(hv_path, qemu_args, "-m", "256", "-smp", "2", "-serial", "stdio", "-kernel", kernel,
                             "-append", "console=ttyS0 panic=-1 quiet"), timeout)
    if _PANIC in out:
        return None
    if status is None:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        return (f"the probe kernel {os.path.basename(kernel)} did not reach its root-mount panic within "
                f"{timeout:g}s (hung; last console line: {lines[-1] if lines else 'none'})")
    return _failure(status, out)


def _probe(hv: Hypervisor, hv_path: str) -> Accel:
    start = time.monotonic()
    kernel = host_kernel()
    if kernel:
        kvm_problem = probe_kernel(hv_path, CANDIDATES["kvm"], kernel, hv.kvm_deadline)
        proof = f"KVM booted {os.path.basename(kernel)} on 2 vCPUs to its root-mount panic"
    else:
        kvm_problem = probe_sector(hv_path, CANDIDATES["kvm"], min(hv.kvm_deadline, SECTOR_TIMEOUT))
        proof = "KVM ran the probe boot sector (no readable host kernel to boot)"
    if kvm_problem is None:
        return Accel("kvm", CANDIDATES["kvm"], f"{proof} in {time.monotonic() - start:.1f}s")
    tcg_problem = probe_sector(hv_path, CANDIDATES["tcg"])
    if tcg_problem is not None:
        raise NoAcceleratorError(f"KVM unusable ({kvm_problem}); TCG unusable too ({tcg_problem})")
    return Accel("tcg", CANDIDATES["tcg"], f"KVM unusable, using TCG: {kvm_problem}")


# ---- the verdict, per host ---------------------------------------------------------------------
def cache_file(hv_path: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "h2k", f"accel-{hashlib.sha256(hv_path.encode()).hexdigest()[:12]}.json")


def _host_key(hv_path: str) -> dict:
    """What the verdict holds for: this boot of this host, this QEMU binary, this /dev/kvm."""
    st = os.stat(hv_path)
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    try:
        kvm = os.stat("/dev/kvm")
        dev_kvm = f"{kvm.st_rdev}:{kvm.st_ino}:{kvm.st_ctime_ns}"
    except OSError:
        dev_kvm = None
    return {"qemu": hv_path, "qemu_mtime_ns": st.st_mtime_ns, "qemu_size": st.st_size, "boot_id": boot_id,
            "dev_kvm": dev_kvm, "probe": _PROBE_VERSION}


def _cached(path: str, key: dict) -> Accel | None:
    try:
        with open(path) as f:
            entry = json.load(f)
        if entry["key"] == key and entry["name"] in CANDIDATES:
            return Accel(entry["name"], CANDIDATES[entry["name"]], entry["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _store(path: str, key: dict, accel: Accel) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write_atomic(path, json.dumps({"key": key, "name": accel.name, "reason": accel.reason,
                                          "decided_at": time.time()}, indent=1) + "\n")


@contextlib.contextmanager
def _locked(path: str):
    """One probe at a time per host and binary: the others wait and read its verdict."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def host_accel(hv: Hypervisor = Hypervisor()) -> Accel:
    """This host's verdict for `hv`: from the cache, else probed now (once, whoever asks at the same time)."""
    hv_path = hv.path()
    path, key = cache_file(hv_path), _host_key(hv_path)
    accel = _cached(path, key)
    if accel:
        return accel
    with _locked(path):
        accel = _cached(path, key)
        if accel:
            return accel
        accel = _probe(hv, hv_path)
        _store(path, key, accel)
    (log.info if accel.name == "kvm" else log.warning)("accelerator: %s (%s)", accel.name, accel.reason)
    return accel


def remember(hv: Hypervisor, accel: Accel) -> Accel:
    """Make `accel` (a TCG fallback that worked) this host's verdict for the rest of its boot."""
    hv_path = hv.path()
    _store(cache_file(hv_path), _host_key(hv_path), accel)
    log.warning("accelerator: switched to %s for this host (%s)", accel.name, accel.reason)
    return accel
