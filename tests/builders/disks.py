"""Disk images from file trees, without root, loop devices or libguestfs.

An ext4 filesystem is made from a directory with `mkfs.ext4 -d`, edited in place with `debugfs`,
and laid into a partitioned raw disk (MBR by `sfdisk`) by copying only its non-zero blocks.
"""
from __future__ import annotations

import os
import subprocess
import tempfile

MIB = 1024 * 1024
BLOCK = 64 * 1024


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def write_tree(root: str, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = os.path.join(root, rel.lstrip("/"))
        if rel.endswith("/"):
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)


def make_ext4(path: str, size_mib: int, files: dict[str, str | bytes], uuid: str, label: str = "") -> None:
    """An ext4 image of `size_mib` holding `files` (paths ending in / are directories)."""
    with tempfile.TemporaryDirectory() as tree:
        write_tree(tree, files)
        with open(path, "wb") as f:
            f.truncate(size_mib * MIB)
        cmd = ["mkfs.ext4", "-q", "-F", "-U", uuid, "-E", f"hash_seed={uuid}", "-d", tree]
        if label:
            cmd += ["-L", label]
        run(cmd + [path], env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})


def debugfs_write(fs_image: str, files: dict[str, str | bytes]) -> None:
    """Add or replace files in an ext4 image (the parent directories must exist)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = []
        for i, (rel, content) in enumerate(files.items()):
            local = os.path.join(tmp, f"f{i}")
            with open(local, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
            script += [f"rm {rel}", f"write {local} {rel}"]
        cmds = os.path.join(tmp, "cmds")
        with open(cmds, "w") as f:
            f.write("\n".join(script) + "\n")
        run(["debugfs", "-w", "-f", cmds, fs_image], env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})


def copy_sparse(src: str, dst, offset: int) -> None:
    """Copy `src` into the open file `dst` at `offset`, skipping all-zero blocks."""
    zero = bytes(BLOCK)
    with open(src, "rb") as f:
        pos = 0
        while chunk := f.read(BLOCK):
            if chunk != zero[: len(chunk)]:
                dst.seek(offset + pos)
                dst.write(chunk)
            pos += len(chunk)


def mbr_disk(path: str, size_mib: int, partitions: list[str], disk_id: str = "0x4832b00c") -> None:
    """A raw MBR disk with each image in `partitions` as a primary partition, the first bootable."""
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    start = MIB
    layout = ["label: dos", f"label-id: {disk_id}"]
    spans = []
    for n, image in enumerate(partitions):
        size = os.path.getsize(image)
        layout.append(f"start={start // 512}, size={size // 512}, type=83" + (", bootable" if n == 0 else ""))
        spans.append((image, start))
        start += size
    if start > size_mib * MIB:
        raise ValueError(f"{size_mib} MiB is too small for the partitions")
    run(["sfdisk", "-q", path], input="\n".join(layout) + "\n")
    with open(path, "r+b") as f:
        for image, at in spans:
            copy_sparse(image, f, at)


def vmdk_chain(layers: list[str], out_dir: str, stem: str) -> list[str]:
    """VMDKs for raw `layers` (base first): the base whole, each later layer a delta holding only
    what differs from the layer below, linked by parentFileNameHint and CID/parentCID. Returns the
    VMDK paths, base first; the last one is the top of the chain."""
    os.makedirs(out_dir, exist_ok=True)
    layers = [os.path.abspath(layer) for layer in layers]
    paths = [f"{stem}.vmdk"] + [f"{stem}-{n:06d}.vmdk" for n in range(1, len(layers))]
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", layers[0], paths[0]], cwd=out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(1, len(layers)):
            delta = os.path.join(tmp, f"delta{n}.qcow2")
            # A qcow2 over the new layer, rebased onto the old one, holds exactly the difference.
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(layers[n]), "-F", "raw", delta])
            run(["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", os.path.abspath(layers[n - 1]), "-F", "raw", delta])
            run(["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-B", paths[n - 1], "-F", "vmdk", delta, paths[n]],
                cwd=out_dir)
    return [os.path.join(out_dir, p) for p in paths]


def patterned_raw(path: str, size_mib: int, data_mib: int) -> None:
    """A raw disk whose first `data_mib` MiB hold non-zero data (every MiB distinct), the rest a hole."""
    seed = os.urandom(MIB)
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
        for n in range(data_mib):
            f.write(n.to_bytes(8, "little") + seed[8:])
