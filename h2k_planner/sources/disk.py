"""Bare disk images (qcow2, VHD, VHDX, VDI, VMDK, raw): one disk becomes one VM named after the
file, with defaults stated as Info concerns. The format comes from the content, never the name."""
from __future__ import annotations

import os
import struct

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Disk, Nic, Severity
from h2k_planner.probe import detect_format, qemu_img_info
from h2k_planner.sources.qcow2 import qcow2_chain
from h2k_planner.sources.scope import Scope, check_size
from h2k_planner.sources.vmdk import vmdk_disk

DISK_EXTENSIONS = {".qcow2", ".qcow", ".vhd", ".vhdx", ".vdi", ".vmdk", ".img", ".raw"}
_VHD_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}


def image_disk(path: str, scope: Scope, **placement) -> tuple[Disk, list[Concern]]:
    """A Disk for any single image file (the top of its chain), and what was found about it."""
    path = os.path.abspath(path)
    fmt = detect_format(path)
    if fmt == "vmdk":
        return vmdk_disk(path, scope, **placement), []
    concerns: list[Concern] = []
    files = [(path, fmt)]
    if fmt == "qcow2":
        files, headers = qcow2_chain(path, scope)
        for (f, _), h in zip([x for x in files if x[1] != "data-file"], headers):
            check_size(f, h.size, "declared size")
        if any(h.encrypted for h in headers):
            concerns.append(encrypted_disk(os.path.basename(path)))
    elif fmt == "vpc":
        _check_vhd(path)
    chain = [f for f, kind in files if kind != "data-file"]
    info = qemu_img_info(path, fmt)
    if len(info) != len(chain):
        raise InputError(path, f"qemu-img sees a chain of {len(info)} images, the headers say {len(chain)}")
    size = check_size(path, int(info[0]["virtual-size"]), "virtual size")
    if fmt == "raw" and size != os.path.getsize(path):
        raise InputError(path, "raw image size changed while reading it")
    if len(chain) > 1:
        concerns.append(Concern(
            id="snapshot-chain", severity=Severity.info,
            message=f"{os.path.basename(path)} has {len(chain) - 1} backing image(s); the migration flattens them",
            remedy="none needed"))
    disk = Disk(source=path, format=fmt, virtual_size=size,
                allocated_size=sum(int(layer.get("actual-size", 0)) for layer in info),
                chain=[f for f, _ in files], depth=len(chain), **placement)
    return disk, concerns


def encrypted_disk(name: str) -> Concern:
    return Concern(id="encrypted-disk", severity=Severity.critical,
                   message=f"{name} is an encrypted qcow2; it cannot be converted without its key",
                   remedy="decrypt it with qemu-img convert --object secret,... first")


def _check_vhd(path: str) -> None:
    """Refuse differencing VHDs and fixed VHDs whose footer declares more than the file holds."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, file_size - 512))
        footer = f.read(512)
        if not footer.startswith(b"conectix"):
            f.seek(0)
            footer = f.read(512)
    if len(footer) < 64:
        raise InputError(path, "VHD footer is truncated")
    current_size, = struct.unpack_from(">Q", footer, 48)
    disk_type, = struct.unpack_from(">I", footer, 60)
    kind = _VHD_TYPES.get(disk_type)
    if kind is None:
        raise InputError(path, f"VHD disk type {disk_type} is unknown")
    if kind == "differencing":
        raise InputError(path, "differencing VHD: merge it into its parent in Hyper-V first")
    check_size(path, current_size, "declared size")
    if kind == "fixed" and current_size > file_size - 512:
        raise InputError(path, f"fixed VHD declares {current_size} bytes but the file holds {file_size - 512}")


def load_disk_image(path: str, allow: tuple[str, ...] = ()) -> VM:
    path = os.path.abspath(path)
    disk, concerns = image_disk(path, Scope.of(path, allow))
    name = os.path.splitext(os.path.basename(path))[0]
    concerns.append(Concern(
        id="bare-disk-defaults", severity=Severity.info,
        message=f"a bare {disk.format} disk: VM {name!r} gets the firmware its boot disk shows (BIOS if it shows "
                "none), 1 vCPU, 1024 MiB, one virtio NIC on the default network with a new MAC",
        remedy="edit the generated libvirt XML if the guest needs other hardware"))
    return VM(name=name, disks=[disk], nics=[Nic(mac=None, network="default")], source=path, source_kind="disk",
              concerns=concerns)
