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

The same watchdog guards a launched session (`Session.watch`): the guest stage's own time limit, and
its lease or a cancel (`alive()` turning False), kill the appliance, so that no libguestfs call can
outlive the stage that made it.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from h2k_tasks.accel import Accel, Hypervisor, host_accel, remember, tcg_instead
from h2k_tasks.process import Interrupted

LAUNCH_TIMEOUT = 600.0  # under TCG: ~25 s on an idle 2-core host, minutes on a loaded one
SESSION_TIMEOUT = 3600.0  # default limit of a guest stage's session, launch excluded (worker setting)


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
    """Kills the QEMU whose command line holds `token` once it has run for `deadline` seconds under
    this watch, or as soon as `alive()` turns False (the stage lost its lease or was cancelled)."""

    def __init__(self, token: str, deadline: float, alive: Callable[[], bool] | None):
        super().__init__(daemon=True, name="appliance-watchdog")
        self.token, self.deadline, self.alive = token, deadline, alive
        self.done = threading.Event()
        self.fired: str | None = None  # "timeout" or "stopped"

    def run(self) -> None:
        started = None
        while not self.done.wait(0.5):
            pids = _pids_with(self.token)
            if pids and started is None:
                started = time.monotonic()
            if self.alive is not None and not self.alive():
                self.fired = "stopped"
            elif started is not None and time.monotonic() - started > self.deadline:
                self.fired = "timeout"
            else:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return

    def __enter__(self) -> "_Watchdog":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


@dataclass
class Session:
    """A launched appliance: the handle, the accelerator it runs on, its last console lines."""

    g: Any  # guestfs.GuestFS
    accel: Accel
    token: str
    console: deque[str]

    def watch(self, timeout: float, alive: Callable[[], bool] | None = None) -> _Watchdog:
        """`with session.watch(...) as w:` kills the appliance when `timeout` passes or `alive()` turns
        False; the handle's calls then fail, and `w.fired` says why."""
        return _Watchdog(self.token, timeout, alive)

    def evidence(self) -> str:
        return f" (appliance console: {' | '.join(self.console)})" if self.console else ""

    def close(self) -> None:
        self.g.close()


def _text(buf: bytes | str) -> str:
    """An event's buffer: bytes or str, as the bindings' version gives it."""
    return buf.decode(errors="replace") if isinstance(buf, bytes) else buf


def _launch(drives: list[tuple[str, str]], readonly: bool, hv: Hypervisor, accel: Accel, deadline: float,
            alive: Callable[[], bool] | None) -> Session:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    session = Session(g, accel, f"h2k.launch={uuid.uuid4().hex}", deque(maxlen=8))
    g.set_event_callback(lambda ev, eh, buf, array: session.console.extend(
        ln.strip() for ln in _text(buf).splitlines() if ln.strip()), guestfs.EVENT_APPLIANCE)
    g.set_backend("direct")
    g.set_backend_settings([f"force_{accel.name}"])
    g.set_hv(hv.path())
    g.set_append(session.token)
    for path, fmt in drives:
        g.add_drive_opts(path, format=fmt, readonly=readonly)
    with session.watch(deadline, alive) as watchdog:
        try:
            g.launch()
        except RuntimeError as e:
            g.close()
            if watchdog.fired == "stopped":
                raise Interrupted("libguestfs launch stopped") from None
            if watchdog.fired == "timeout":
                raise LaunchTimeout(f"the libguestfs appliance did not come up within {deadline:g}s under "
                                    f"{accel.name.upper()} and was killed{session.evidence()}") from None
            raise LaunchFailed(f"libguestfs launch failed under {accel.name.upper()}: {e}{session.evidence()}"
                               ) from None
    if watchdog.fired == "stopped":  # it turned False before QEMU started
        g.close()
        raise Interrupted("libguestfs launch stopped")
    return session


def open_session(drives: list[tuple[str, str]], readonly: bool, hv: Hypervisor = Hypervisor(),
                 alive: Callable[[], bool] | None = None) -> Session:
    """A launched appliance over `drives`, given as (path, format) in boot order. `alive`, polled
    twice a second, stops the launch (process.Interrupted) when it turns False."""
    accel = host_accel(hv)
    if accel.name == "tcg":
        return _launch(drives, readonly, hv, accel, LAUNCH_TIMEOUT, alive)
    try:
        return _launch(drives, readonly, hv, accel, hv.kvm_deadline, alive)
    except LaunchFailed as e:
        tcg = tcg_instead(str(e))
    session = _launch(drives, readonly, hv, tcg, LAUNCH_TIMEOUT, alive)
    remember(hv, tcg)
    return session
