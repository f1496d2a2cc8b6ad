"""Preflight concerns for a vSphere VM: what blocks or degrades a cold migration of it."""
from __future__ import annotations

from h2k_planner.models import Concern, Severity
from h2k_planner.sources.vsphere_records import VsphereVM

# Guest families KVM/virt-v2v style conversion cannot make boot (guest id prefixes).
_UNSUPPORTED_GUESTS = ("darwin", "netware", "solaris", "os2", "dos", "win31", "win95", "win98", "winMe",
                       "winNT", "win2000", "vmkernel", "eComStation", "unixWare", "openServer", "sco")


def concerns(vm: VsphereVM) -> list[Concern]:
    found: list[Concern] = []

    def add(id_: str, severity: Severity, message: str, remedy: str) -> None:
        found.append(Concern(id=f"vsphere.{id_}", severity=severity, message=message, remedy=remedy))

    if vm.power_state != "poweredOff":
        add("powered-on", Severity.critical, f"the VM is {vm.power_state}: its disks are locked and changing",
            "shut the guest down cleanly before the run")
    if vm.snapshots:
        add("snapshots", Severity.critical,
            f"{len(vm.snapshots)} snapshot(s) ({', '.join(vm.snapshots)}): every disk is a delta chain, "
            "and delta chains are not streamed",
            "delete or consolidate the snapshots so each disk is one file on its datastore")
    for disk in vm.disks:
        if disk.backing.startswith("RawDisk") or disk.provisioning.startswith("rdm"):
            add("rdm", Severity.critical, f"{disk.label} is a raw device mapping ({disk.file})",
                "migrate the LUN's data separately or convert the RDM to a virtual disk (Storage vMotion)")
        elif disk.mode.startswith("independent"):
            add("independent-disk", Severity.warning, f"{disk.label} is {disk.mode}: snapshots skip it"
                + (" and changes are discarded at power off" if disk.mode.endswith("nonpersistent") else ""),
                "set the disk mode to dependent (persistent) or accept copying it as it is")
        if disk.sharing == "sharingMultiWriter":
            add("shared-disk", Severity.critical, f"{disk.label} is multi-writer shared with other VMs",
                "migrate the cluster as a whole, or detach the shared disk and move its data separately")
    if vm.encrypted or any(d.encrypted for d in vm.disks):
        add("encrypted", Severity.critical, "the VM or its disks are vSphere-encrypted: the files read as ciphertext",
            "decrypt the VM (remove the encryption storage policy) before the run")
    if vm.vtpm:
        add("vtpm", Severity.warning, "the VM has a virtual TPM: its sealed keys (e.g. BitLocker) do not move",
            "suspend BitLocker or note the recovery keys; the target gets a fresh TPM")
    if not vm.cbt:
        add("cbt-off", Severity.info, "changed block tracking is off: only full cold copies are possible",
            "enable CBT (ctkEnabled) if warm, incremental copies are wanted")
    family = vm.guest_id
    if family.startswith(_UNSUPPORTED_GUESTS):
        add("guest-unsupported", Severity.critical, f"guest id {family!r} has no KVM conversion support",
            "rebuild the workload on a supported OS or leave it on vSphere")
    elif not family or family.startswith("other"):
        add("guest-unknown", Severity.warning, f"guest id {family or 'unset'!r} says nothing about the OS",
            "the guest is inspected after conversion; set the correct guest OS in vSphere to plan ahead")
    return found
