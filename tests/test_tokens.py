"""Concurrency tokens on a real redis-server: all-or-none acquisition recorded as sent, releases
that keep a token a newer run took, and the reconciler that frees lanes not in flight."""
from __future__ import annotations

import pytest

from conductor.lanes import holder, lane_id, lane_over, parse_holder
from conductor.tokens import free_stale, in_flight
from h2k_planner.models import VM, Disk, Output
from h2k_planner.plan import make_plan
from h2k_tasks.state import StageRef, State


@pytest.fixture
def state(redis_server):
    return State.from_url(redis_server.url)


def test_holders_name_lanes_without_the_run():
    name = holder("w-1", "web/01", "d0")
    assert parse_holder(name) == ("w-1", "web/01", "d0") and lane_id(name, 3) == "w-1/web/01/d0#3"
    assert parse_holder("w-1") is None


def test_a_lane_is_over_when_done_in_this_run_or_ended_badly():
    done1 = {"status": "succeeded", "run": "1"}
    assert lane_over([done1, done1], 1) and not lane_over([done1, done1], 2)
    assert lane_over([done1, {"status": "cancelled"}], 2) and not lane_over([done1, {"status": "pending"}], 1)
    # a cancel marks the waiting stages at once; the lane is over when the running one has ended too
    assert not lane_over([{"status": "running"}, {"status": "cancelled"}], 1)
    assert in_flight(True, False, False, [done1], 1)  # a live lease wins: a worker runs it now
    assert in_flight(False, True, True, [{"status": "pending"}], 1)
    assert not in_flight(False, False, True, [{"status": "pending"}], 1)  # its wave is over
    assert not in_flight(False, True, False, [{"status": "pending"}], 1)  # never sent


def test_acquire_takes_all_or_none_and_records_the_lane_sent(state):
    assert state.acquire("w-1", "w-1/a/d0", "w-1/a/d0#1", {"host:h": 1, "wave:w-1": 0})
    assert not state.acquire("w-1", "w-1/b/d0", "w-1/b/d0#1", {"wave:w-1": 0, "host:h": 1})
    assert state.holders() == {"w-1/a/d0": ["host:h", "wave:w-1"]}  # b took nothing, not even the free one
    assert state.acquire("w-1", "w-1/a/d0", "w-1/a/d0#2", {"host:h": 1, "wave:w-1": 0})  # held: a no-op
    assert set(state.sent_at("w-1")) == {"w-1/a/d0#1", "w-1/a/d0#2"}
    assert [e["event"] for e in state.log("w-1")] == ["acquire", "acquire"]


def test_release_keeps_a_token_that_a_newer_run_holds(state):
    state.start_runs("w-1", ["a"])
    state.acquire("w-1", "w-1/a/d0", "w-1/a/d0#1", {"host:h": 1})
    state.start_runs("w-1", ["a"])  # a retry: run 2, whose lane reuses the token
    assert not state.release("w-1", "a", 1, "w-1/a/d0", ["host:h"], "lane over")
    assert state.holders() == {"w-1/a/d0": ["host:h"]}
    assert state.release("w-1", "a", 2, "w-1/a/d0", ["host:h"], "lane over")
    assert state.holders() == {} and state.r.smembers("h2k:sems") == set()
    assert [e["event"] for e in state.log("w-1")][-1] == "release"


def _wave(state: State, tmp_path) -> str:
    vms = [VM(name=n, source=f"/{n}.vmx", source_kind="vmx",
              disks=[Disk(source=f"/{n}.vmdk", format="vmdk", virtual_size=1 << 20)]) for n in ("a", "b")]
    plan = make_plan(vms, Output(directory=str(tmp_path)), hosts={"a": "h", "b": "h"})
    state.save_wave(plan.wave, plan.model_dump_json())
    state.set_wave_field(plan.wave, status="running")
    state.start_runs(plan.wave, ["a", "b"])
    return plan.wave


def test_the_reconciler_frees_what_is_not_in_flight(state, tmp_path):
    wave = _wave(state, tmp_path)
    for vm in ("a", "b"):
        assert state.acquire(wave, f"{wave}/{vm}/d0", f"{wave}/{vm}/d0#1", {"host:h": 0, f"wave:{wave}": 0})
    state.r.sadd("h2k:sem:host:h", f"{wave}/a/d0#1", "w-gone/x/d0")  # an older format; a wave nobody knows
    state.r.sadd("h2k:sems", "host:h")
    fetch_a = StageRef(wave, "a", "d0", "fetch")
    state.claim(fetch_a, "h", "w", ttl=30, run=1)  # a's lane runs
    for stage in ("fetch", "convert", "verify"):  # b's lane is over
        ref = StageRef(wave, "b", "d0", stage)
        _, gen = state.claim(ref, "h", "w", ttl=30, run=1)
        state.finish(ref, gen, "succeeded")
    assert sorted(free_stale(state)) == sorted([f"{wave}/b/d0", f"{wave}/a/d0#1", "w-gone/x/d0"])
    assert state.holders() == {f"{wave}/a/d0": ["host:h", f"wave:{wave}"]}

    state.set_wave_field(wave, status="finished")  # a's VM failed through another lane: the wave ended
    assert free_stale(state) == []  # ... but a's fetch still runs under a live lease
    state.finish(fetch_a, 1, "succeeded")
    assert free_stale(state) == [f"{wave}/a/d0"] and state.holders() == {}
    assert {e.get("why") for e in state.log(wave) if e["event"] == "release"} == {"reconciled"}


def test_an_older_runs_lane_between_two_stages_keeps_its_token_after_a_resume(state, tmp_path):
    """Run 1's lane finished its fetch and has not claimed its convert yet (no lease at this moment);
    a resume has started run 2, whose driver has not sent the lane again yet: the chain is in flight."""
    wave = _wave(state, tmp_path)
    assert state.acquire(wave, f"{wave}/a/d0", f"{wave}/a/d0#1", {"host:h": 1})
    fetch = StageRef(wave, "a", "d0", "fetch")
    _, gen = state.claim(fetch, "h", "w", ttl=30, run=1)
    state.finish(fetch, gen, "succeeded")
    state.start_runs(wave, ["a"])  # the resume: run 2
    assert free_stale(state) == [] and state.holders() == {f"{wave}/a/d0": ["host:h"]}
    for stage in ("convert", "verify"):  # the old chain ends; done in run 1, not in run 2, which sends it again
        ref = StageRef(wave, "a", "d0", stage)
        _, gen = state.claim(ref, "h", "w", ttl=30, run=1)
        state.finish(ref, gen, "succeeded")
    assert free_stale(state) == []
    state.set_wave_field(wave, status="finished")
    assert free_stale(state) == [f"{wave}/a/d0"]
