"""A real UEFI guest (GPT, ESP, /boot, root on LVM+XFS, a static address pinned to its VMware MAC, no
fallback loader): unfixed it does not boot on a fresh OVMF; after `h2k migrate` of its VMX it boots on
virtio with its static address, also on another placement with a new MAC; handed over as a bare VHDX
it ships an EFI domain with the fallback loader in place."""
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from h2k_tasks.boot_test import boot_test
from h2k_tasks.machine import plain
from tests.builders.debian_uefi_guest import build_uefi_guest
from tests.support import assert_ships_what_booted, boot_on_qemu_defaults, h2k, migrate_vmx

pytestmark = [pytest.mark.slow, pytest.mark.real_guest, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def guest():
    return build_uefi_guest()


def test_unfixed_guest_finds_no_boot_option_on_a_fresh_ovmf(guest):
    """SATA, as VMware presents it: no virtio needed; only the missing NVRAM entry and fallback loader."""
    result = boot_test(plain([(guest.vmdk, "vmdk")], "efi", bus="sata", mac=guest.mac), timeout=300)
    assert (result.booted, result.verdict) == (False, "no-boot-device"), result.console_tail


@pytest.fixture(scope="module")
def migrated(guest, tmp_path_factory):
    return migrate_vmx(tmp_path_factory.mktemp("uefi"), "uefi", [guest.vmdk], guest.mac, firmware="efi")


def test_migrated_guest_boots_on_virtio_with_its_static_address(guest, migrated):
    boot = migrated["validation"]["boot"]
    assert (boot["booted"], boot["verdict"]) == (True, "login"), boot["console_tail"]
    assert f"IPv4: {guest.address}" in "\n".join(boot["console_tail"]), boot["console_tail"]
    assert boot["machine"]["firmware"] == "efi" and boot["machine"]["bus"] == "virtio"
    changed = {c["path"] for c in migrated["changes"]}
    assert {"/etc/fstab", "/boot/efi/EFI/BOOT/BOOTX64.EFI",
            f"/etc/NetworkManager/system-connections/{guest.interface}.nmconnection"} <= changed
    dom = ET.parse(migrated["domain_xml"]).getroot()
    assert dom.find("os").get("firmware") == "efi"
    assert_ships_what_booted(migrated)


def test_migrated_guest_keeps_its_static_address_on_another_placement_with_a_new_mac(guest, migrated, tmp_path):
    text = boot_on_qemu_defaults([migrated["outputs"][0]["path"]], tmp_path / "elsewhere", timeout=900, firmware="efi")
    assert " login:" in text and f"IPv4: {guest.address}" in text, text[-3000:]


def test_bare_vhdx_ships_an_efi_domain_with_the_fallback_loader(guest, tmp_path):
    disk = tmp_path / "bare-uefi.vhdx"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "vmdk", "-O", "vhdx", guest.vmdk, str(disk)], check=True)
    res = h2k("migrate", str(disk), "-o", str(tmp_path / "out"), "--json", "--no-boot-test", timeout=1800)
    report = json.load(open(tmp_path / "out" / "bare-uefi" / "report.json"))
    assert res.returncode == 0, (res.stderr, report["errors"])
    assert report["hardware"]["firmware"] == "efi" and report["inspection"]["firmware"] == "efi"
    assert "/boot/efi/EFI/BOOT/BOOTX64.EFI" in {c["path"] for c in report["changes"]}
    assert ET.parse(report["domain_xml"]).getroot().find("os").get("firmware") == "efi"
