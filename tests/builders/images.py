"""Disk images of every supported kind, converted with qemu-img from raw files, and VMDK
descriptors qemu-img cannot create (vmfs, vmfsThin) written as VMware writes them."""
from __future__ import annotations

import os
import shutil
import struct

from tests.builders.disks import run

VMDK_SUBFORMATS = ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
                   "streamOptimized"]


def convert(raw: str, dest: str, fmt: str, *opts: str) -> str:
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, *opts, raw, dest])
    return dest


def vmfs_descriptor(raw: str, out_dir: str, stem: str, create_type: str = "vmfs") -> str:
    """`<stem>.vmdk` (an ESXi descriptor) and `<stem>-flat.vmdk` (a copy of `raw`)."""
    shutil.copyfile(raw, os.path.join(out_dir, f"{stem}-flat.vmdk"))
    sectors = os.path.getsize(raw) // 512
    text = (f'# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=fffffffe\nparentCID=ffffffff\n'
            f'createType="{create_type}"\n\n# Extent description\nRW {sectors} VMFS "{stem}-flat.vmdk"\n\n'
            f'# The Disk Data Base\n#DDB\n\nddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "19"\n'
            f'ddb.thinProvisioned = "{1 if create_type == "vmfsThin" else 0}"\n')
    path = os.path.join(out_dir, f"{stem}.vmdk")
    with open(path, "w") as f:
        f.write(text)
    return path


def vmfs_sparse_chain(raw: str, out_dir: str, stem: str, sector: int = 5) -> str:
    """An ESXi snapshot: a vmfs base holding `raw` with one sector zeroed, and a vmfsSparse (COWD)
    delta holding that sector, so the chain reads exactly `raw`. Returns the delta's descriptor."""
    base = vmfs_descriptor(raw, out_dir, f"{stem}-base")
    with open(os.path.join(out_dir, f"{stem}-base-flat.vmdk"), "r+b") as f:
        f.seek(sector * 512)
        f.write(bytes(512))
    with open(raw, "rb") as f:
        f.seek(sector * 512)
        grain = f.read(512)
    sectors = os.path.getsize(raw) // 512
    l1_size = -(-sectors // 4096)  # one L2 table of 4096 one-sector grains per L1 entry
    l2_at = 4 + l1_size
    grain_at = l2_at + 32
    delta = bytearray((grain_at + 1) * 512)
    struct.pack_into("<4s10I", delta, 0, b"COWD", 1, 3, sectors, 1, 4, l1_size, grain_at + 1, 0, 0, 0)
    struct.pack_into("<I", delta, 4 * 512, l2_at)
    struct.pack_into("<I", delta, l2_at * 512 + sector * 4, grain_at)
    delta[grain_at * 512:] = grain
    with open(os.path.join(out_dir, f"{stem}-delta.vmdk"), "wb") as f:
        f.write(delta)
    path = os.path.join(out_dir, f"{stem}.vmdk")
    with open(path, "w") as f:
        f.write(f'# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=22222222\nparentCID=fffffffe\n'
                f'createType="vmfsSparse"\nparentFileNameHint="{os.path.basename(base)}"\n\n# Extent description\n'
                f'RW {sectors} VMFSSPARSE "{stem}-delta.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
                f'ddb.adapterType = "lsilogic"\n')
    return path


def vmdk_variants(raws: list[str], out_dir: str) -> list[str]:
    """One VMDK per raw, cycling through every subformat qemu-img writes, then vmfs, vmfsThin and a
    vmfsSparse snapshot over a vmfs base."""
    kinds = VMDK_SUBFORMATS + ["vmfs", "vmfsThin", "vmfsSparse"]
    paths = []
    for n, (raw, kind) in enumerate(zip(raws, kinds)):
        stem = f"d{n}-{kind}"
        if kind in VMDK_SUBFORMATS:
            paths.append(convert(raw, os.path.join(out_dir, f"{stem}.vmdk"), "vmdk", "-o", f"subformat={kind}"))
        elif kind == "vmfsSparse":
            paths.append(vmfs_sparse_chain(raw, out_dir, stem))
        else:
            paths.append(vmfs_descriptor(raw, out_dir, stem, kind))
    return paths


def bare_images(raws: list[str], out_dir: str) -> dict[str, str]:
    """{VM name: image path}: dynamic and fixed VHD, VHDX, VDI, raw, and a qcow2 over a qcow2
    backing file (the top holds the raw's second half, the backing file its first)."""
    os.makedirs(out_dir, exist_ok=True)
    made = {
        "dyn": convert(raws[0], os.path.join(out_dir, "dyn.vhd"), "vpc", "-o", "subformat=dynamic"),
        "fixed": convert(raws[1], os.path.join(out_dir, "fixed.vhd"), "vpc", "-o", "subformat=fixed,force_size=on"),
        "hyperv": convert(raws[2], os.path.join(out_dir, "hyperv.vhdx"), "vhdx"),
        "vbox": convert(raws[3], os.path.join(out_dir, "vbox.vdi"), "vdi"),
        "plain": shutil.copyfile(raws[4], os.path.join(out_dir, "plain.img")),
    }
    convert(raws[5], os.path.join(out_dir, "base.qcow2"), "qcow2")
    top = os.path.join(out_dir, "top.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top])
    size = os.path.getsize(raws[5])
    run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {size // 2} {size // 4}", top])
    made["top"] = top
    return made
