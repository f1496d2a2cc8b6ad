"""The scheduler: drives a wave to completion from the Redis state machine.

Each pass (woken by the wave's state log, see State.wait_for_log) looks at every VM of the wave
and sends what is due: each disk lane (once it holds a token of every semaphore that caps it), then
the VM lane once every disk lane succeeded in the VM's current run, then finalize once the VM
succeeded, failed or was cancelled.
A pass reads from Redis the stage records of the VMs that the new log entries name and of the VMs
running a stage (whose heartbeats log nothing); the others' records are as the last pass read them.
Every record change is logged in the same step or just after it, so nothing is missed; a full
pass, which re-reads everything, comes at least every FULL_PASS_EVERY seconds and whenever an entry
names no VM. A wave of N VMs then costs each pass the VMs that moved, not N reads.
What was sent in a run is recorded in Redis, so a restarted conductor neither loses nor repeats
work. Each pass also reconciles: a running stage whose lease expired lost its worker, and its lane
is sent again from that stage. Tokens are held by lanes, not runs (conductor/lanes.py), and every
full pass of `wait` (or of the conductor daemon) frees the tokens of lanes not in flight
(conductor/tokens.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from conductor import lanes
from conductor.lanes import TERMINAL
from conductor.tokens import free_stale
from h2k_planner.models import Plan, PlannedVM
from h2k_planner.plan import FINAL_STAGE, disk_lane, finalize, vm_lane
from h2k_tasks.runner import refs_of
from h2k_tasks.state import StageRef, State, decode

FULL_PASS_EVERY = 30.0  # seconds: the longest between two passes that re-read every VM's records


def moved_vms(entries: list[dict]) -> set[str] | None:
    """The VMs whose stage records the state-log `entries` say changed; None if one names no VM
    (then a full pass must look). Token entries change no record."""
    vms: set[str] = set()
    for entry in entries:
        if "stage" in entry:
            vms.add(entry["stage"].rsplit("/", 2)[0])
        elif "vms" in entry:
            vms.update(v.rpartition("#")[0] if entry.get("event") == "run" else v for v in entry["vms"].split(","))
        elif entry.get("event") not in ("acquire", "release"):
            return None
    return vms


@dataclass
class Limits:
    """Lanes in flight at once, fleet-wide (0: no cap)."""

    per_source: int = 20
    per_wave: int = 0
    per_host: dict[str, int] = field(default_factory=dict)  # host -> its workers' concurrency


@dataclass(eq=False)
class VMView:
    """A VM's stages as read in one pass."""

    pvm: PlannedVM
    records: dict[tuple[str, str], dict]
    run: int

    def done(self, key: tuple[str, str]) -> bool:
        return lanes.stage_done(self.records[key], self.run)

    def lane_keys(self, lane: str) -> list[tuple[str, str]]:
        return [k for k in self.records if k[0] == lane and k[1] != FINAL_STAGE]

    @property
    def disk_lanes(self) -> list[str]:
        return [f"d{d.index}" for d in self.pvm.vm.disks]

    def lane_done(self, lane: str) -> bool:
        return all(self.done(k) for k in self.lane_keys(lane))

    def lane_over(self, lane: str) -> bool:
        return lanes.lane_over([self.records[k] for k in self.lane_keys(lane)], self.run)

    @property
    def failed(self) -> bool:
        return any(rec.get("status") in TERMINAL for k, rec in self.records.items() if k[1] != FINAL_STAGE)

    @property
    def running(self) -> bool:
        return any(rec.get("status") == "running" for k, rec in self.records.items() if k[1] != FINAL_STAGE)

    @property
    def finished(self) -> bool:
        return self.done(("vm", FINAL_STAGE))

    @property
    def status(self) -> str:
        if self.finished:
            return decode(self.records[("vm", FINAL_STAGE)], "result", {}).get("status", "unknown")
        if self.failed:
            return "failing"
        running = [s for (lane, s), rec in self.records.items() if rec.get("status") == "running"]
        return running[0] if running else "waiting"


