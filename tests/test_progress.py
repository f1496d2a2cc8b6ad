"""Live progress from stage records: a disk's bytes are its conversion's, whatever its source."""
from __future__ import annotations

from collections import defaultdict

import pytest

from conductor.driver import VMView
from conductor.progress import disk_bytes, vm_bytes
from h2k_planner.models import VM, Disk, PlannedVM

GIB = 2**30


def view(records: dict, endpoint: dict | None = None, disks: int = 1) -> VMView:
    vm = VM(name="a", source="/src/a.vmx", source_kind="vmx",
            disks=[Disk(source=f"/src/a-{i}.vmdk", format="vmdk", virtual_size=4 * GIB, index=i)
                   for i in range(disks)])
    pvm = PlannedVM(vm=vm, host="local", stages=["guest", "validate"], disk_stages=["fetch", "convert", "verify"],
                    source_endpoint=endpoint)
    recs: dict = defaultdict(dict)
    recs.update(records)
    return VMView(pvm=pvm, records=recs, run=1)


def running(got: int, total: int | None, seconds: float) -> dict:
    rec = {"status": "running", "run": "1", "started": "100", "updated": str(100 + seconds), "bytes": str(got)}
    return rec | ({"total": str(total)} if total else {})


ENDPOINT = {"host": "vc.example", "user": "migrator", "secret": {"env": "H2K_VSPHERE_PASSWORD"}}


def test_a_local_disk_counts_its_conversion_only():
    v = view({("d0", "fetch"): {"status": "succeeded", "run": "1", "bytes": "123"},
              ("d0", "convert"): running(GIB, 4 * GIB, 10)})
    b = disk_bytes(v, v.pvm.vm.disks[0])
    assert (b.done, b.total) == (GIB, 4 * GIB)
    assert b.eta == pytest.approx(30)


@pytest.mark.parametrize("endpoint", [None, ENDPOINT])
def test_a_disk_not_started_is_estimated_at_its_virtual_size(endpoint):
    b = disk_bytes(v := view({}, endpoint=endpoint), v.pvm.vm.disks[0])
    assert (b.done, b.total, b.eta) == (0, 4 * GIB, None)


def test_finished_stages_count_whole_and_only_this_runs_records_count():
    v = view({("d0", "fetch"): {"status": "succeeded", "run": "1", "bytes": str(3 * GIB)},
              ("d0", "convert"): {"status": "succeeded", "run": "1", "bytes": str(3 * GIB)},
              ("d1", "convert"): {"status": "succeeded", "run": "0", "bytes": str(GIB)}},
             endpoint=ENDPOINT, disks=2)
    b = vm_bytes(v)
    assert b.done == 3 * GIB
    assert b.total == 3 * GIB + 4 * GIB  # disk 1: an earlier run's conversion is not this run's
    assert b.eta is None
