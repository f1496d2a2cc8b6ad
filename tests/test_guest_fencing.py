"""The guest stage is fenced like every other: a worker that cannot renew its lease stops its libguestfs
appliance and commits nothing, a cancel stops a running session within seconds, and only a dead
attempt's overlays are ever removed. Real redis-server, Celery worker, libguestfs and qemu-img."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from h2k_tasks import atomic
from tests.builders.vmware import build_demo_vm
from tests.support import ROOT, h2k, processes_with, sha256, suite_settings, wait_for

pytestmark = pytest.mark.slow

VM = "demo-debian12"


def _appliances(vm_dir: str) -> list[str]:
    """The QEMU processes whose drives are this VM's guest-stage overlays."""
    return processes_with(os.path.join(vm_dir, ".guest-g"), "qemu-system")


def _log(r) -> list[dict]:
    wave = r.zrange("h2k:waves", 0, -1)[0]
    return [fields for _, fields in r.xrange(f"h2k:log:{wave}")]


@pytest.fixture
def migration(tmp_path, redis_server, workers):
    """`h2k migrate` of a phony Debian guest against a real worker, stopped once its appliance runs."""
    vmx = build_demo_vm(str(tmp_path / "src"))
    out = tmp_path / "out"
    vm_dir = str(out / VM)
    workers.start(suite_settings(redis_server.url))
    conductor = subprocess.Popen(
        [sys.executable, "-m", "conductor", "migrate", vmx, "-o", str(out), "--json", "--no-boot-test",
         "--broker", redis_server.url], env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _appliances(vm_dir), 600, "the guest stage's appliance to run")
        disk = os.path.join(vm_dir, f"{VM}-disk0.qcow2")
        yield conductor, vm_dir, disk, redis_server.client()
    finally:
        if conductor.poll() is None:
            conductor.kill()
            conductor.communicate()


def test_a_guest_stage_that_cannot_renew_its_lease_stops_its_appliance_and_commits_nothing(migration, redis_server):
    conductor, vm_dir, disk, r = migration
    converted = sha256(disk), atomic.identity(disk)
    redis_server.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(lambda: not _appliances(vm_dir), 30, "the appliance to be killed while Redis does not answer")
        took = time.monotonic() - stopped_at
        time.sleep(max(0.0, 12 - took))  # three leases (lease_ttl 4 s) with Redis gone
        assert (sha256(disk), atomic.identity(disk)) == converted, "the fenced attempt wrote into the output"
        assert not os.path.exists(os.path.join(vm_dir, ".guest-commit"))
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    stdout, stderr = conductor.communicate(timeout=900)
    assert conductor.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["vms"][0]["status"] == "succeeded"
    guest = [(e["event"], e["gen"]) for e in _log(r) if e.get("stage") == f"{VM}/vm/guest"]
    assert guest[:2] == [("claim", "1"), ("expired", "1")] and guest[-1][0] == "succeeded", guest
    assert int(guest[-1][1]) > 1
    report = json.load(open(os.path.join(vm_dir, "report.json")))
    assert report["changes"] and sha256(disk) != converted[0]  # the re-claimed attempt committed its fixes
    assert took < 4 + 10, f"the appliance outlived its lease by {took - 4:.0f}s"


def test_cancel_stops_a_running_guest_session_within_seconds(migration, redis_server):
    conductor, vm_dir, disk, r = migration
    converted = sha256(disk), atomic.identity(disk)
    wave = r.zrange("h2k:waves", 0, -1)[0]
    cancelled_at = time.monotonic()
    res = h2k("wave", "cancel", wave, VM, "--broker", redis_server.url)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not _appliances(vm_dir), 10, "the cancelled appliance to stop")
    assert time.monotonic() - cancelled_at < 10
    stdout, _ = conductor.communicate(timeout=300)
    assert json.loads(stdout)["vms"][0]["status"] == "cancelled"
    assert (sha256(disk), atomic.identity(disk)) == converted
    assert not [n for n in os.listdir(vm_dir) if n.startswith(".guest")]


def test_only_older_generations_count_as_dead_attempts(tmp_path):
    for name in (".guest-g3-abc", ".guest-g12-x", ".guest-g4-y", ".guest-commit", ".web-g5-disk0.raw.tmp-g2",
                 ".web-g5-disk0.raw.tmp-g9", ".web-g5-disk0.raw.tmp-w-123", ".h2k-boot-g1-q"):
        (tmp_path / name).touch()
    assert atomic.dead_attempts(str(tmp_path), ".guest-g", 4) == [str(tmp_path / ".guest-g3-abc")]
    assert atomic.dead_attempts(str(tmp_path), ".guest-g", 13) == [
        str(tmp_path / n) for n in (".guest-g12-x", ".guest-g3-abc", ".guest-g4-y")]
    assert atomic.remove_temps(str(tmp_path / "web-g5-disk0.raw"), 4) == [str(tmp_path / ".web-g5-disk0.raw.tmp-g2")]
    assert (tmp_path / ".web-g5-disk0.raw.tmp-g9").exists() and (tmp_path / ".web-g5-disk0.raw.tmp-w-123").exists()
