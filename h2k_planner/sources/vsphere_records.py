"""What the vSphere inventory says about one VM, decoded from PropertyCollector results.

`VsphereVM` keeps the vSphere-only facts (moref, folder, power state, disk modes, snapshots, CBT)
that h2k_planner.models.VM has no place for; the concerns and the VM mapping are computed from it.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pyVmomi import vim

# Every property one RetrievePropertiesEx asks for, per VM.
VM_PROPERTIES = [
    "name", "parent", "runtime.powerState", "config.guestId", "config.firmware",
    "config.bootOptions.efiSecureBootEnabled", "config.bootOptions.bootOrder", "config.hardware.numCPU", "config.hardware.memoryMB",
    "config.hardware.device", "config.uuid", "config.changeTrackingEnabled", "config.keyId",
    "config.template", "snapshot", "runtime.host",
]

_BUS = {
    vim.vm.device.VirtualSCSIController: "scsi",
    vim.vm.device.VirtualAHCIController: "sata",
    vim.vm.device.VirtualIDEController: "ide",
    vim.vm.device.VirtualNVMEController: "nvme",
}


class VsphereDisk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str
    file: str = Field(description="datastore path of the top file: '[datastore] dir/name.vmdk'")
    datastore: str
    capacity: int = Field(ge=0, description="bytes")
    bus: str
    controller_type: str = Field(description="vSphere controller class, e.g. ParaVirtualSCSIController")
    controller: int = Field(description="bus number of the controller")
    unit: int
    mode: str = Field(description="persistent, independent_persistent, independent_nonpersistent, ...")
    sharing: str = Field(description="sharingNone or sharingMultiWriter")
    backing: str = Field(description="backing class, e.g. FlatVer2, SeSparse, RawDiskMappingVer1")
    provisioning: str = Field(description="thin, thick, eagerZeroedThick, or rdm-physical/rdm-virtual")
    encrypted: bool = False
    chain: list[str] = Field(description="the file and its snapshot parents, top first")


class VsphereNic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str
    mac: str | None
    type: str = Field(description="vmxnet3, e1000e, e1000, ...")
    network: str


class VsphereVM(BaseModel):
    model_config = ConfigDict(extra="forbid")

    moref: str
    name: str
    esx_host: str = Field("", description="the ESXi host the VM is registered on, '' if none")
    folder: str = Field(description="folder path below the datacenter's VM folder, '' at its top")
    power_state: str
    guest_id: str
    firmware: str
    secure_boot: bool
    cpus: int
    memory_mib: int
    uuid: str | None
    template: bool
    disks: list[VsphereDisk]
    nics: list[VsphereNic]
    boot_disks: list[int] = Field(default_factory=list, description="positions in `disks` of the disks "
                                                                    "config.bootOptions.bootOrder names, in order")
    snapshots: list[str] = Field(description="snapshot names, depth first")
    cbt: bool
    encrypted: bool
    vtpm: bool

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name


def decode_vm(moref: str, props: dict[str, Any], folders: dict[str, str],
              portgroups: dict[str, str], hosts: dict[str, str]) -> VsphereVM:
    """One VM from its properties; `folders` maps folder moref to path, `portgroups` key to name,
    `hosts` ESXi host moref to name."""
    devices = props.get("config.hardware.device") or []
    controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualController)}
    parent = props.get("parent")
    host = props.get("runtime.host")
    disk_keys = [d.key for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    boot_keys = [b.deviceKey for b in props.get("config.bootOptions.bootOrder") or []
                 if isinstance(b, vim.vm.BootOptions.BootableDiskDevice)]
    return VsphereVM(
        moref=moref,
        name=props["name"],
        esx_host=hosts.get(host._moId, host._moId) if host is not None else "",
        folder=folders.get(parent._moId, "") if parent is not None else "",
        power_state=str(props.get("runtime.powerState") or "unknown"),
        guest_id=props.get("config.guestId") or "",
        firmware=props.get("config.firmware") or "bios",
        secure_boot=bool(props.get("config.bootOptions.efiSecureBootEnabled")),
        cpus=max(1, props.get("config.hardware.numCPU") or 1),
        memory_mib=max(1, props.get("config.hardware.memoryMB") or 1),
        uuid=props.get("config.uuid"),
        template=bool(props.get("config.template")),
        disks=[_disk(d, controllers) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)],
        nics=[_nic(d, portgroups) for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)],
        boot_disks=[disk_keys.index(k) for k in boot_keys if k in disk_keys],
        snapshots=_snapshot_names(props.get("snapshot")),
        cbt=bool(props.get("config.changeTrackingEnabled")),
        encrypted=props.get("config.keyId") is not None,
        vtpm=any(isinstance(d, vim.vm.device.VirtualTPM) for d in devices),
    )


def _disk(disk: Any, controllers: dict[int, Any]) -> VsphereDisk:
    backing = disk.backing
    controller = controllers.get(disk.controllerKey)
    bus = next((name for cls, name in _BUS.items() if isinstance(controller, cls)), "unknown")
    file = getattr(backing, "fileName", "") or ""
    chain, parent = [file], getattr(backing, "parent", None)
    while parent is not None:
        chain.append(parent.fileName)
        parent = getattr(parent, "parent", None)
    return VsphereDisk(
        label=disk.deviceInfo.label if disk.deviceInfo else f"disk-{disk.key}",
        file=file,
        datastore=_datastore_of(file),
        capacity=disk.capacityInBytes or (disk.capacityInKB or 0) * 1024,
        bus=bus,
        controller_type=type(controller).__name__.rsplit(".", 1)[-1] if controller else "unknown",
        controller=getattr(controller, "busNumber", 0) or 0,
        unit=disk.unitNumber or 0,
        mode=getattr(backing, "diskMode", "") or "persistent",
        sharing=getattr(backing, "sharing", None) or "sharingNone",
        backing=type(backing).__name__.rsplit(".", 1)[-1].removesuffix("BackingInfo"),
        provisioning=_provisioning(backing),
        encrypted=getattr(backing, "keyId", None) is not None,
        chain=chain,
    )


def _provisioning(backing: Any) -> str:
    if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
        return f"rdm-{backing.compatibilityMode.removesuffix('Mode')}" if backing.compatibilityMode else "rdm"
    if getattr(backing, "thinProvisioned", False):
        return "thin"
    return "eagerZeroedThick" if getattr(backing, "eagerlyScrub", False) else "thick"


def _nic(nic: Any, portgroups: dict[str, str]) -> VsphereNic:
    backing = nic.backing
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        network = portgroups.get(backing.port.portgroupKey, backing.port.portgroupKey)
    elif isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        network = backing.opaqueNetworkId
    else:
        network = getattr(backing, "deviceName", "") or ""
    return VsphereNic(
        label=nic.deviceInfo.label if nic.deviceInfo else f"nic-{nic.key}",
        mac=nic.macAddress or None,
        type=type(nic).__name__.rsplit(".", 1)[-1].removeprefix("Virtual").lower(),
        network=network,
    )


def _snapshot_names(info: Any) -> list[str]:
    names: list[str] = []
    stack = list(reversed(info.rootSnapshotList)) if info is not None else []
    while stack:
        node = stack.pop()
        names.append(node.name)
        stack.extend(reversed(node.childSnapshotList or []))
    return names


def _datastore_of(file: str) -> str:
    return file[1:file.index("]")] if file.startswith("[") and "]" in file else ""
