"""Cold migration from vSphere: when a vCenter's config says `shutdown: true`, the conductor shuts
down the powered-on VMs a migration takes (guest shutdown through VMware Tools, then a power-off
once `shutdown_timeout` has passed), before their disks are read. Without it, a powered-on VM is a
Critical concern and is refused."""
from __future__ import annotations

import logging
import time

from pyVmomi import vim

from h2k_planner.sources.vsphere import Session
from h2k_planner.sources.vsphere_records import VsphereVM

log = logging.getLogger("h2k.vsphere")


def _state(vm) -> str:
    return str(vm.runtime.powerState)


def shut_down(s: Session, records: list[VsphereVM], timeout: float) -> list[str]:
    """Power off every powered-on VM among `records`; returns their names."""
    done = []
    for rec in records:
        if rec.power_state != "poweredOn":
            continue
        vm = vim.VirtualMachine(rec.moref, s.stub)
        try:
            vm.ShutdownGuest()
            log.warning("%s: guest shutdown requested", rec.name)
        except vim.fault.VimFault as e:  # no VMware Tools, or the guest refuses: power off below
            log.warning("%s: guest shutdown not possible (%s); powering off", rec.name, type(e).__name__)
        deadline = time.time() + timeout
        while _state(vm) != "poweredOff" and time.time() < deadline:
            time.sleep(2)
        if _state(vm) != "poweredOff":
            task = vm.PowerOffVM_Task()
            while task.info.state not in ("success", "error"):
                time.sleep(1)
            log.warning("%s: powered off after %.0fs without a clean shutdown", rec.name, timeout)
        done.append(rec.name)
    return done
