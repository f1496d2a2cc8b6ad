"""guest: one libguestfs session over all of a VM's converted disks.

Inspects the guest OS (type, distro, version, root, mountpoints, firmware as the disks show it)
for the report and for the fixers.
"""
from __future__ import annotations

import os

from h2k_planner.models import VM
from h2k_tasks.accel import libguestfs_env
from h2k_tasks.stages import StageFailed

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def open_session(paths: list[str], fmt: str, readonly: bool):
    import guestfs

    os.environ.update(libguestfs_env())
    g = guestfs.GuestFS(python_return_dict=True)
    for path in paths:
        g.add_drive_opts(path, format=fmt, readonly=readonly)
    g.launch()
    return g


def detect_firmware(g) -> str:
    """'efi' when the boot disk has a GPT with an EFI System Partition, else 'bios'."""
    dev = g.list_devices()[0]
    try:
        if g.part_get_parttype(dev) != "gpt":
            return "bios"
        for p in g.part_list(dev):
            if g.part_get_gpt_type(dev, p["part_num"]).upper() == ESP_GUID:
                return "efi"
    except RuntimeError:
        return "bios"
    return "bios"


def inspect(g) -> dict:
    roots = g.inspect_os()
    if not roots:
        return {"os_type": "unknown", "firmware": detect_firmware(g), "roots": []}
    if len(roots) > 1:
        raise StageFailed(f"multi-boot guest: {len(roots)} operating systems found ({', '.join(roots)})")
    root = roots[0]
    return {
        "os_type": g.inspect_get_type(root),
        "distro": g.inspect_get_distro(root),
        "product_name": g.inspect_get_product_name(root),
        "version": f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root)}",
        "arch": g.inspect_get_arch(root),
        "hostname": g.inspect_get_hostname(root),
        "package_format": g.inspect_get_package_format(root),
        "root": root,
        "mountpoints": dict(sorted(g.inspect_get_mountpoints(root).items())),
        "firmware": detect_firmware(g),
    }


def guest_stage(vm: VM, outputs: list[str], fmt: str) -> dict:
    g = open_session(outputs, fmt, readonly=True)
    try:
        return {"inspection": inspect(g)}
    finally:
        g.shutdown()
        g.close()
