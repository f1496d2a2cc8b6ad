"""Running one stage under a lease: claim, heartbeat, work, commit or fail, retry with backoff.

The Celery tasks are thin wrappers around `execute()`. What a stage does is a `StageSpec`: a
function that does the work and returns a JSON-able result, and a function that tells whether
a result recorded by an earlier run still holds (its artifact still verifies), so a re-run
wave skips it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from celery.exceptions import Ignore

from h2k_planner.models import Plan, PlannedVM
from h2k_planner.plan import FINAL_STAGE
from h2k_tasks.process import Interrupted
from h2k_tasks.settings import Settings
from h2k_tasks.stages import StageFailed
from h2k_tasks.state import FencedError, StageRef, State, decode

log = logging.getLogger("h2k.stage")


@dataclass
class StageRun:
    """What a running stage can see and do."""

    ref: StageRef
    gen: int
    plan: Plan
    pvm: PlannedVM
    state: State
    settings: Settings
    records: dict[tuple[str, str], dict] = field(default_factory=dict)  # results of earlier stages
    _done: int | None = None
    _total: int | None = None
    _lost: threading.Event = field(default_factory=threading.Event)
    _cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def disk(self):
        return next(d for d in self.pvm.vm.disks if f"d{d.index}" == self.ref.lane)

    def result_of(self, lane: str, stage: str) -> dict:
        return decode(self.records.get((lane, stage), {}), "result", {})

    def progress(self, done: int, total: int | None = None) -> None:
        self._done, self._total = done, total if total is not None else self._total

    def alive(self) -> bool:
        """False once the lease is lost (someone else owns the stage now) or the VM was cancelled."""
        return not (self._lost.is_set() or self._cancelled.is_set())

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def owns(self) -> bool:
        return self.alive() and self.state.owns(self.ref, self.gen)


@dataclass
class StageSpec:
    work: Callable[[StageRun], dict]
    still_valid: Callable[[StageRun, dict], bool] = lambda run, result: True


def lane_order(pvm: PlannedVM, lane: str) -> list[str]:
    return pvm.disk_stages if lane != "vm" else pvm.stages + [FINAL_STAGE]


def refs_of(plan: Plan, pvm: PlannedVM) -> dict[tuple[str, str], StageRef]:
    """Every stage of a VM, in pipeline order."""
    refs = {}
    for disk in pvm.vm.disks:
        for stage in pvm.disk_stages:
            refs[(f"d{disk.index}", stage)] = StageRef(plan.wave, pvm.vm.name, f"d{disk.index}", stage)
    for stage in pvm.stages + [FINAL_STAGE]:
        refs[("vm", stage)] = StageRef(plan.wave, pvm.vm.name, "vm", stage)
    return refs


def upstream(pvm: PlannedVM, ref: StageRef) -> list[tuple[str, str]]:
    """The stages that must have succeeded before `ref` may run (finalize needs none)."""
    if ref.stage == FINAL_STAGE:
        return []
    order = lane_order(pvm, ref.lane)
    before = [(ref.lane, s) for s in order[: order.index(ref.stage)]]
    if ref.lane == "vm":
        before = [(f"d{d.index}", s) for d in pvm.vm.disks for s in pvm.disk_stages] + before
    return before


def downstream(pvm: PlannedVM, ref: StageRef) -> list[tuple[str, str]]:
    """The stages whose results depend on `ref` (to reset when `ref` runs again)."""
    order = lane_order(pvm, ref.lane)
    after = [(ref.lane, s) for s in order[order.index(ref.stage) + 1 :]]
    if ref.lane != "vm":
        after += [("vm", s) for s in pvm.stages]
    return [key for key in after if key != ("vm", FINAL_STAGE)]


class _Heartbeat(threading.Thread):
    """Renews the lease every lease_ttl/4 (with progress) and looks for a cancel flag every second.

    When Redis cannot be reached it keeps trying, but only until the lease would have expired: from
    then on another worker may own the stage, so the stage is stopped (`alive()` turns False, which
    kills its children: qemu-img, QEMU, the libguestfs appliance) and commits nothing."""

    def __init__(self, run: StageRun):
        super().__init__(daemon=True, name=f"beat-{run.ref.name}")
        self.run_ = run
        self.stop = threading.Event()

    def run(self) -> None:
        r = self.run_
        interval = max(0.5, r.settings.lease_ttl / 4)
        renewed = time.monotonic()  # the claim took the lease for lease_ttl
        next_beat = renewed + interval
        while not self.stop.wait(min(1.0, interval)):
            try:
                if r.ref.stage != FINAL_STAGE and r.state.is_cancelled(r.ref.wave, r.ref.vm):
                    log.warning("%s: cancelled by the operator", r.ref.name)
                    r._cancelled.set()
                if time.monotonic() < next_beat:
                    continue
                next_beat = time.monotonic() + interval
                ok = r.state.beat(r.ref, r.gen, r.settings.lease_ttl, r._done, r._total)
            except Exception:  # Redis unreachable: keep trying until the lease would expire
                if time.monotonic() - renewed >= r.settings.lease_ttl:
                    log.warning("%s: lease expired unrenewed (Redis unreachable for %.0fs): stopping the stage",
                                r.ref.name, time.monotonic() - renewed)
                    r._lost.set()
                    return
                log.warning("%s: heartbeat failed, retrying", r.ref.name, exc_info=True)
                continue
            renewed = time.monotonic()
            if not ok and not self.stop.is_set():  # once stopped, the stage has ended: no lease to lose
                log.warning("%s: lease lost (generation %s superseded)", r.ref.name, r.gen)
                r._lost.set()
                return


def execute(task, spec: StageSpec, state: State, settings: Settings, plan: Plan, pvm: PlannedVM,
            ref: StageRef, run_no: int) -> dict:
    refs = refs_of(plan, pvm)
    before = upstream(pvm, ref)
    records = dict(zip(refs, state.get_many(list(refs.values()))))
    if any(records[key].get("status") != "succeeded" for key in before):
        raise Ignore()  # an earlier stage is not done: this message is stale or premature
    worker = task.request.hostname or settings.host
    status, gen = state.claim(ref, settings.host, worker, settings.lease_ttl, run_no)
    if status == "done":
        probe = StageRun(ref, gen, plan, pvm, state, settings, records)
        result = decode(records[(ref.lane, ref.stage)], "result", {})
        if spec.still_valid(probe, result):
            state.touch_run(ref, run_no)
            return {"stage": ref.name, "status": "skipped"}
        state.reset([ref] + [refs[k] for k in downstream(pvm, ref)], "artifact no longer verifies")
        status, gen = state.claim(ref, settings.host, worker, settings.lease_ttl, run_no)
    if status != "claimed":
        raise Ignore()  # another live claim owns it, or it was cancelled
    rec = state.get(ref)
    run = StageRun(ref, gen, plan, pvm, state, settings, records)
    attempt = int(rec.get("attempt") or 1)
    beat = _Heartbeat(run)
    beat.start()
    try:
        if attempt > settings.max_retries + 1:
            raise StageFailed(f"gave up after {attempt - 1} attempts (last error: {rec.get('error') or 'worker lost'})")
        log.info("%s: running (generation %s, attempt %s, host %s)", ref.name, gen, attempt, settings.host)
        result = spec.work(run)
        if run._cancelled.is_set():
            raise Interrupted("cancelled")
        state.finish(ref, gen, "succeeded", result=result, bytes=run._total or run._done or 0)
        return {"stage": ref.name, "status": "succeeded"}
    except (FencedError, Interrupted, StageFailed) as e:
        if run._cancelled.is_set():
            _finish_quietly(state, ref, gen, "cancelled", "cancelled by the operator")
            return {"stage": ref.name, "status": "cancelled"}
        if isinstance(e, StageFailed):
            log.error("%s: failed: %s", ref.name, e)
            _finish_quietly(state, ref, gen, "failed", str(e), **({"result": e.details} if e.details else {}))
            return {"stage": ref.name, "status": "failed", "error": str(e)}
        log.warning("%s: dropped: %s", ref.name, e)
        raise Ignore() from None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        if attempt > settings.max_retries:
            _finish_quietly(state, ref, gen, "failed", error)
            return {"stage": ref.name, "status": "failed", "error": error}
        delay = settings.retry_backoff * 2 ** (attempt - 1)
        log.warning("%s: attempt %s failed, retrying in %.0fs: %s", ref.name, attempt, delay, error)
        _finish_quietly(state, ref, gen, "pending", error, retry_at=str(time.time() + delay))
        raise task.retry(countdown=delay, exc=e, max_retries=None)
    finally:
        beat.stop.set()


def _finish_quietly(state: State, ref: StageRef, gen: int, status: str, error: str, **fields) -> None:
    try:
        state.finish(ref, gen, status, error=error, **fields)
    except FencedError:
        raise Ignore() from None
