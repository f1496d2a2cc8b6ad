"""A real Debian 12 guest with SELinux enforcing, systemd-networkd, and its boot disk second, as VMware leaves one.

Built with debootstrap like tests/builders/debian_guest.py, on two MBR disks made with libguestfs:
- disk 0, `scsi0:0` on VMware (`/dev/sda`): the root filesystem (ext4), no boot code;
- disk 1, `scsi0:1` (`/dev/sdb`): `/boot` (ext4) and GRUB in its MBR. The VMX boots it through
  `bios.hddOrder = "scsi0:1"`, so the boot disk is not the first in bus order.
fstab and `root=` name device paths (`/dev/sda1`, `/dev/sdb1`). SELinux (Debian's
`selinux-policy-default`) is enforcing (`security=selinux` on the kernel command line) and the
filesystems are labelled, with no relabel pending. The NIC is configured by systemd-networkd: a
`.network` matched by the VMware MAC only (DHCP), the name `ens192` coming from a MAC-matching `.link`.
The initramfs holds the VMware drivers only: no virtio.

Before the login prompt, `h2k-facts.service` (debian_guest.FACTS_FILES) prints the SELinux mode,
whether a relabel is pending, and each interface's state and address to the console.
Cached like the BIOS guest, under a hash of this recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess

from h2k_tasks.appliance import open_session
from tests.builders.debian_guest import (FACTS_FILES, INITRAMFS_MODULES, MIRROR, PRUNED_MODULES, PRUNED_PATHS,
                                         SUITE, cached_guest, configure, debootstrap, guest_files,
                                         initramfs_listing, publish)

NAME = "debian12-selinux-2disk"
PACKAGES = ["linux-image-amd64", "grub-pc", "systemd", "systemd-sysv", "udev", "kmod", "initramfs-tools",
            "iproute2", "dbus", "selinux-policy-default", "policycoreutils", "selinux-utils", "open-vm-tools"]
MAC = "00:50:56:8a:3c:03"
INTERFACE = "ens192"
HOSTNAME = "h2k-deb12-selinux"
ROOT_DEVICE, BOOT_DEVICE = "/dev/sda1", "/dev/sdb1"
HDD_ORDER = "scsi0:1"  # the VMX's bios.hddOrder: the boot disk is the second
ROOT_SIZE, BOOT_SIZE = 2 * 1024**3, 512 * 1024**2
FILE_CONTEXTS = "/etc/selinux/default/contexts/files/file_contexts"
FILES = {
    **guest_files(HOSTNAME, INITRAMFS_MODULES, cmdline=" security=selinux"),
    "etc/fstab": f"{ROOT_DEVICE}\t/\text4\terrors=remount-ro\t0\t1\n{BOOT_DEVICE}\t/boot\text4\tdefaults\t0\t2\n",
    f"etc/systemd/network/10-{INTERFACE}.link": f"[Match]\nMACAddress={MAC}\n\n[Link]\nName={INTERFACE}\n",
    "etc/systemd/network/20-lan.network": f"[Match]\nMACAddress={MAC}\n\n[Network]\nDHCP=ipv4\n",
    **FACTS_FILES,
    "etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=default\n",
}
UNITS = ["systemd-networkd.service", "systemd-networkd-wait-online.service", "h2k-facts.service"]
RECIPE = {"version": 1, "name": NAME, "mirror": MIRROR, "suite": SUITE, "packages": PACKAGES, "mac": MAC,
          "sizes": [ROOT_SIZE, BOOT_SIZE], "modules": INITRAMFS_MODULES, "pruned_modules": PRUNED_MODULES,
          "files": FILES, "units": UNITS, "pruned_paths": PRUNED_PATHS}


@dataclasses.dataclass(frozen=True)
class SelinuxGuest:
    vmdks: list[str]  # disk 0 (root), disk 1 (/boot and the boot code)
    mac: str
    interface: str
    hostname: str
    kernel: str
    firmware: str


def build_selinux_guest() -> SelinuxGuest:
    """The cached guest, building it first if this machine has none (minutes, once)."""
    final, facts = cached_guest(NAME, RECIPE, _build)
    return SelinuxGuest(vmdks=[os.path.join(final, v) for v in facts.pop("vmdks")], **facts)


def _build(work: str, root: str, final: str) -> None:
    debootstrap(root, PACKAGES)
    kernel = configure(root, FILES)
    subprocess.run(["chroot", root, "systemctl", "enable", *UNITS], check=True, capture_output=True)
    initramfs_listing(root, kernel, ["vmw_pvscsi", "ahci", "ext4"])
    vmdks = [f"{NAME}-root.vmdk", f"{NAME}-boot.vmdk"]
    publish(work, root, _make_disks, final, {
        "vmdks": vmdks, "mac": MAC, "interface": INTERFACE, "hostname": HOSTNAME, "kernel": kernel,
        "firmware": "bios"}, vmdks)


def _make_disks(tarball: str, raws: list[str]) -> None:
    for raw, size in zip(raws, (ROOT_SIZE, BOOT_SIZE)):
        with open(raw, "wb") as f:
            f.truncate(size)
    g = open_session([(raw, "raw") for raw in raws], readonly=False).g
    try:
        root_dev, boot_dev = g.list_devices()[:2]
        for dev in (root_dev, boot_dev):
            g.part_init(dev, "msdos")
            g.part_add(dev, "p", 2048, -1)
            g.mkfs("ext4", f"{dev}1")
        g.part_set_bootable(boot_dev, 1, True)
        g.mount(f"{root_dev}1", "/")
        g.mkdir_p("/boot")
        g.mount(f"{boot_dev}1", "/boot")
        g.tar_in(tarball, "/")
        # The appliance's kernel names these disks as it likes; grub goes on the one holding /boot,
        # and grub.cfg names the root as the guest sees it on VMware (scsi0:0 = sda).
        disk = g.command(["sh", "-c", 'lsblk -no PKNAME "$(findmnt -no SOURCE /boot)"']).strip()
        root_part = g.command(["findmnt", "-no", "SOURCE", "/"]).strip()
        g.command(["grub-install", "--target=i386-pc", f"/dev/{disk}"])
        g.command(["update-grub"])
        grub_cfg = re.sub(rf"root={re.escape(root_part)} ", f"root={ROOT_DEVICE} ", g.cat("/boot/grub/grub.cfg"))
        if f"root={ROOT_DEVICE} " not in grub_cfg or "security=selinux" not in grub_cfg:
            raise RuntimeError(f"grub.cfg does not boot root={ROOT_DEVICE} with security=selinux")
        g.write("/boot/grub/grub.cfg", grub_cfg)
        # Labelled as a running enforcing system leaves its files: every file has its context.
        g.command(["setfiles", "-F", "-e", "/proc", "-e", "/sys", "-e", "/dev", "-e", "/run", FILE_CONTEXTS, "/"])
        label = g.getxattr("/etc/fstab", "security.selinux")
        if "system_u:object_r:etc_t" not in (label.decode(errors="replace") if isinstance(label, bytes) else label):
            raise RuntimeError("setfiles did not label /etc/fstab etc_t")
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


if __name__ == "__main__":
    print(json.dumps(dataclasses.asdict(build_selinux_guest()), indent=1))
