"""A real Debian guest configured by netplan (its NIC matched by its VMware MAC and renamed with
`set-name`, a VLAN on it): unfixed it does not boot on virtio; after `h2k migrate` of its VMX it boots
with its DHCP address on its NIC and the VLAN, keeping its name and its static address, on top of it,
also on QEMU's default placement with a new MAC; the netplan file read back keeps the VLAN as it was."""
from __future__ import annotations

import re

import pytest
import yaml

from h2k_tasks import boot_console
from h2k_tasks.appliance import open_session
from h2k_tasks.boot_test import boot_test
from h2k_tasks.machine import plain
from tests.builders.debian_guest import FACTS_UP
from tests.builders.debian_netplan_guest import NETPLAN_DOC, build_netplan_guest
from tests.support import assert_ships_what_booted, boot_on_qemu_defaults, migrate_vmx

pytestmark = [pytest.mark.slow, pytest.mark.real_guest, pytest.mark.timeout(2400)]


def vlan_up(guest, text: str) -> str | None:
    """The parent of the guest's VLAN if the console shows it UP with its static address."""
    m = re.search(rf"h2k-facts: {guest.vlan}@(\S+)\s+UP\s+{re.escape(guest.vlan_address)}/", text)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def guest():
    return build_netplan_guest()


def test_unfixed_guest_does_not_boot_on_virtio(guest):
    result = boot_test(plain([(guest.vmdk, "vmdk")], "bios", mac=guest.mac), timeout=600)
    assert (result.booted, result.verdict) == (False, "initramfs-shell"), result.console_tail


@pytest.fixture(scope="module")
def migrated(guest, tmp_path_factory):
    return migrate_vmx(tmp_path_factory.mktemp("netplan"), "np", [guest.vmdk], guest.mac)


def test_migrated_guest_boots_with_its_nic_and_its_vlan(guest, migrated):
    boot = migrated["validation"]["boot"]
    console = "\n".join(boot["console_tail"])
    assert (boot["booted"], boot["verdict"]) == (True, "login"), console
    nic = FACTS_UP.search(console)
    assert nic and nic.group(1) == "enp1s0" and vlan_up(guest, console) == "enp1s0", console
    assert_ships_what_booted(migrated)


def test_netplan_file_keeps_the_vlan_and_follows_the_nic(guest, migrated):
    g = open_session([(migrated["outputs"][0]["path"], "qcow2")], readonly=True).g
    try:
        g.mount_ro("/dev/sda1", "/")
        doc = yaml.safe_load(g.cat(guest.netplan))["network"]
    finally:
        g.close()
    assert doc["vlans"] == NETPLAN_DOC["network"]["vlans"]
    assert doc["ethernets"] == {"lan": {"match": {"name": "enp1s0"}, "dhcp4": True}}
    assert any(f"vlan {guest.vlan} keeps its name" in n for n in migrated["notes"]), migrated["notes"]


def test_migrated_guest_gets_its_address_on_another_placement_with_a_new_mac(guest, migrated, tmp_path):
    text = boot_on_qemu_defaults([migrated["outputs"][0]["path"]], tmp_path / "elsewhere", timeout=900)
    assert (boot_console.classify(text) or boot_console.Verdict(False, "none", "")).kind == "login", text[-3000:]
    nic = FACTS_UP.search(text)
    assert nic and nic.group(1) == "enp1s0" and vlan_up(guest, text) == "enp1s0", text[-3000:]
