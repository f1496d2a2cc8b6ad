"""The scheduler: drives a wave to completion from the Redis state machine.

Each pass reads every stage record of the wave and, per VM, sends what is due: the disk lanes,
then the VM lane once every disk lane succeeded in this run, then finalize once the VM succeeded
or failed. What was sent in a run is itself recorded in Redis, so a restarted conductor neither
loses nor repeats work. Each pass also reconciles: a running stage whose lease expired lost its
worker, and its lane is sent again from that stage.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from h2k_planner.models import Plan, PlannedVM
from h2k_planner.plan import FINAL_STAGE, disk_lanes, finalize, vm_lane
from h2k_tasks.runner import refs_of
from h2k_tasks.state import P, StageRef, State, decode


@dataclass
class VMView:
    """A VM's stages as read in one pass."""

    pvm: PlannedVM
    records: dict[tuple[str, str], dict]
    run: int

    def done(self, key: tuple[str, str]) -> bool:
        rec = self.records[key]
        return rec.get("status") == "succeeded" and rec.get("run") == str(self.run)

    @property
    def disk_keys(self) -> list[tuple[str, str]]:
        return [k for k in self.records if k[0] != "vm"]

    @property
    def vm_keys(self) -> list[tuple[str, str]]:
        return [("vm", s) for s in self.pvm.stages]

    @property
    def failed(self) -> bool:
        return any(rec.get("status") in ("failed", "cancelled") for k, rec in self.records.items()
                   if k != ("vm", FINAL_STAGE))

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
        return running[0] if running else "queued"


@dataclass
class Driver:
    state: State
    plan: Plan
    poll_interval: float = 0.5
    run: int = 0
    refs: dict[str, dict[tuple[str, str], StageRef]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refs = {pvm.vm.name: refs_of(self.plan, pvm) for pvm in self.plan.vms}

    @property
    def sent_key(self) -> str:
        return f"{P}:sent:{self.plan.wave}:{self.run}"

    def submit(self) -> int:
        """Store the wave and start a new run of it: failed stages and reports are due again."""
        self.run = self.state.save_wave(self.plan.wave, self.plan.model_dump_json())
        all_refs = [r for refs in self.refs.values() for r in refs.values()]
        self.state.ensure(all_refs)
        again = [ref for ref, rec in zip(all_refs, self.state.get_many(all_refs))
                 if rec.get("status") in ("failed", "cancelled", "queued") or ref.stage == FINAL_STAGE]
        if again:
            self.state.reset(again, f"run {self.run} started")
        self.state.set_wave_field(self.plan.wave, status="running", run_started=time.time())
        self.state.append_log(self.plan.wave, event="run", run=self.run)
        return self.run

    def attach(self) -> int:
        """Continue the wave's current run (a restarted conductor)."""
        self.run = int(self.state.wave(self.plan.wave).get("run") or 0) or self.submit()
        return self.run

    def views(self) -> list[VMView]:
        keys = [(pvm, k) for pvm in self.plan.vms for k in self.refs[pvm.vm.name]]
        records = self.state.get_many([self.refs[pvm.vm.name][k] for pvm, k in keys])
        by_vm: dict[str, dict] = {}
        for (pvm, k), rec in zip(keys, records):
            by_vm.setdefault(pvm.vm.name, {})[k] = rec
        return [VMView(pvm, by_vm[pvm.vm.name], self.run) for pvm in self.plan.vms]

    def _send_once(self, lane_id: str, canvas) -> None:
        if self.state.r.sadd(self.sent_key, lane_id):
            canvas.apply_async()

    def step(self) -> list[VMView]:
        views = self.views()
        for view in views:
            self._reconcile(view)
            self._advance(view)
        return views

    def _advance(self, view: VMView) -> None:
        pvm, name = view.pvm, view.pvm.vm.name
        if view.finished:
            return
        if view.failed or all(view.done(k) for k in view.disk_keys + view.vm_keys):
            self._send_once(f"{name}/finalize", finalize(self.plan, pvm, self.run))
        elif all(view.done(k) for k in view.disk_keys):
            self._send_once(f"{name}/vm", vm_lane(self.plan, pvm, self.run))
        else:
            self._send_once(f"{name}/disks", disk_lanes(self.plan, pvm, self.run))

    def _reconcile(self, view: VMView) -> None:
        pvm = view.pvm
        for (lane, stage), rec in view.records.items():
            if rec.get("status") != "running":
                continue
            ref = self.refs[pvm.vm.name][(lane, stage)]
            if not self.state.expire_if_lost(ref):
                continue
            rec["status"] = "pending"
            if stage == FINAL_STAGE:
                canvas = finalize(self.plan, pvm, self.run)
            elif lane == "vm":
                canvas = vm_lane(self.plan, pvm, self.run, start=pvm.stages.index(stage))
            else:
                canvas = disk_lanes(self.plan, pvm, self.run, starts={int(lane[1:]): pvm.disk_stages.index(stage)})
            canvas.apply_async()

    def wait(self, on_pass=None) -> list[VMView]:
        while True:
            views = self.step()
            if on_pass:
                on_pass(views)
            if all(v.finished for v in views):
                self.state.set_wave_field(self.plan.wave, status="finished", run_ended=time.time())
                return views
            time.sleep(self.poll_interval)
