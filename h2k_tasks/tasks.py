"""The Celery tasks: one per stage, thin. Arguments are ids only (wave, VM name, lane, run), so
Flower shows readable names and never a secret; the plan itself is read from Redis."""
from __future__ import annotations

import contextlib
import functools
import time

from h2k_planner.models import Plan
from h2k_planner.plan import FINAL_STAGE
from h2k_tasks import atomic, vsphere_stream
from h2k_tasks.app import app
from h2k_tasks.runner import StageRun, StageSpec, execute
from h2k_tasks.settings import Settings, redis_url
from h2k_tasks.stages import StageFailed, output_path, vm_dir
from h2k_tasks.stages.convert import convert_disk, local_source
from h2k_tasks.stages.fetch import fetch_local, unchanged
from h2k_tasks.stages.fetch_vsphere import fetch_vsphere, streamed
from h2k_tasks.stages.fetch_packed import fetch_packed, readable, unpacked_path
from h2k_tasks.stages.power_off import power_off_for_fetch
from h2k_tasks.stages.finalize import finalize_vm
from h2k_tasks.stages.guest import guest_stage
from h2k_tasks.stages.validate import validate_vm
from h2k_tasks.stages.verify import verify_disk
from h2k_tasks.state import StageRef, State


@functools.lru_cache(maxsize=1)
def _state(url: str, timeout: float) -> State:
    return State.from_url(redis_url(url), timeout)


@functools.lru_cache(maxsize=64)
def _plan(wave: str, plan_json: str) -> Plan:
    return Plan.model_validate_json(plan_json)


def _outputs(run: StageRun) -> list[str]:
    return [output_path(run.plan.output, run.pvm.vm, d) for d in run.pvm.vm.disks]


# ---- the stages' work, and how to tell a recorded result still holds --------------------------
def _may_change_power(run: StageRun) -> bool:
    """The stage still owns its lease and its VM is not cancelled, as Redis says now. On a cancel,
    wait for the heartbeat to see it too, so the stage ends as cancelled."""
    if run.state.is_cancelled(run.ref.wave, run.ref.vm):
        deadline = time.monotonic() + 5
        while run.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return False
    return run.owns()


def _power_off(run: StageRun) -> dict:
    how = power_off_for_fetch(run.pvm.source_endpoint, run.pvm.vm, run.pvm.shutdown_timeout,
                              lambda: _may_change_power(run))
    if how != "already off":
        run.state.append_log(run.ref.wave, event="power-off", vm=run.pvm.vm.name, stage=run.ref.name, how=how)
    return {"power": how}


def _fetch(run: StageRun) -> dict:
    if run.pvm.source_endpoint:
        power = _power_off(run) if run.pvm.shutdown_timeout is not None else {}
        return power | fetch_vsphere(run.pvm.source_endpoint, run.disk)
    if run.disk.packed:
        dest = unpacked_path(run.plan.output, run.pvm.vm, run.disk)
        return fetch_packed(run.disk, dest, run.gen, run.alive, run.owns)
    return fetch_local(run.disk)


def _fetched_unchanged(run: StageRun, result: dict) -> bool:
    if run.pvm.source_endpoint:
        return vsphere_stream.unchanged(run.pvm.source_endpoint, result)
    return unchanged(result)


def _convert(run: StageRun) -> dict:
    def tick() -> bool:
        return run.alive()

    def progress(done: int) -> None:
        run.progress(done, run.disk.virtual_size)

    dest = output_path(run.plan.output, run.pvm.vm, run.disk)
    fetched = run.result_of(run.ref.lane, "fetch")
    source = {k: fetched[k] for k in ("files", "unpacked") if k in fetched}
    stream = None
    with contextlib.ExitStack() as stack:
        if run.pvm.source_endpoint:  # read in place on the datastore
            stream = stack.enter_context(streamed(run.pvm.source_endpoint, fetched, run.plan.output, run.pvm.vm,
                                                  run.disk, run.gen))
            src = stream.address
        else:
            src = stack.enter_context(local_source(readable(run.plan.output, run.pvm.vm, run.disk)))
        result = convert_disk(run.disk, src, run.plan.output, dest, run.gen, source, tick, progress, run.owns,
                              run.cancelled, run.settings.convert_rate_limit, run.settings.copy_segment)
    return result | ({"transferred": stream.transferred} if stream else {})


