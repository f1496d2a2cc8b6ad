"""A real Debian 12 guest configured by netplan, with a VLAN on its NIC, as VMware leaves one.

Built with debootstrap like tests/builders/debian_guest.py, on one MBR disk (`/dev/sda1`, ext4, GRUB
in the MBR). netplan (renderer networkd) names the NIC: ethernet `lan` matched by the VMware MAC with
`set-name: ens192`, DHCP; VLAN `vlan100` (id 100, link `lan`) with a static address. The initramfs holds
the VMware drivers only: no virtio. Before the login prompt, `h2k-facts.service`
(debian_guest.FACTS_FILES) prints each interface's state and address to the console.
Cached like the BIOS guest, under a hash of this recipe.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import yaml

from tests.builders.debian_guest import (FACTS_FILES, INITRAMFS_MODULES, MIRROR, PRUNED_MODULES, PRUNED_PATHS,
                                         SUITE, cached_guest, configure, debootstrap, guest_files,
                                         initramfs_listing, install_on_mbr, publish)

NAME = "debian12-netplan-vlan"
PACKAGES = ["linux-image-amd64", "grub-pc", "systemd", "systemd-sysv", "udev", "kmod", "initramfs-tools",
            "iproute2", "netplan.io", "open-vm-tools"]
MAC = "00:50:56:8a:3c:04"
INTERFACE = "ens192"
VLAN, VLAN_ADDRESS = "vlan100", "192.168.100.10"
HOSTNAME = "h2k-deb12-netplan"
ROOT_DEVICE = "/dev/sda1"
DISK_SIZE = 2 * 1024**3
NETPLAN = "etc/netplan/50-vmware.yaml"
NETPLAN_DOC = {"network": {
    "version": 2, "renderer": "networkd",
    "ethernets": {"lan": {"match": {"macaddress": MAC}, "set-name": INTERFACE, "dhcp4": True}},
    "vlans": {VLAN: {"id": 100, "link": "lan", "addresses": [f"{VLAN_ADDRESS}/24"]}}}}
FILES = {
    **guest_files(HOSTNAME, INITRAMFS_MODULES, issue_address=False),
    "etc/fstab": f"{ROOT_DEVICE}\t/\text4\terrors=remount-ro\t0\t1\n",
    NETPLAN: yaml.safe_dump(NETPLAN_DOC, sort_keys=False),
    **FACTS_FILES,
}
UNITS = ["systemd-networkd.service", "systemd-networkd-wait-online.service", "h2k-facts.service"]
RECIPE = {"version": 1, "name": NAME, "mirror": MIRROR, "suite": SUITE, "packages": PACKAGES, "mac": MAC,
          "disk_size": DISK_SIZE, "modules": INITRAMFS_MODULES, "pruned_modules": PRUNED_MODULES,
          "files": FILES, "units": UNITS, "pruned_paths": PRUNED_PATHS}


@dataclasses.dataclass(frozen=True)
class NetplanGuest:
    vmdk: str
    mac: str
    interface: str
    vlan: str
    vlan_address: str
    netplan: str  # the netplan file's path in the guest
    hostname: str
    kernel: str
    firmware: str


def build_netplan_guest() -> NetplanGuest:
    """The cached guest, building it first if this machine has none (minutes, once)."""
    final, facts = cached_guest(NAME, RECIPE, _build)
    return NetplanGuest(vmdk=os.path.join(final, facts.pop("vmdk")), **facts)


def _build(work: str, root: str, final: str) -> None:
    debootstrap(root, PACKAGES)
    kernel = configure(root, FILES, private=(NETPLAN,))
    subprocess.run(["chroot", root, "systemctl", "enable", *UNITS], check=True, capture_output=True)
    initramfs_listing(root, kernel, ["vmw_pvscsi", "ahci", "ext4"])
    publish(work, root, lambda tarball, raws: install_on_mbr(tarball, raws, DISK_SIZE, ROOT_DEVICE), final, {
        "vmdk": f"{NAME}.vmdk", "mac": MAC, "interface": INTERFACE, "vlan": VLAN, "vlan_address": VLAN_ADDRESS,
        "netplan": f"/{NETPLAN}", "hostname": HOSTNAME, "kernel": kernel, "firmware": "bios"}, [f"{NAME}.vmdk"])


if __name__ == "__main__":
    print(json.dumps(dataclasses.asdict(build_netplan_guest()), indent=1))
