"""libguestfs sessions that cannot hang a stage: launched under the host's verdict, with a deadline.

`open_session()` launches the appliance with the accelerator of `h2k_tasks.accel.host_accel()`, set on
the handle itself (`force_kvm` or `force_tcg`, and the worker's own QEMU binary), never through the
process environment. A watchdog thread finds the appliance's QEMU by a token on its kernel command
line and kills it when it has run longer than the deadline without the launch finishing: the KVM
deadline (`Hypervisor.kvm_deadline`, a healthy KVM launches in seconds) or LAUNCH_TIMEOUT under TCG.
Time spent before QEMU starts (supermin building the appliance on first use) does not count.

A launch that fails or misses its deadline under KVM is retried once under TCG. When the retry works,
KVM was at fault: the host's verdict switches to TCG (`accel.remember`) with the reason, and the
returned `Accel` carries it for the report. When the retry fails too, the error is the guest's or the
host's, not KVM's, and it is raised as it is.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import deque

from h2k_tasks.accel import Accel, Hypervisor, host_accel, remember, tcg_instead

LAUNCH_TIMEOUT = 600.0  # under TCG: ~25 s on an idle 2-core host, minutes on a loaded one


class LaunchFailed(RuntimeError):
    """The appliance did not come up; the message says why, with its last console lines."""


class LaunchTimeout(LaunchFailed):
    """The appliance ran past its deadline and was killed."""


def _pids_with(token: str) -> list[int]:
    needle = token.encode()
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if needle in f.read():
                        pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class _Watchdog(threading.Thread):
    """Kills the QEMU whose command line holds `token` once it has run for `deadline` seconds."""

    def __init__(self, token: str, deadline: float):
        super().__init__(daemon=True, name="appliance-watchdog")
        self.token, self.deadline = token, deadline
        self.done = threading.Event()
        self.fired = False

    def run(self) -> None:
        started = None
        while not self.done.wait(0.5):
            pids = _pids_with(self.token)
            if pids and started is None:
                started = time.monotonic()
            if started is not None and time.monotonic() - started > self.deadline:
                self.fired = True
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return


def _launch(drives: list[tuple[str, str]], readonly: bool, hv: Hypervisor, accel: Accel, deadline: float):
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    console: deque[str] = deque(maxlen=8)
    g.set_event_callback(lambda ev, eh, buf, array: console.extend(
        ln.strip() for ln in buf.decode(errors="replace").splitlines() if ln.strip()), guestfs.EVENT_APPLIANCE)
    g.set_backend("direct")
    g.set_backend_settings([f"force_{accel.name}"])
    g.set_hv(hv.path())
    token = f"h2k.launch={uuid.uuid4().hex}"
    g.set_append(token)
    for path, fmt in drives:
        g.add_drive_opts(path, format=fmt, readonly=readonly)
    watchdog = _Watchdog(token, deadline)
    watchdog.start()
    try:
        g.launch()
    except RuntimeError as e:
        g.close()
        tail = f" (appliance console: {' | '.join(console)})" if console else ""
        if watchdog.fired:
            raise LaunchTimeout(f"the libguestfs appliance did not come up within {deadline:g}s under "
                                f"{accel.name.upper()} and was killed{tail}") from None
        raise LaunchFailed(f"libguestfs launch failed under {accel.name.upper()}: {e}{tail}") from None
    finally:
        watchdog.done.set()
        watchdog.join()
    return g


def open_session(drives: list[tuple[str, str]], readonly: bool, hv: Hypervisor = Hypervisor()):
    """A launched handle over `drives`, given as (path, format) in boot order, and the Accel it runs on."""
    accel = host_accel(hv)
    if accel.name == "tcg":
        return _launch(drives, readonly, hv, accel, LAUNCH_TIMEOUT), accel
    try:
        return _launch(drives, readonly, hv, accel, hv.kvm_deadline), accel
    except LaunchFailed as e:
        tcg = tcg_instead(str(e))
    g = _launch(drives, readonly, hv, tcg, LAUNCH_TIMEOUT)
    return g, remember(hv, tcg)
