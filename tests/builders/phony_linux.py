"""Phony Linux guests configured like VMware guests, built with libguestfs from files only.

No distro packages: each guest has real partitions, filesystems (fixed UUIDs) and LVM, the
configuration files a VMware-era guest carries (/dev/sda names, 00:50:56 MACs, ens192, open-vm-tools),
a static busybox as /bin/sh and its tools, and small shell stand-ins for dracut, update-initramfs,
grub-mkconfig, dpkg and rpm that append their arguments to CALLS_LOG, so tests can see which of the
guest's own tools a fixer ran. Images are cached under a directory keyed by a hash of the recipe.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from h2k_tasks.appliance import open_session
from tests.builders import phony_recipes as recipes
from tests.builders.cache import cache_dir, locked

CALLS_LOG = recipes.CALLS_LOG
BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "cp", "rm", "mv", "cat", "sed", "grep", "head", "ls", "basename", "touch", "mkdir"]
TOOLS_DIR = Path(__file__).with_name("phony_tools")


def _recipe_key(recipe: dict) -> str:
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(recipes.__file__).read_bytes())
    for tool in sorted(TOOLS_DIR.iterdir()):
        h.update(tool.read_bytes())
    h.update(Path(BUSYBOX).read_bytes())
    return h.hexdigest()[:16]


def build_all(names: list[str] | None = None) -> dict[str, list[Path]]:
    """Disk images (boot disk first) of each guest of `names` (default: all); missing ones built in one launch."""
    names = names or list(recipes.RECIPES)
    wanted = {n: recipes.RECIPES[n]() for n in names}
    out, todo = {}, {}
    with locked("phony-linux"):
        for n, r in wanted.items():
            d = cache_dir() / f"linux-{n}-{_recipe_key(r)}"
            out[n] = [d / f"disk{i}.qcow2" for i in range(len(r["disks"]))]
            if not all(p.exists() for p in out[n]):
                todo[n] = (r, d)
        if todo:
            _build(todo)
    return out


def _build(todo: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix="building-", dir=cache_dir()))
    try:
        _build_in(work, todo)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_in(work: Path, todo: dict) -> None:
    first, drives = {}, []
    for n, (r, _) in todo.items():
        first[n] = len(drives)
        for i, disk in enumerate(r["disks"]):
            path = str(work / f"{n}-{i}.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(disk["mb"] * 1024 * 1024)],
                           check=True)
            drives.append((path, "qcow2"))
    g = open_session(drives, readonly=False).g
    try:
        devices = g.list_devices()
        for n, (r, _) in todo.items():
            _populate(g, r, devices[first[n]:first[n] + len(r["disks"])])
        g.shutdown()
    finally:
        g.close()
    for n, (r, final) in todo.items():
        for stale in cache_dir().glob(f"linux-{n}-*"):  # images of an older recipe
            shutil.rmtree(stale, ignore_errors=True)
        final.mkdir(parents=True, exist_ok=True)
        for i in range(len(r["disks"])):
            os.replace(work / f"{n}-{i}.qcow2", final / f"disk{i}.qcow2")


def _populate(g, r: dict, devices: list[str]) -> None:
    mounts = {}
    for disk, dev in zip(r["disks"], devices):
        g.part_init(dev, disk["table"])
        start = 2048
        for i, part in enumerate(disk["parts"], 1):
            end = -34 if part["mb"] == 0 else start + part["mb"] * 2048 - 1
            g.part_add(dev, "p", start, end)
            start = end + 1
            pdev = f"{dev}{i}"
            if part["fs"] == "lvm":
                g.pvcreate(pdev)
                r_lvm = r["lvm"]
                g.vgcreate(r_lvm["vg"], [pdev])
                for lv in r_lvm["lvs"]:
                    g.lvcreate(lv["name"], r_lvm["vg"], lv["mb"])
                    _mkfs(g, f"/dev/{r_lvm['vg']}/{lv['name']}", lv, mounts)
            else:
                if part["fs"] == "vfat" and disk["table"] == "gpt":
                    g.part_set_gpt_type(dev, i, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
                _mkfs(g, pdev, part, mounts)
    for mp in sorted(mounts, key=len):
        if mp != "/":
            g.mkdir_p(mp)
        g.mount(mounts[mp], mp)
    _files(g, r["files"])
    g.umount_all()
    if "lvm" in r:
        g.vg_activate(False, [r["lvm"]["vg"]])


def _mkfs(g, dev: str, spec: dict, mounts: dict) -> None:
    if spec["fs"] == "swap":
        g.mkswap(dev, uuid=spec["uuid"])
        return
    g.mkfs(spec["fs"], dev)
    if "uuid" in spec:
        g.set_uuid(dev, spec["uuid"])
    mounts[spec["mount"]] = dev


def _files(g, files: list) -> None:
    g.mkdir_p("/bin")
    g.upload(BUSYBOX, "/bin/busybox")
    g.chmod(0o755, "/bin/busybox")
    for applet in APPLETS:
        g.ln_s("busybox", f"/bin/{applet}")
    g.mkdir_p("/var/log")
    g.mkdir_p("/usr/lib/phony")
    g.write("/usr/lib/phony/initrd-virtio.img", initrd(recipes.KERNEL_MODULES_ALL))
    for entry in files:
        kind, path = entry[0], entry[1]
        g.mkdir_p(os.path.dirname(path))
        if kind == "file":
            g.write(path, entry[2].encode())
            g.chmod(entry[3] if len(entry) > 3 else 0o644, path)
        elif kind == "initrd":
            g.write(path, initrd(entry[2]))
        elif kind == "tool":
            g.upload(str(TOOLS_DIR / entry[2]), path)
            g.chmod(0o755, path)
        elif kind == "link":
            g.ln_sf(entry[2], path)


def initrd(members: list[str]) -> bytes:
    """A gzip-compressed newc cpio archive holding empty files named `members`."""
    out = bytearray()
    dirs = sorted({"/".join(m.split("/")[:i]) for m in members for i in range(1, m.count("/") + 1)})
    entries = [(d, 0o040755) for d in dirs] + [(m, 0o100644) for m in members] + [("TRAILER!!!", 0)]
    for ino, (name, mode) in enumerate(entries, 1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, 0, 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode() + raw
        out += b"\0" * (-len(out) % 4)
    return gzip.compress(bytes(out), mtime=0)
