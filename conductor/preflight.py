"""Plan-time inspection (`--inspect`): a read-only libguestfs look at each VM's source disks, so
that guests the fixers would refuse (hibernated or BitLocker Windows, missing virtio-win, unknown
Linux) are stopped before anything is converted, and a firmware or boot disk that contradicts the
source is reported. One launch per VM, the sources never written."""
from __future__ import annotations

from h2k_planner.models import VM, Concern, Severity
from h2k_tasks.inspect_linux import inspect_linux, linux_concerns
from h2k_tasks.inspect_windows import inspect_windows, windows_concerns
from h2k_tasks.appliance import open_session
from h2k_tasks.firmware import firmware_concerns
from h2k_tasks.machine import boot_disk_concerns
from h2k_tasks.stages.guest import inspect


def inspect_vm(vm: VM, fixes: dict) -> VM:
    if any(d.packed for d in vm.disks):
        return vm  # compressed members are unpacked by the fetch stage; the guest stage checks them
    g = open_session([(d.source, d.format) for d in vm.disks], readonly=True).g
    try:
        info = inspect(g, vm)
        if info["os_type"] == "windows":
            g.mount_ro(info["root"], "/")
            found = windows_concerns(g, info["root"], inspect_windows(g, info["root"]), fixes)
        elif info["os_type"] == "linux":
            found = linux_concerns(inspect_linux(g, info["root"]))
        elif info["os_type"] == "unknown":
            found = [Concern(id="no-os-found", severity=Severity.warning,
                             message="inspection found no operating system on the disks: validate will fail the VM",
                             remedy="set `guest: false` for this VM in the config to migrate its disks as data")]
        else:
            found = []
        found += firmware_concerns(vm, info) + boot_disk_concerns(vm, info)
    finally:
        g.close()
    return vm.model_copy(update={"concerns": vm.concerns + found})


def inspect_vms(vms: list[VM], fixes: dict, data_only: set[str]) -> list[VM]:
    """Every VM but those marked `guest: false` (`data_only`): their disks are copied as data."""
    return [vm if vm.name in data_only else inspect_vm(vm, fixes) for vm in vms]
