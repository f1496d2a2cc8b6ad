"""The scheduler's passes on a real redis-server: a pass reads the VMs the state log names (and those
running a stage), sees every change made by other processes, and a full pass comes back by itself.

The stages are claimed and finished here through State, as a worker does; the lanes the driver sends
go to the real broker, where no worker takes them (one redis-server for the module: the Celery app keeps
its connections to the broker it first sent to)."""
from __future__ import annotations

import tempfile

import pytest

from conductor import driver as driver_mod
from conductor.driver import Driver, Limits, moved_vms
from h2k_planner.models import VM, Disk, Output
from h2k_planner.plan import make_plan
from h2k_tasks.app import configure
from h2k_tasks.settings import Settings
from h2k_tasks.state import StageRef, State
from tests.support import RedisServer

NAMES = [f"vm{n}" for n in range(6)]


def test_moved_vms_names_the_vms_of_stage_run_and_cancel_entries():
    entries = [{"event": "claim", "stage": "web/01/d0/convert"}, {"event": "run", "vms": "a#2,b#1"},
               {"event": "cancel", "vms": "c"}, {"event": "acquire", "holder": "w/x/d0"}]
    assert moved_vms(entries) == {"web/01", "a", "b", "c"}
    assert moved_vms([{"event": "something new"}]) is None  # then a full pass looks


class Counting(State):
    """A State that counts the stage records each pass reads (it reads them as State does)."""
    read: list[str]

    def get_many(self, refs):
        self.read.extend(ref.vm for ref in refs)
        return super().get_many(refs)


@pytest.fixture(scope="module")
def broker():
    with tempfile.TemporaryDirectory(prefix="h2k-redis-", dir="/tmp") as d:
        server = RedisServer(d, aof=False).start()
        configure(Settings(broker_url=server.url, host="h"))
        yield server
        server.stop()


@pytest.fixture
def wave(broker, tmp_path):
    broker.client().flushall()
    state = Counting(State.from_url(broker.url).r)
    state.read = []
    vms = [VM(name=n, source=f"/src/{n}.vmx", source_kind="vmx",
              disks=[Disk(source=f"/src/{n}.vmdk", format="vmdk", virtual_size=1 << 20)]) for n in NAMES]
    plan = make_plan(vms, Output(directory=str(tmp_path)), hosts={n: "h" for n in NAMES})
    driver = Driver(state, plan, limits=Limits(per_source=2))
    driver.submit()
    return state, driver


def run_stage(state: State, ref: StageRef, status: str = "succeeded") -> None:
    """What a worker does with a stage: claim it, then finish it."""
    claimed, gen = state.claim(ref, "h", "w", ttl=30, run=1)
    assert claimed == "claimed"
    state.finish(ref, gen, status)


def next_pass(state: State, driver: Driver, cursors: dict[str, str]):
    cursors, arrived = state.wait_for_log(cursors, 0.1)
    state.read = []
    views = driver.step(arrived.get(driver.wave, []))
    return cursors, {v.pvm.vm.name: v for v in views}


def test_a_pass_reads_what_moved_and_sees_every_change(wave):
    state, driver = wave
    cursors = {driver.wave: state.log_cursor(driver.wave)}
    views = {v.pvm.vm.name: v for v in driver.step()}
    assert driver.last_full and sorted(set(state.read)) == NAMES
    sent = [n for n in NAMES if f"{driver.wave}/{n}/d0#1" in state.sent_at(driver.wave)]
    assert len(sent) == 2  # the source cap: two disk lanes in flight
    first, second = sent
    fetch = driver.refs[first][("d0", "fetch")]

    cursors, views = next_pass(state, driver, cursors)  # the two acquisitions: no record changed
    assert not driver.last_full and state.read == []

    state.claim(fetch, "h", "w", ttl=30, run=1)
    cursors, views = next_pass(state, driver, cursors)
    assert set(state.read) == {first} and views[first].records[("d0", "fetch")]["status"] == "running"

    state.beat(fetch, 1, 30, done=512, total=1024)  # a heartbeat logs nothing: a running VM is read anyway
    cursors, views = next_pass(state, driver, cursors)
    assert set(state.read) == {first} and views[first].records[("d0", "fetch")]["bytes"] == "512"

    lease = state.get(fetch)["gen"]
    state.finish(fetch, int(lease), "succeeded")
    for stage in ("convert", "verify"):
        run_stage(state, driver.refs[first][("d0", stage)])
    cursors, views = next_pass(state, driver, cursors)
    # its disk lane is over: the token went back, and the next VM's lane took it in the same pass
    assert set(state.read) == {first} and views[first].lane_done("d0")
    third = next(n for n in NAMES if n not in sent)
    assert f"{driver.wave}/{third}/d0#1" in state.sent_at(driver.wave)
    assert f"{driver.wave}/{first}/vm#1" in state.sent_at(driver.wave)

    state.cancel(driver.wave, [second], [r for k, r in driver.refs[second].items() if k[1] != "finalize"])
    cursors, views = next_pass(state, driver, cursors)
    assert second in state.read and views[second].failed


def test_a_full_pass_comes_back_by_itself_and_for_an_entry_naming_no_vm(wave, monkeypatch):
    state, driver = wave
    cursors = {driver.wave: state.log_cursor(driver.wave)}
    driver.step()
    state.append_log(driver.wave, event="operator note")
    cursors, _ = next_pass(state, driver, cursors)
    assert driver.last_full and sorted(set(state.read)) == NAMES
    monkeypatch.setattr(driver_mod, "FULL_PASS_EVERY", 0.0)
    cursors, _ = next_pass(state, driver, cursors)
    assert driver.last_full and sorted(set(state.read)) == NAMES
