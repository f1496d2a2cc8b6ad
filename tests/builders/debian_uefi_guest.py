"""A real UEFI Debian 12 guest as VMware leaves one: GPT, ESP, /boot, root on LVM with XFS, a static address.

Built with debootstrap like tests/builders/debian_guest.py, on a GPT disk made with libguestfs: an
EFI System Partition (`/boot/efi`, vfat), `/boot` (ext4), and an LVM physical volume holding
`vg0/root` (XFS). fstab names them by device path (`/dev/sda1`, `/dev/sda2`, `/dev/mapper/vg0-root`).
GRUB is installed for x86_64-efi into `EFI/debian/` only, with no NVRAM entry and no fallback
`EFI/BOOT/BOOTX64.EFI`: a VMware VM boots from its NVRAM entry, which a fresh OVMF does not have.
NetworkManager holds a static address on `ens192` in a keyfile pinned to the VMware MAC (the NIC is
named `ens192` by a MAC-matching `.link`, as VMware's slot naming would), and the initramfs holds the
VMware drivers, XFS and device-mapper: no virtio. `/etc/issue` prints the address, after
NetworkManager-wait-online.

The address is QEMU user networking's: 10.0.2.50/24 via 10.0.2.2, so the boot test's NIC can carry it.
Cached like the BIOS guest, under a hash of this recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os

from h2k_tasks.appliance import open_session
from tests.builders.debian_guest import (INITRAMFS_MODULES, MIRROR, PRUNED_MODULES, PRUNED_PATHS, SUITE,
                                         cached_guest, configure, debootstrap, guest_files, initramfs_listing,
                                         publish)

NAME = "debian12-uefi-lvm"
PACKAGES = ["linux-image-amd64", "grub-efi-amd64", "systemd", "systemd-sysv", "udev", "kmod", "initramfs-tools",
            "lvm2", "xfsprogs", "dbus", "libpam-systemd", "network-manager", "open-vm-tools"]
MAC = "00:50:56:8a:3c:02"
INTERFACE = "ens192"
HOSTNAME = "h2k-deb12-uefi"
ADDRESS = "10.0.2.50"
DISK_SIZE = 3 * 1024**3
ESP_MB, BOOT_MB = 64, 256
MODULES = INITRAMFS_MODULES + ["xfs", "dm_mod"]
KEYFILE = f"etc/NetworkManager/system-connections/{INTERFACE}.nmconnection"
FILES = {
    **guest_files(HOSTNAME, MODULES, uuid_in_grub=True),
    "etc/fstab": ("/dev/mapper/vg0-root\t/\txfs\tdefaults\t0\t1\n/dev/sda2\t/boot\text4\tdefaults\t0\t2\n"
                  "/dev/sda1\t/boot/efi\tvfat\tumask=0077\t0\t1\n"),
    KEYFILE: (f"[connection]\nid={INTERFACE}\nuuid=8b0b3a2e-5d3c-4f8e-9a61-2f1f3c0d9e01\ntype=ethernet\n"
              f"interface-name={INTERFACE}\n\n[ethernet]\nmac-address={MAC.upper()}\n\n"
              f"[ipv4]\nmethod=manual\naddress1={ADDRESS}/24,10.0.2.2\ndns=10.0.2.3;\n\n[ipv6]\nmethod=disabled\n"),
    f"etc/systemd/network/10-{INTERFACE}.link": f"[Match]\nMACAddress={MAC}\n\n[Link]\nName={INTERFACE}\n",
    "etc/systemd/system/serial-getty@ttyS0.service.d/h2k-after-network.conf":
        "[Unit]\nWants=network-online.target\nAfter=network-online.target\n",
}
RECIPE = {"version": 1, "name": NAME, "mirror": MIRROR, "suite": SUITE, "packages": PACKAGES, "mac": MAC,
          "disk_size": DISK_SIZE, "esp_mb": ESP_MB, "boot_mb": BOOT_MB, "modules": MODULES,
          "pruned_modules": PRUNED_MODULES, "files": FILES, "pruned_paths": PRUNED_PATHS}


@dataclasses.dataclass(frozen=True)
class UefiGuest:
    vmdk: str
    mac: str
    interface: str
    address: str
    hostname: str
    kernel: str
    firmware: str
    virtual_size: int


def build_uefi_guest() -> UefiGuest:
    """The cached guest, building it first if this machine has none (minutes, once)."""
    final, facts = cached_guest(NAME, RECIPE, _build)
    return UefiGuest(vmdk=os.path.join(final, facts.pop("vmdk")), **facts)


def _build(work: str, root: str, final: str) -> None:
    debootstrap(root, PACKAGES)
    kernel = configure(root, FILES, private=(KEYFILE,))
    initramfs_listing(root, kernel, ["vmw_pvscsi", "ahci", "xfs", "dm-mod"])
    publish(work, root, _make_disk, final, {
        "vmdk": f"{NAME}.vmdk", "mac": MAC, "interface": INTERFACE, "address": ADDRESS, "hostname": HOSTNAME,
        "kernel": kernel, "firmware": "efi", "virtual_size": DISK_SIZE}, [f"{NAME}.vmdk"])


def _make_disk(tarball: str, raws: list[str]) -> None:
    (raw,) = raws
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    g = open_session([(raw, "raw")], readonly=False).g
    try:
        dev = "/dev/sda"
        g.part_init(dev, "gpt")
        g.part_add(dev, "p", 2048, 2048 + ESP_MB * 2048 - 1)
        g.part_add(dev, "p", 2048 + ESP_MB * 2048, 2048 + (ESP_MB + BOOT_MB) * 2048 - 1)
        g.part_add(dev, "p", 2048 + (ESP_MB + BOOT_MB) * 2048, -34)
        g.part_set_gpt_type(dev, 1, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
        g.mkfs("vfat", f"{dev}1")
        g.mkfs("ext4", f"{dev}2")
        g.pvcreate(f"{dev}3")
        g.vgcreate("vg0", [f"{dev}3"])
        g.lvcreate_free("root", "vg0", 100)
        g.mkfs("xfs", "/dev/vg0/root")
        g.mount("/dev/vg0/root", "/")
        g.mkdir("/boot")
        g.mount(f"{dev}2", "/boot")
        g.mkdir("/boot/efi")
        g.mount(f"{dev}1", "/boot/efi")
        g.tar_in(tarball, "/")
        g.command(["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", "--bootloader-id=debian",
                   "--no-nvram", "--no-uefi-secure-boot"])
        g.command(["update-grub"])
        if g.exists("/boot/efi/EFI/BOOT") or not g.is_file("/boot/efi/EFI/debian/grubx64.efi"):
            raise RuntimeError("grub-install must put its loader in EFI/debian only")
        if "root=/dev/mapper/vg0-root " not in g.cat("/boot/grub/grub.cfg"):
            raise RuntimeError("grub.cfg does not boot root=/dev/mapper/vg0-root")
        g.umount_all()
        g.vg_activate(False, ["vg0"])
        g.shutdown()
    finally:
        g.close()


if __name__ == "__main__":
    print(json.dumps(dataclasses.asdict(build_uefi_guest()), indent=1))
