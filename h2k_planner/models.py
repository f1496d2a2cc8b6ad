"""The planner's vocabulary: what a source VM is, and what a Plan asks the workers to do.

Every source kind (VMX, OVF, disk files, vSphere) produces these same models, and everything
downstream (planner, tasks, conductor, reports) speaks only these. JSON Schema for each is
printed by `h2k schema`.
"""
from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Firmware(str, enum.Enum):
    bios = "bios"
    efi = "efi"


class Severity(str, enum.Enum):
    critical = "critical"
    warning = "warning"
    info = "info"


class Concern(Strict):
    """A finding about a VM that a migration engineer should read before the run."""

    id: str
    severity: Severity
    message: str
    remedy: str = ""


class Packed(Strict):
    """Bytes the fetch stage must unpack into the VM's output directory before conversion:
    a gzip'd disk, alone or as a member of an OVA, or any disk of an OVA compressed as a whole."""

    file: str = Field(description="absolute path of the file holding the bytes (a .gz or an .ova)")
    offset: int = Field(0, ge=0, description="where the bytes start in that file")
    size: int = Field(ge=0, description="how many bytes to read (of the member, if one is named)")
    member: str | None = Field(None, description="the member of a zip or compressed-tar OVA holding the bytes, "
                                                 "streamed out of it; None: the bytes lie at offset in file")
    gzip: bool = Field(True, description="the bytes are gzip'd (ovf:compression=\"gzip\")")


class Disk(Strict):
    source: str = Field(description="absolute path of the top of the chain as read by qemu-img "
                                    "(a qemu `json:` image spec for a disk read in place from an OVA)")
    format: str = Field(description="format of the top image as probed from its content")
    virtual_size: int = Field(ge=0, description="guest-visible size in bytes")
    allocated_size: int = Field(default=0, ge=0, description="bytes the chain occupies on disk")
    chain: list[str] = Field(default_factory=list, description="every file read, top first")
    depth: int = Field(1, ge=1, description="images in the backing chain (1: no snapshot deltas)")
    bus: Literal["scsi", "sata", "ide", "nvme", "virtio", "unknown"] = "unknown"
    controller: int = 0
    unit: int = 0
    index: int = Field(0, ge=0, description="the disk's number in the VM (its lane d<N> and output file): "
                                            "bus order, IDE, SATA, SCSI, NVMe, then controller and unit")
    packed: Packed | None = Field(None, description="set when the fetch stage must unpack the source first")


class Nic(Strict):
    mac: str | None = None
    model: str = "unknown"
    network: str = ""
    name: str = ""


class VM(Strict):
    name: str
    firmware: Firmware = Firmware.bios
    secure_boot: bool = False
    guest_os: str = ""
    cpus: int = Field(1, ge=1)
    memory_mib: int = Field(1024, ge=1)
    uuid: str | None = None
    disks: list[Disk]
    nics: list[Nic] = Field(default_factory=list)
    boot_order: list[int] = Field(default_factory=list, description="Disk.index of the disks the source boots "
                                                                    "from, in its order (empty: it does not say)")
    source: str = Field(description="where the VM was read from: a file path or a URL")
    source_kind: str = Field(description="which source module read it: vmx, ovf, disk, vsphere")
    source_host: str | None = Field(None, description="the host its disks are read through, for the "
                                                      "per-source cap (vSphere: 'esx:<ESXi host>')")
    concerns: list[Concern] = Field(default_factory=list)

    @property
    def slug(self) -> str:
        return safe_name(self.name)


OutputFormat = Literal["qcow2", "raw"]


class Output(Strict):
    directory: str = Field(description="absolute directory on the worker host; one sub-directory per VM")
    format: OutputFormat = "qcow2"
    compress: bool = False


class PlannedVM(Strict):
    vm: VM
    host: str = Field(description="worker host the VM is placed on; its tasks go to h2k.host.<host>")
    source_group: str = Field("", description="what the VM reads from, for the per-source concurrency cap: "
                                               "its source host if known, else its datastore or file system")
    stages: list[str] = Field(description="VM-level stages, in order, after every disk's stages")
    disk_stages: list[str] = Field(description="stages each disk goes through, in order")
    fixes: dict = Field(default_factory=dict, description="options for the guest fixers (no secrets)")
    boot_test: bool = Field(True, description="validate boots the outputs and waits for a login prompt")
    boot_timeout: float = Field(900.0, gt=0, description="seconds the boot test waits for proof of userspace")
    two_phase_boot: bool = Field(False, description="first boot on SATA (drivers install), then virtio")
    source_endpoint: dict | None = Field(None, description="the vSphere endpoint fetch and convert read the disks from: "
                                                           "host, user and a secret reference, never a password")
    shutdown_timeout: float | None = Field(None, gt=0, description="vSphere: the fetch stage shuts the VM down "
                                                                  "first, powering it off after this many seconds "
                                                                  "(None: its power state is left alone)")


class Plan(Strict):
    wave: str = Field(description="wave id: the same sources and output give the same id, so a re-run resumes")
    name: str = Field("", description="the wave's name as the operator gave it")
    output: Output
    vms: list[PlannedVM]


class Wave(Strict):
    """A wave as the conductor stores it in Redis."""

    id: str
    created: float
    plan: Plan


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-system-safe form of a VM name, used for its output directory and files."""
    slug = _UNSAFE.sub("_", name).strip("._")
    return slug or "vm"