def _verify(run: StageRun) -> dict:
    dest = output_path(run.plan.output, run.pvm.vm, run.disk)
    converted = run.result_of(run.ref.lane, "convert")
    if not atomic.still_same(converted):
        raise StageFailed(f"{dest}: changed since it was converted")
    return verify_disk(run.disk, run.plan.output, dest, converted, run.alive)


def _guest(run: StageRun) -> dict:
    disks = [(path, run.plan.output.format) for path in _outputs(run)]
    return guest_stage(run.pvm.vm, disks, vm_dir(run.plan.output, run.pvm.vm), run.pvm.fixes,
                       run.settings.hypervisor(), gen=run.gen, alive=run.alive, owns=run.owns,
                       timeout=run.settings.guest_timeout)


def _validate(run: StageRun) -> dict:
    inspection = run.result_of("vm", "guest").get("inspection", {})
    verified = [run.result_of(f"d{d.index}", "verify") for d in run.pvm.vm.disks]
    return validate_vm(run.pvm, run.plan.output, _outputs(run), verified, inspection,
                       vm_dir(run.plan.output, run.pvm.vm), run.alive, run.settings.hypervisor(), run.gen)


def _finalize(run: StageRun) -> dict:
    records = {k: v for k, v in run.records.items() if k != ("vm", FINAL_STAGE)}
    return finalize_vm(run.plan, run.pvm, records)


def _output_now(run: StageRun, index: int) -> dict:
    """How output `index` looked when the pipeline last wrote it: after the guest fixes were
    committed, or else as converted."""
    fixed = run.result_of("vm", "guest").get("outputs")
    if fixed and run.records.get(("vm", "guest"), {}).get("status") == "succeeded":
        return fixed[index]
    return run.result_of(f"d{index}", "convert")


def _disk_output_unchanged(run: StageRun, result: dict) -> bool:
    return atomic.still_same(_output_now(run, int(run.ref.lane[1:])))


def _outputs_unchanged(run: StageRun, result: dict) -> bool:
    return all(atomic.still_same(_output_now(run, d.index)) for d in run.pvm.vm.disks)


SPECS = {
    "fetch": StageSpec(_fetch, _fetched_unchanged),
    "convert": StageSpec(_convert, _disk_output_unchanged),
    "verify": StageSpec(_verify, _disk_output_unchanged),
    "guest": StageSpec(_guest, _outputs_unchanged),
    "validate": StageSpec(_validate, _outputs_unchanged),
    FINAL_STAGE: StageSpec(_finalize, lambda run, result: False),
}


def _run_stage(task, stage: str, wave: str, vm: str, lane: str, run: int) -> dict:
    settings: Settings = app.h2k_settings
    state = _state(settings.broker_url, max(1.0, settings.lease_ttl / 4))
    plan_json = state.wave(wave).get("plan")
    if not plan_json:
        raise StageFailed(f"wave {wave} is unknown to this broker")
    plan = _plan(wave, plan_json)
    pvm = next((p for p in plan.vms if p.vm.name == vm), None)
    if pvm is None:
        raise StageFailed(f"wave {wave} has no VM {vm!r}")
    if pvm.host != settings.host:
        raise StageFailed(f"{vm} is placed on host {pvm.host!r}; this worker serves {settings.host!r}")
    return execute(task, SPECS[stage], state, settings, plan, pvm, StageRef(wave, vm, lane, stage), run)


def _define(stage: str):
    @app.task(name=f"h2k.{stage}", bind=True)
    def stage_task(self, wave: str, vm: str, lane: str, run: int) -> dict:
        return _run_stage(self, stage, wave, vm, lane, run)

    return stage_task


TASKS = {stage: _define(stage) for stage in SPECS}
