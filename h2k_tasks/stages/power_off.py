"""Cold migration from vSphere: shut a VM down just before its fetch reads the disks.

A guest shutdown through VMware Tools first; if the VM is still on after `timeout` seconds (or
Tools cannot do it), `PowerOffVM_Task`, whose result is read: a task that fails, does not finish,
or leaves the VM on fails the stage with the reason. Nothing is changed once `may_act()` says the
stage no longer owns its lease or the VM was cancelled. Several disk lanes of one VM each call
this; whichever comes first shuts the VM down, the others find it off.
"""
from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from pyVmomi import vim, vmodl

from h2k_planner.models import VM
from h2k_planner.sources.vsphere import session
from h2k_planner.sources.vsphere_endpoint import Endpoint
from h2k_tasks.process import Interrupted
from h2k_tasks.stages import StageFailed

log = logging.getLogger("h2k.vsphere")
TASK_TIMEOUT = 300.0


def moref_of(vm: VM) -> str:
    """The managed object id in a vSphere VM's source URL (`...?moref=vm-42`)."""
    found = parse_qs(urlsplit(vm.source).query).get("moref")
    if not found:
        raise StageFailed(f"{vm.source}: no moref in the source URL")
    return found[0]


def power_off_for_fetch(endpoint: dict, vm: VM, timeout: float, may_act: Callable[[], bool]) -> str:
    """Log in with the plan's secret reference and shut `vm` down; returns how it went down."""
    with session(Endpoint.model_validate(endpoint)) as s:
        return shut_down(vim.VirtualMachine(moref_of(vm), s.stub), vm.name, timeout, may_act)


def shut_down(vm, name: str, timeout: float, may_act: Callable[[], bool], sleep=time.sleep) -> str:
    """'already off', 'guest shutdown' or 'power-off'. `vm` is a pyVmomi VirtualMachine."""
    if _state(vm) == "poweredOff":
        return "already off"
    if not may_act():
        raise Interrupted(f"{name}: not shut down: the stage was cancelled or lost its lease")
    try:
        vm.ShutdownGuest()
        log.warning("%s: guest shutdown requested", name)
        deadline = time.monotonic() + timeout
        while _state(vm) != "poweredOff" and time.monotonic() < deadline:
            if not may_act():
                raise Interrupted(f"{name}: stopped waiting for the guest shutdown")
            sleep(1)
    except vim.fault.InvalidPowerState:
        pass  # another lane of this VM shut it down meanwhile
    except vim.fault.VimFault as e:  # no VMware Tools, or the guest refuses: power off below
        log.warning("%s: guest shutdown not possible (%s); powering off", name, type(e).__name__)
    if _state(vm) == "poweredOff":
        return "guest shutdown"
    if not may_act():
        raise Interrupted(f"{name}: not powered off: the stage was cancelled or lost its lease")
    task = vm.PowerOffVM_Task()
    deadline = time.monotonic() + TASK_TIMEOUT
    while task.info.state not in ("success", "error"):
        if time.monotonic() > deadline:
            raise StageFailed(f"power-off of {name}: PowerOffVM_Task did not finish in {TASK_TIMEOUT:.0f}s")
        sleep(1)
    state = _state(vm)
    if task.info.state == "error" and state != "poweredOff":
        raise StageFailed(f"power-off of {name} failed: {_reason(task.info.error)}")
    if state != "poweredOff":
        raise StageFailed(f"power-off of {name}: the task succeeded but the VM is {state}")
    log.warning("%s: powered off after %.0fs without a clean shutdown", name, timeout)
    return "power-off"


def _state(vm) -> str:
    return str(vm.runtime.powerState)


def _reason(fault) -> str:
    if isinstance(fault, vmodl.MethodFault):
        return fault.msg or type(fault).__name__
    return str(fault) or "unknown error"
