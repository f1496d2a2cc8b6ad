"""The Redis state machine on a real redis-server: claims, leases, fencing, expiry."""
from __future__ import annotations

import threading
import time

import pytest

from h2k_tasks.state import FencedError, StageRef, State


@pytest.fixture
def state(redis_server):
    return State.from_url(redis_server.url)


REF = StageRef("w-1", "vm1", "d0", "convert")


def test_claim_commit_and_done(state):
    state.ensure([REF])
    assert state.claim(REF, "hostA", "h2k@hostA", ttl=5, run=1) == ("claimed", 1)
    assert state.claim(REF, "hostB", "h2k@hostB", ttl=5, run=1) == ("busy", 1)
    state.finish(REF, 1, "succeeded", result={"path": "/x"})
    assert state.claim(REF, "hostB", "h2k@hostB", ttl=5, run=1) == ("done", 1)
    rec = state.get(REF)
    assert rec["status"] == "succeeded" and rec["host"] == "hostA" and rec["result"] == '{"path": "/x"}'


def test_expired_lease_fences_the_old_owner(state):
    state.claim(REF, "hostA", "w", ttl=0.2, run=1)
    time.sleep(0.3)
    assert state.beat(REF, 1, ttl=5) is False  # the lease is gone: the owner must stop
    assert state.expire_if_lost(REF) is True
    assert state.get(REF)["status"] == "pending"
    assert state.claim(REF, "hostB", "w", ttl=5, run=1) == ("claimed", 2)
    with pytest.raises(FencedError):
        state.finish(REF, 1, "succeeded")
    state.finish(REF, 2, "succeeded")
    events = [(e["event"], e.get("gen")) for e in state.log("w-1")]
    assert events == [("claim", "1"), ("expired", "1"), ("claim", "2"), ("fenced", "1"), ("succeeded", "2")]


def test_heartbeat_keeps_the_lease_and_records_progress(state):
    state.claim(REF, "hostA", "w", ttl=0.5, run=1)
    for n in range(4):
        time.sleep(0.2)
        assert state.beat(REF, 1, ttl=0.5, done=n * 10, total=100)
    assert state.expire_if_lost(REF) is False
    assert state.get(REF)["bytes"] == "30" and state.owns(REF, 1)


def test_reset_sends_back_to_pending(state):
    state.claim(REF, "h", "w", ttl=5, run=1)
    state.finish(REF, 1, "failed", error="boom")
    state.reset([REF], "run 2 started")
    rec = state.get(REF)
    assert (rec["status"], rec["attempt"], rec["error"]) == ("pending", "0", "")


def test_wait_for_log_wakes_on_a_transition_and_misses_none(state, redis_server):
    """What wakes the conductor: an entry logged after the cursor, whether it came before the wait
    (during a pass) or while blocked; with none, the cursors come back unchanged at the timeout."""
    other = StageRef("w-2", "vm9", "d0", "convert")
    cursors = {"w-1": state.log_cursor("w-1"), "w-2": state.log_cursor("w-2")}
    assert cursors == {"w-1": "0-0", "w-2": "0-0"}
    assert state.wait_for_log(cursors, 0.2) == (cursors, {})

    state.claim(REF, "hostA", "w", ttl=30, run=1)  # logged during a pass, before the wait
    moved, arrived = state.wait_for_log(cursors, 60)
    assert moved["w-1"] == state.log_cursor("w-1") != "0-0" and moved["w-2"] == "0-0"
    assert [(e["event"], e["stage"]) for e in arrived["w-1"]] == [("claim", REF.name)] and "w-2" not in arrived

    worker = State.from_url(redis_server.url)
    later = threading.Timer(0.5, lambda: worker.claim(other, "hostB", "w", ttl=30, run=1))
    later.start()
    try:
        woken, arrived = state.wait_for_log(moved, 60)  # blocked when the claim is logged
    finally:
        later.join()
    assert list(arrived) == ["w-2"] and woken == {"w-1": moved["w-1"], "w-2": state.log_cursor("w-2")} and woken["w-2"] != "0-0"
    assert [e["event"] for e in state.log("w-2")] == ["claim"]