@dataclass
class Driver:
    state: State
    plan: Plan
    poll_interval: float = 2.0  # the longest wait between passes when no stage moves
    limits: Limits = field(default_factory=Limits)
    runs: dict[str, int] = field(default_factory=dict)
    refs: dict[str, dict[tuple[str, str], StageRef]] = field(default_factory=dict)
    stall_after: float = 120.0
    _released: set[str] = field(default_factory=set)
    _sent: dict[str, float] = field(default_factory=dict)
    _views: dict[str, VMView] = field(default_factory=dict)  # per VM, as last read
    _settled: set[VMView] = field(default_factory=set)  # views of VMs finished with their tokens given back
    _full_at: float = 0.0  # when the last full pass read everything
    _blocked: set[tuple] = field(default_factory=set)  # semaphore sets found full in this pass
    last_full: bool = False  # whether the last pass read every VM (then tokens are reconciled too)

    def __post_init__(self) -> None:
        self.refs = {pvm.vm.name: refs_of(self.plan, pvm) for pvm in self.plan.vms}

    @property
    def wave(self) -> str:
        return self.plan.wave

    # ---- starting runs -----------------------------------------------------------------------
    def submit(self, vms: list[str] | None = None) -> dict[str, int]:
        """Store the wave and start a new run of `vms` (default all): their failed or cancelled
        stages get fresh attempts, and their reports are written again."""
        names = vms or [pvm.vm.name for pvm in self.plan.vms]
        self.state.save_wave(self.wave, self.plan.model_dump_json())
        refs = [r for name in names for r in self.refs[name].values()]
        self.state.ensure(refs)
        again = [ref for ref, rec in zip(refs, self.state.get_many(refs))
                 if rec.get("status") in TERMINAL or ref.stage == FINAL_STAGE]
        if again:
            self.state.reset(again, "new run")
        self.state.uncancel(self.wave, names)
        self.state.start_runs(self.wave, names)
        self.state.set_wave_field(self.wave, status="running", run_started=time.time())
        return self.attach()

    def attach(self) -> dict[str, int]:
        """Continue the runs stored in Redis (a restarted conductor)."""
        self.runs = self.state.runs(self.wave)
        return self.runs

    def retry(self, vms: list[str] | None = None) -> list[str]:
        """A new run of the failed or cancelled VMs among `vms` (default all); returns them."""
        views = {v.pvm.vm.name: v for v in self.views()}
        chosen = [n for n in (vms or views) if views[n].finished and views[n].status != "succeeded"]
        if chosen:
            self.submit(chosen)
        return chosen

    def cancel(self, vms: list[str] | None = None) -> list[str]:
        names = vms or [pvm.vm.name for pvm in self.plan.vms]
        self.state.cancel(self.wave, names, [r for n in names for k, r in self.refs[n].items() if k[1] != FINAL_STAGE])
        return names

    # ---- one pass ----------------------------------------------------------------------------
    def views(self, read: set[str] | None = None) -> list[VMView]:
        """Every VM's view, after reading from Redis the records of the VMs in `read` (default: all). A
        VM neither read nor in a new run keeps its view object of the last pass."""
        self.runs = self.runs or self.state.runs(self.wave)
        names = [pvm.vm.name for pvm in self.plan.vms if read is None or pvm.vm.name in read]
        keys = [(name, k) for name in names for k in self.refs[name]]
        records: dict[str, dict] = {name: {} for name in names}
        for (name, k), rec in zip(keys, self.state.get_many([self.refs[name][k] for name, k in keys])):
            records[name][k] = rec
        for pvm in self.plan.vms:
            name, run = pvm.vm.name, self.runs.get(pvm.vm.name, 0)
            old = self._views.get(name)
            if name in records or old.run != run:
                self._views[name] = VMView(pvm, records.get(name, old and old.records), run)
        return [self._views[pvm.vm.name] for pvm in self.plan.vms]

    def step(self, entries: list[dict] | None = None) -> list[VMView]:
        """One pass. `entries`: the state-log entries since the last pass, whose VMs (and those running
        a stage) are read again; None, or a pass FULL_PASS_EVERY after the last full one, reads all.
        A VM that finished its run and gave back its tokens is left alone until it moves again."""
        moved = None if entries is None or not self._views else moved_vms(entries)
        self.last_full = moved is None or time.time() - self._full_at >= FULL_PASS_EVERY
        if self.last_full or any(e.get("event") == "run" for e in entries):
            self.runs = {}  # re-read: a retry or resume may have started runs
        before = dict(self._views)
        if self.last_full:
            views = self.views()
            self._sent = self.state.sent_at(self.wave)
            self._full_at = time.time()
        else:
            views = self.views(moved | {v.pvm.vm.name for v in before.values() if v.running})
        self._blocked = set()
        for view in views:
            if view.run == 0 or (before.get(view.pvm.vm.name) is view and view in self._settled):
                continue  # not submitted, or finished and left alone
            self._reconcile(view)
            self._advance(view)
            ids = [self._lane_id(view, lane) for lane in view.disk_lanes + ["vm"]]
            if view.finished and all(i in self._released or i not in self._sent for i in ids):
                self._settled.add(view)
        return views

    def _semaphores(self, pvm: PlannedVM, lane: str) -> dict[str, int]:
        sems = {f"host:{pvm.host}": self.limits.per_host.get(pvm.host, 0), f"wave:{self.wave}": self.limits.per_wave}
        if lane != "vm":
            sems[f"source:{pvm.source_group}"] = self.limits.per_source
        return sems

    def _holder(self, view: VMView, lane: str) -> str:
        """Who holds the lane's tokens: the lane itself, in whatever run (conductor/lanes.py)."""
        return lanes.holder(self.wave, view.pvm.vm.name, lane)

    def _lane_id(self, view: VMView, lane: str) -> str:
        """The lane in the VM's current run, as recorded when sent."""
        return lanes.lane_id(self._holder(view, lane), view.run)

    def _canvas(self, view: VMView, lane: str, start: int = 0):
        pvm = view.pvm
        if lane == "final":
            return finalize(self.plan, pvm, view.run)
        if lane == "vm":
            return vm_lane(self.plan, pvm, view.run, start=start)
        return disk_lane(self.plan, pvm, int(lane[1:]), view.run, start=start)

    def _lane_stages(self, view: VMView, lane: str) -> list[tuple[str, str]]:
        return [("vm", FINAL_STAGE)] if lane == "final" else view.lane_keys(lane)

    def _send(self, view: VMView, lane: str) -> None:
        """Send a lane once per run, when a token of each of its semaphores is free. Taking the
        tokens records the lane as sent in the same step; a crash before the message leaves is
        caught by the stall check in _reconcile, which sends it again. Once a set of semaphores is
        found full, the pass tries it again only for a lane that may already hold its tokens (sent in
        an earlier run), or after a release."""
        sent_id = self._lane_id(view, lane)
        if sent_id in self._sent:
            return
        if lane == "final":
            self.state.mark_sent(self.wave, sent_id)
        else:
            sems = self._semaphores(view.pvm, lane)
            caps = tuple(sorted(sems.items()))
            holder = self._holder(view, lane)
            if caps in self._blocked and not any(lanes.lane_id(holder, r) in self._sent for r in range(1, view.run)):
                return
            if not self.state.acquire(self.wave, holder, sent_id, sems):
                self._blocked.add(caps)
                return
        self._sent[sent_id] = time.time()
        self._canvas(view, lane).apply_async()

    def _release(self, view: VMView, lane: str) -> None:
        sent_id = self._lane_id(view, lane)
        if sent_id not in self._released:
            self.state.release(self.wave, view.pvm.vm.name, view.run, self._holder(view, lane),
                               list(self._semaphores(view.pvm, lane)), "lane over")
            self._released.add(sent_id)
            self._blocked = set()

    def _advance(self, view: VMView) -> None:
        for lane in view.disk_lanes + ["vm"]:
            if view.lane_over(lane):
                self._release(view, lane)
        if view.finished:
            return
        if (view.failed and not view.running) or all(view.lane_done(lane) for lane in view.disk_lanes + ["vm"]):
            self._send(view, "final")  # a failed VM's report waits for the stages still running to end
        elif all(view.lane_done(lane) for lane in view.disk_lanes):
            self._send(view, "vm")
        else:
            for lane in view.disk_lanes:
                self._send(view, lane)

    def _reconcile(self, view: VMView) -> None:
        """Send a lane again from the stage where it stopped: a running stage whose lease expired
        (its worker died), or a sent lane with no activity for `stall_after` seconds (its next
        message was lost, e.g. a chain's continuation during a broker restart)."""
        now = time.time()
        for lane in view.disk_lanes + ["vm", "final"]:
            sent_id = self._lane_id(view, lane)
            if sent_id not in self._sent:
                continue
            keys = self._lane_stages(view, lane)
            todo = [k for k in keys if not view.done(k)]
            if not todo or view.records[todo[0]].get("status") in TERMINAL:
                continue
            first = todo[0]
            rec = view.records[first]
            ref = self.refs[view.pvm.vm.name][first]
            if rec.get("status") == "running":
                if not self.state.expire_if_lost(ref):
                    continue
                rec["status"] = "pending"
            else:
                activity = max([self._sent[sent_id]] + [float(view.records[k].get(f) or 0)
                                                       for k in keys for f in ("updated", "ended", "retry_at")])
                if now - activity < self.stall_after:
                    continue
                self.state.append_log(self.wave, event="stalled", stage=ref.name)
            stages = [s for _, s in keys]
            self._canvas(view, lane, start=stages.index(first[1])).apply_async()
            self.state.mark_sent(self.wave, sent_id)
            self._sent[sent_id] = now

    def close_if_done(self, views: list[VMView]) -> bool:
        """Mark the wave finished once every VM's report is written; True if it is."""
        if not all(v.finished for v in views):
            return False
        self.state.set_wave_field(self.wave, status="finished", run_ended=time.time())
        return True

    def wait(self, on_pass=None) -> list[VMView]:
        """Passes until the wave is done: the next pass starts as soon as the wave's state log gets an
        entry (a stage claimed, finished, expired...), and at most `poll_interval` after the last."""
        cursors = {self.wave: self.state.log_cursor(self.wave)}  # before the pass: nothing is missed
        entries = None
        while True:
            views = self.step(entries)
            done = self.close_if_done(views)
            if self.last_full or done:
                free_stale(self.state)
            if on_pass:
                on_pass(views)
            if done:
                return views
            cursors, arrived = self.state.wait_for_log(cursors, self.poll_interval)
            entries = arrived.get(self.wave, [])
