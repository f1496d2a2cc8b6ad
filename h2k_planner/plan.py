"""The whole pipeline, top to bottom. Read this file first.

Every VM goes through the same stages on the worker host the planner places it on:

  per disk, all disks in parallel (a "disk lane"):
    fetch     make the source readable on the host and record its identity: local files are read in
              place (size, mtime), a packed disk is unpacked once into the VM's directory, a vSphere
              disk is probed on its datastore (its files' size and Last-Modified, which file holds
              the data); a vSphere VM whose vCenter config says `shutdown: true` is shut down first,
              by the first of its fetches
    convert   the copier reads the source's guest-visible content once (qemu-nbd on a local file;
              nbdkit curl on the datastore file for vSphere, with qemu-nbd on top for a sparse
              VMDK: only allocated bytes move), hashes it, and writes the output format under a temp
              name, marking its progress so a dead attempt's successor resumes; fsync, rename
    verify    `qemu-img check`, virtual size equal to the source, one read of the output whose
              content digest must equal the source's

  then once per VM, when every disk lane succeeded (the "VM lane"):
    guest     one libguestfs session over all the VM's disks: inspect the guest OS, then apply
              the offline fixes on a qcow2 overlay committed only if every fix succeeded
    validate  check the final outputs again (verify's digest is reused while an output is unchanged),
              then boot them under QEMU on a throwaway overlay and watch the serial console for
              proof of userspace

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

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Output, Plan, PlannedVM
from h2k_planner.placement import LOCAL_HOST, source_cap

DISK_STAGES = ["fetch", "convert", "verify"]
VM_STAGES = ["guest", "validate"]
FINAL_STAGE = "finalize"


def queue_for(host: str) -> str:
    return f"h2k.host.{host}"


def wave_id(vms: list[VM], output: Output) -> str:
    """Same sources and output give the same id: re-running a wave resumes it."""
    key = json.dumps(
        {"sources": sorted(vm.source for vm in vms), "output": output.model_dump()}, sort_keys=True
    )
    return "w-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def make_plan(vms: list[VM], output: Output, hosts: dict[str, str] | None = None,
              no_guest: set[str] = frozenset(), name: str = "", fixes: dict | None = None,
              boot_test: dict[str, bool] | None = None, boot_timeout: float = 900.0,
              two_phase: set[str] = frozenset(), endpoints: dict[str, dict] | None = None,
              shutdown: dict[str, float] | None = None) -> Plan:
    """`hosts` maps VM names to the host placed for them (default: the embedded host); VMs named
    in `no_guest` are copied disk for disk, without the guest stage; `fixes` are the fixers'
    options; `boot_test` maps VM names to whether validate boots them (default: yes); VMs in
    `two_phase` get a first-boot domain on SATA besides the virtio one; `endpoints` maps the
    names of VMs read from vSphere to their endpoint (see PlannedVM.source_endpoint); `shutdown`
    maps the powered-on ones their fetch shuts down to the guest shutdown's timeout."""
    names = [vm.slug for vm in vms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(None, f"two VMs would share the output directory {dupes[0]!r}: rename one")
    output = output.model_copy(update={"directory": os.path.abspath(output.directory)})
    hosts = hosts or {}
    return Plan(
        wave=wave_id(vms, output),
        name=name,
        output=output,
        vms=[
            PlannedVM(vm=vm, host=hosts.get(vm.name, LOCAL_HOST), source_group=source_cap(vm),
                      stages=[s for s in VM_STAGES if not (s == "guest" and vm.name in no_guest)],
                      disk_stages=list(DISK_STAGES), fixes=fixes or {},
                      boot_test=(boot_test or {}).get(vm.name, True) and vm.name not in no_guest,
                      boot_timeout=boot_timeout, two_phase_boot=vm.name in two_phase,
                      source_endpoint=(endpoints or {}).get(vm.name),
                      shutdown_timeout=(shutdown or {}).get(vm.name))
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


def disk_lane(plan: Plan, pvm: PlannedVM, disk_index: int, run: int, start: int = 0):
    """One disk's stages as a chain, from stage number `start`."""
    return chain(*[_sig(s, plan, pvm, lane_name(disk_index), run) for s in pvm.disk_stages[start:]])


def disk_lanes(plan: Plan, pvm: PlannedVM, run: int):
    """All of a VM's disks in parallel: a group of one chain per disk."""
    return group(disk_lane(plan, pvm, d.index, run) for d in pvm.vm.disks)


def vm_lane(plan: Plan, pvm: PlannedVM, run: int, start: int = 0):
    return chain(*[_sig(s, plan, pvm, "vm", run) for s in pvm.stages[start:]])


def finalize(plan: Plan, pvm: PlannedVM, run: int):
    return _sig(FINAL_STAGE, plan, pvm, "vm", run)
