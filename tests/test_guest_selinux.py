"""A real SELinux-enforcing Debian guest on two disks (root on disk 0, /boot and the boot code on
disk 1, booted through `bios.hddOrder`), its NIC configured by a systemd-networkd `.network` matched
by its VMware MAC only: unfixed it does not boot on virtio; after `h2k migrate` of its VMX it boots
enforcing with no relabel pending, from the right disk, with its DHCP address on its NIC, also on
QEMU's default placement with a new MAC; the shipped domain is the machine the boot test booted."""
from __future__ import annotations

import json

import pytest

from h2k_tasks import boot_console
from h2k_tasks.boot_test import boot_test
from h2k_tasks.fixers.linux import nicnames
from h2k_tasks.machine import plain
from tests.builders.debian_guest import FACTS_UP
from tests.builders.debian_selinux_guest import HDD_ORDER, build_selinux_guest
from tests.support import assert_ships_what_booted, boot_on_qemu_defaults, migrate_vmx

pytestmark = [pytest.mark.slow, pytest.mark.real_guest, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def guest():
    return build_selinux_guest()


def test_unfixed_guest_does_not_boot_on_virtio(guest):
    """Its boot disk first, as its BIOS order says: GRUB and the kernel load, the initramfs finds no root."""
    root, boot = guest.vmdks
    result = boot_test(plain([(boot, "vmdk"), (root, "vmdk")], "bios", mac=guest.mac), timeout=600)
    assert (result.booted, result.verdict) == (False, "initramfs-shell"), result.console_tail


@pytest.fixture(scope="module")
def migrated(guest, tmp_path_factory):
    return migrate_vmx(tmp_path_factory.mktemp("selinux"), "sel", guest.vmdks, guest.mac, hdd_order=HDD_ORDER)


def test_migrated_guest_boots_enforcing_from_its_second_disk_with_its_address(migrated):
    boot = migrated["validation"]["boot"]
    console = "\n".join(boot["console_tail"])
    assert (boot["booted"], boot["verdict"]) == (True, "login"), console
    assert "h2k-facts: selinux=Enforcing relabel=none" in console, console
    assert FACTS_UP.search(console) and FACTS_UP.search(console).group(1) == "enp1s0", console
    assert boot["reboots"] == 0
    assert migrated["inspection"]["boot_disk"] == 1, migrated["inspection"]
    assert not [c for c in migrated["concerns"] if "boot" in json.dumps(c)], migrated["concerns"]
    assert [d["boot_order"] for d in boot["machine"]["disks"]] == [2, 1]
    assert_ships_what_booted(migrated)
    changed = {c["path"]: c["fixer"] for c in migrated["changes"]}
    assert changed.get("/etc/systemd/network/20-lan.network") == "linux.network"
    assert "/etc/systemd/network/10-ens192.link" in changed and nicnames.RULE in changed
    assert any(c["fixer"] == "linux.selinux" for c in migrated["changes"]), migrated["changes"]
    assert "/.autorelabel" not in changed


def test_migrated_guest_gets_its_address_on_another_placement_with_a_new_mac(migrated, tmp_path):
    disks = [o["path"] for o in migrated["outputs"]]
    text = boot_on_qemu_defaults(disks, tmp_path / "elsewhere", timeout=900, boot=1)
    assert (boot_console.classify(text) or boot_console.Verdict(False, "none", "")).kind == "login", text[-3000:]
    assert "h2k-facts: selinux=Enforcing relabel=none" in text, text[-3000:]
    assert FACTS_UP.search(text), text[-3000:]  # its one .network matches the virtio driver, whatever the name
