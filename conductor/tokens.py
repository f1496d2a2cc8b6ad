"""The token reconciler: frees every concurrency token whose lane is no longer in flight.

A holder keeps its tokens while one of its lane's stages has a live lease (a worker runs it,
whatever run it belongs to), or while its wave is running and the lane was sent in some run of the
VM and is not over in the current one: after a resume or retry starts a new run, the older run's
chain may still be going from one stage to the next (no lease for a moment) before the new run
sends the lane again. Anything else is freed: lanes of finished or forgotten waves, a
lane that ended while no driver was looking, holders in an older format. Freeing is conditional
on the VM's run (State.release), so a retry that starts a new run meanwhile keeps its token.
"""
from __future__ import annotations

import functools

from conductor.lanes import lane_id, lane_over, parse_holder
from h2k_planner.models import Plan
from h2k_planner.plan import FINAL_STAGE
from h2k_tasks.runner import refs_of
from h2k_tasks.state import State


@functools.lru_cache(maxsize=64)
def _plan(plan_json: str) -> Plan:
    return Plan.model_validate_json(plan_json)


def in_flight(leased: bool, wave_running: bool, sent: bool, records: list[dict], run: int) -> bool:
    """`sent`: the lane was sent in run `run` or an earlier one."""
    return leased or (wave_running and sent and not lane_over(records, run))


def _lane_refs(rec: dict, vm: str, lane: str) -> list:
    """The token-holding stages of a lane (finalize holds none); [] if the wave has no such lane."""
    if not rec.get("plan"):
        return []
    plan = _plan(rec["plan"])
    pvm = next((p for p in plan.vms if p.vm.name == vm), None)
    if pvm is None:
        return []
    return [ref for (ln, stage), ref in refs_of(plan, pvm).items() if ln == lane and stage != FINAL_STAGE]


def free_stale(state: State) -> list[str]:
    """Free the tokens of every holder whose lane is not in flight; returns those holders."""
    freed = []
    waves: dict[str, tuple[dict, dict[str, int], set[str]]] = {}
    for name, sems in state.holders().items():
        wave, vm, lane = parse_holder(name) or (name.partition("/")[0], "", "")
        if wave not in waves:
            waves[wave] = (state.wave(wave), state.runs(wave), set(state.sent_at(wave)))
        rec, runs, sent = waves[wave]
        run = runs.get(vm, 0)
        refs = _lane_refs(rec, vm, lane)
        ever_sent = any(lane_id(name, r) in sent for r in range(run + 1))
        if refs and in_flight(state.leased(refs), rec.get("status") == "running", ever_sent,
                              state.get_many(refs), run):
            continue
        if state.release(wave, vm, run, name, sems, "reconciled"):
            freed.append(name)
    return freed
