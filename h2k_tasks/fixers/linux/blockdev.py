"""Block device names -> UUID= (or PARTUUID=/LABEL=) in fstab, crypttab and kernel command lines.

On KVM disks appear as /dev/vd* (virtio-blk) or in another order, so /dev/sd*, /dev/hd*,
/dev/disk/by-path/* and VMware /dev/disk/by-id/* names stop resolving. LVM (/dev/mapper, /dev/VG/LV)
and md names are stable and left alone, as are GRUB's own `set root='hd0,msdos1'` lines.

A guest name is resolved to an appliance device by (1) the device mounted at the same mountpoint in
the appliance (authoritative: ctx.g has the guest mounted as its fstab says), else (2) its position:
the guest's sdb3 is the appliance's second disk, partition 3 (disks are added in guest order), else
(3) for swap, the only swap filesystem there is. Unresolved names are left and logged.
"""
from __future__ import annotations

import re

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.guestfiles import listdir, read, remove, write

FIXER = "linux.blockdev"
LEGACY = r"/dev/(?:[sh]d[a-z]+\d*|disk/by-path/[^\s\"',]+|disk/by-id/[^\s\"',]*(?:vmware|6000c29)[^\s\"',]*)"
LEGACY_RE = re.compile(rf"^{LEGACY}$", re.I)
CMDLINE_RE = re.compile(rf"\b(root|resume)=({LEGACY})(?=[\s\"']|$)", re.I)
CMDLINE_FILES = ["/etc/default/grub", "/etc/kernel/cmdline", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg",
                 "/boot/extlinux/extlinux.conf", "/boot/extlinux.conf", "/extlinux.conf",
                 "/boot/syslinux/syslinux.cfg", "/boot/syslinux/extlinux.conf", "/syslinux.cfg"]
DEVICE_MAPS = ["/boot/grub/device.map", "/boot/grub2/device.map"]
GRUBENVS = ["/boot/grub2/grubenv", "/boot/grub/grubenv"]  # RHEL 8 keeps `kernelopts=root=...` here


class Resolver:
    """Guest device name -> stable spec (UUID=...), looked up in the appliance."""

    def __init__(self, g, log: list[str]):
        self.g, self.log = g, log
        self.devices = g.list_devices()
        self.partitions = set(g.list_partitions())
        self.mounted = {mp: dev for dev, mp in g.mountpoints().items()}
        self._ids: dict[str, dict] = {}

    def spec(self, name: str, mountpoint: str | None, swap: bool = False) -> str | None:
        dev = self.mounted.get(mountpoint) if mountpoint else None
        dev = dev or self._by_position(name)
        if dev is None and swap:
            swaps = [d for d, t in self.g.list_filesystems().items() if t == "swap"]
            dev = swaps[0] if len(swaps) == 1 else None
        if dev is None:
            self.log.append(f"{FIXER}: cannot tell which disk {name} is; left as it is")
            return None
        if dev not in self._ids:
            self._ids[dev] = self.g.blkid(dev)
        ids = self._ids[dev]
        for key, tag in (("UUID", "UUID"), ("PART_ENTRY_UUID", "PARTUUID"), ("LABEL", "LABEL")):
            if ids.get(key):
                return f"{tag}={ids[key]}"
        self.log.append(f"{FIXER}: {name} ({dev}) has no UUID, PARTUUID or label; left as it is")
        return None

    def _by_position(self, name: str) -> str | None:
        m = re.fullmatch(r"/dev/[sh]d([a-z]+)(\d*)", name)
        if not m:
            return None
        index = 0
        for c in m.group(1):
            index = index * 26 + ord(c) - ord("a") + 1
        if index > len(self.devices):
            return None
        dev = self.devices[index - 1] + m.group(2)
        return dev if not m.group(2) or dev in self.partitions else None


def rewrite_table(text: str, field: int, resolve, with_mountpoint: bool) -> str:
    """Replace legacy names in column `field` of an fstab-like table, keeping spacing and comments."""
    out = []
    for line in text.splitlines(True):
        cols = line.split()
        if len(cols) > field and not line.lstrip().startswith("#") and LEGACY_RE.match(cols[field]):
            mountpoint = cols[1] if with_mountpoint and len(cols) > 1 and cols[1].startswith("/") else None
            spec = resolve(cols[field], mountpoint, with_mountpoint and len(cols) > 2 and cols[2] == "swap")
            if spec:
                line = re.sub(rf"(?<!\S){re.escape(cols[field])}(?!\S)", spec, line, count=1)
        out.append(line)
    return "".join(out)


def rewrite_cmdline(text: str, resolve) -> str:
    """Replace root=/resume= legacy device names on kernel command lines (any config syntax)."""
    def sub(m: re.Match) -> str:
        root = m.group(1).lower() == "root"
        spec = resolve(m.group(2), "/" if root else None, not root)
        return f"{m.group(1)}={spec}" if spec else m.group(0)
    return CMDLINE_RE.sub(sub, text)


def rewrite_grubenv(text: str, resolve) -> str:
    """grubenv is a fixed-size block padded with '#': rewrite, then pad back to the same size."""
    new = rewrite_cmdline(text.rstrip("#"), resolve)
    if len(new) > len(text):
        return text
    return new + "#" * (len(text) - len(new))


def fix(ctx: FixContext) -> list[Change]:
    g, changes = ctx.g, []
    resolver = Resolver(g, ctx.log)
    for path, field, mp in (("/etc/fstab", 0, True), ("/etc/crypttab", 1, False)):
        text = read(g, path)
        if text is not None:
            new = rewrite_table(text, field, resolver.spec, mp)
            changes += write(ctx, FIXER, path, new, "device names -> UUID/PARTUUID/LABEL")
    efi_cfgs = [f"{d}/grub.cfg" for d in listdir(g, "/boot/efi/EFI")]
    for path in CMDLINE_FILES + efi_cfgs + listdir(g, "/boot/loader/entries", ".conf"):
        text = read(g, path)
        if text is not None:
            new = rewrite_cmdline(text, resolver.spec)
            changes += write(ctx, FIXER, path, new, "root=/resume= device names -> UUID/PARTUUID/LABEL")
    for path in GRUBENVS:
        text = read(g, path)
        if text is not None:
            changes += write(ctx, FIXER, path, rewrite_grubenv(text, resolver.spec), "root=/resume= in kernelopts")
    for path in DEVICE_MAPS:
        changes += remove(ctx, FIXER, path, "stale BIOS disk map (GRUB probes disks itself)")
    return changes
