"""The whole pipeline, top to bottom. Read this file first.

Every VM goes through the same stages on the worker host the planner places it on:

  per disk, all disks in parallel (a "disk lane"):
    fetch     make the source readable on the host: local files are read in place and recorded
              (size, mtime); remote sources are downloaded (resumable)
    convert   one `qemu-img convert` from the top of the snapshot chain straight to the output
              format: flatten and convert in one read and one write, to a temp name, fsync, rename
    verify    `qemu-img check`, virtual size equal to the source, `qemu-img compare` against the
              source, sha256 of the output

  then once per VM, when every disk lane succeeded (the "VM lane"):
    guest     one libguestfs session over all the VM's disks: inspect the guest OS, then apply
              the offline fixes on a qcow2 overlay committed only if every fix succeeded
    validate  check the final outputs again, then boot them under QEMU on a throwaway overlay
              and watch the serial console for proof of userspace

  and always, once the VM succeeded or failed:
    finalize  write `<vm>.xml` (a libvirt domain) and `report.json` into the VM's directory

Canvases are shallow on purpose: a group of short chains for the disks, one chain for the VM,
one task to finalize. The conductor starts each of them when the Redis state machine
(h2k_tasks/state.py) says the previous step is complete; a lost task is re-sent when its lease
expires, and a re-run wave skips every stage whose artifact still verifies.
"""
from __future__ import annotations

import hashlib
import json
import os

from celery import chain, group, signature

from h2k_planner.models import VM, Output, Plan, PlannedVM

DISK_STAGES = ["fetch", "convert", "verify"]
VM_STAGES = ["guest", "validate"]
FINAL_STAGE = "finalize"
LOCAL_HOST = "local"


def queue_for(host: str) -> str:
    return f"h2k.host.{host}"


def wave_id(vms: list[VM], output: Output) -> str:
    """Same sources and output give the same id: re-running a wave resumes it."""
    key = json.dumps(
        {"sources": sorted(vm.source for vm in vms), "output": output.model_dump()}, sort_keys=True
    )
    return "w-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def make_plan(vms: list[VM], output: Output, host: str = LOCAL_HOST, boot_test: bool = True) -> Plan:
    names = [vm.slug for vm in vms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        from h2k_planner.errors import InputError

        raise InputError(None, f"two VMs would share the output directory {dupes[0]!r}: rename one")
    output = output.model_copy(update={"directory": os.path.abspath(output.directory)})
    return Plan(
        wave=wave_id(vms, output),
        output=output,
        vms=[
            PlannedVM(vm=vm, host=host, stages=list(VM_STAGES), disk_stages=list(DISK_STAGES), boot_test=boot_test)
            for vm in vms
        ],
    )


def lane_name(disk_index: int | None) -> str:
    return "vm" if disk_index is None else f"d{disk_index}"


def _sig(stage: str, plan: Plan, pvm: PlannedVM, lane: str, run: int):
    return signature(
        f"h2k.{stage}",
        kwargs={"wave": plan.wave, "vm": pvm.vm.name, "lane": lane, "run": run},
        queue=queue_for(pvm.host),
        immutable=True,
    )


def disk_lanes(plan: Plan, pvm: PlannedVM, run: int, starts: dict[int, int] | None = None):
    """A group of one chain per disk; `starts` maps a disk to the stage index its chain starts at."""
    starts = starts if starts is not None else {d.index: 0 for d in pvm.vm.disks}
    return group(
        chain(*[_sig(s, plan, pvm, lane_name(i), run) for s in pvm.disk_stages[start:]])
        for i, start in sorted(starts.items())
    )


def vm_lane(plan: Plan, pvm: PlannedVM, run: int, start: int = 0):
    return chain(*[_sig(s, plan, pvm, "vm", run) for s in pvm.stages[start:]])


def finalize(plan: Plan, pvm: PlannedVM, run: int):
    return _sig(FINAL_STAGE, plan, pvm, "vm", run)
