"""The planner: a pure function from VMs to a Plan and shallow Celery canvases on host queues."""
from __future__ import annotations

import pytest
from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk, Output
from h2k_planner.plan import disk_lane, disk_lanes, finalize, make_plan, vm_lane


def vm(name: str, disks: int = 2, source: str | None = None) -> VM:
    return VM(name=name, source=source or f"/src/{name}.vmx", source_kind="vmx",
              disks=[Disk(source=f"/src/{name}-{i}.vmdk", format="vmdk", virtual_size=2**30, index=i)
                     for i in range(disks)])


def test_wave_id_is_stable_and_depends_on_sources_and_output():
    a = make_plan([vm("a"), vm("b")], Output(directory="/out"))
    assert make_plan([vm("b"), vm("a")], Output(directory="/out")).wave == a.wave
    assert make_plan([vm("a")], Output(directory="/out")).wave != a.wave
    assert make_plan([vm("a"), vm("b")], Output(directory="/out", format="raw")).wave != a.wave


def test_disk_lanes_are_a_group_of_chains_on_the_host_queue():
    plan = make_plan([vm("a")], Output(directory="/out"), hosts={"a": "kvm07"})
    pvm = plan.vms[0]
    lanes = disk_lanes(plan, pvm, run=3)
    assert lanes.get("subtask_type") == "group" and len(lanes.tasks) == 2
    for i, lane in enumerate(lanes.tasks):
        assert lane.get("subtask_type") == "chain"
        assert [t.task for t in lane.tasks] == ["h2k.fetch", "h2k.convert", "h2k.verify"]
        for t in lane.tasks:
            assert t.options["queue"] == "h2k.host.kvm07" and t.immutable
            assert t.kwargs == {"wave": plan.wave, "vm": "a", "lane": f"d{i}", "run": 3}
    resumed = disk_lane(plan, pvm, 1, run=3, start=1)
    assert [t.task for t in resumed.tasks] == ["h2k.convert", "h2k.verify"]
    assert resumed.tasks[0].kwargs["lane"] == "d1"


def test_vm_lane_and_finalize_are_shallow():
    plan = make_plan([vm("a")], Output(directory="/out"))
    lane = vm_lane(plan, plan.vms[0], run=1)
    assert [t.task for t in lane.tasks] == ["h2k.guest", "h2k.validate"]
    assert lane.get("subtask_type") == "chain" and all(t.get("subtask_type") is None for t in lane.tasks)
    assert finalize(plan, plan.vms[0], 1).task == "h2k.finalize"


def test_two_vms_sharing_an_output_directory_are_refused():
    with pytest.raises(InputError, match="share the output directory 'a_b'"):
        make_plan([vm("a b", source="/1.vmx"), vm("a/b", source="/2.vmx")], Output(directory="/out"))
