"""Guests through the whole pipeline: a real Debian 12 VMware guest boots on virtio after
`h2k migrate`; Windows guests get their virtio drivers, and a guest the fixers refuse keeps
its outputs exactly as converted."""
from __future__ import annotations

import json
import subprocess

import pytest

from h2k_tasks import boot_console
from h2k_tasks.appliance import open_session
from h2k_tasks.boot_test import boot_test
from h2k_tasks.fixers.linux import nicnames
from h2k_tasks.machine import Machine

from tests.builders.debian_guest import build_debian_guest
from tests.builders.virtio_win import fake_virtio_win
from tests.builders.windows_guest import windows_disks
from tests.support import assert_ships_what_booted, boot_on_qemu_defaults, h2k, link_or_copy, migrate_vmx, sha256

pytestmark = [pytest.mark.slow, pytest.mark.real_guest, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """The real Debian VMware guest after `h2k migrate` of its VMX: (guest, report)."""
    guest = build_debian_guest()
    return guest, migrate_vmx(tmp_path_factory.mktemp("deb12"), "deb12", [guest.vmdk], guest.mac)


def test_real_debian_guest_boots_on_virtio_after_migration(migrated):
    guest, report = migrated
    boot = report["validation"]["boot"]
    assert boot["booted"] and boot["verdict"] == "login", boot["console_tail"]
    assert boot["dhcp_address"] and boot["dhcp_address"].startswith("10.0.2."), boot["console_tail"]
    changed = {c["path"] for c in report["changes"]}
    assert {"/etc/fstab", "/boot/grub/grub.cfg", "/etc/network/interfaces", "/etc/default/grub", nicnames.RULE} <= changed
    assert any(c["fixer"] == "linux.initramfs" for c in report["changes"])
    assert report["inspection"]["distro"] == "debian" and report["inspection"]["linux"]["init"] == "systemd"
    assert boot["machine"]["nics"] == [{"mac": guest.mac, "port": 1}] and boot["reboots"] == 0
    assert_ships_what_booted(report)


def test_real_debian_guest_gets_its_address_on_another_placement_with_a_new_mac(migrated, tmp_path):
    """QEMU's default `pc` machine puts the NIC at 00:03.0, where its predictable name would be ens3:
    the udev rule still names it as its config says."""
    output = migrated[1]["outputs"][0]["path"]
    text = boot_on_qemu_defaults([output], tmp_path / "elsewhere", timeout=900)
    assert boot_console.classify(text) is not None and boot_console.classify(text).kind == "login", text[-3000:]
    assert (boot_console.dhcp_address(text) or "").startswith("10.0.2."), text[-3000:]


SECOND_BOOT_UNIT = """[Unit]
Description=h2k test: rebuild the initramfs and grub.cfg as a kernel update would, then reboot
ConditionPathExists=!/var/lib/h2k-second-boot
After=local-fs.target
Before=getty.target serial-getty@ttyS0.service

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c 'update-initramfs -u -k all && update-grub && touch /var/lib/h2k-second-boot && \
  echo "h2k-second-boot: rebuilt by the guest, rebooting" && systemctl --no-block reboot'

[Install]
WantedBy=multi-user.target
"""


def test_real_debian_guest_survives_its_own_initramfs_and_grub_rebuild(migrated, tmp_path):
    """Second boot: the shipped machine boots, the guest runs its own update-initramfs and update-grub
    (as a kernel update would) and reboots; it comes up again, on its own grub.cfg and initramfs."""
    report = migrated[1]
    output = report["outputs"][0]["path"]
    overlay = tmp_path / "second.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", output, str(overlay)], check=True)
    g = open_session([(str(overlay), "qcow2")], readonly=False).g
    try:
        g.mount(g.inspect_os()[0], "/")
        g.write("/etc/systemd/system/h2k-second-boot.service", SECOND_BOOT_UNIT.encode())
        g.ln_sf("/etc/systemd/system/h2k-second-boot.service",
                "/etc/systemd/system/multi-user.target.wants/h2k-second-boot.service")
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    shipped = Machine.model_validate(report["validation"]["boot"]["machine"])
    machine = shipped.model_copy(update={"disks": [shipped.disks[0].model_copy(update={"path": str(overlay)})]})
    console = tmp_path / "console.log"
    result = boot_test(machine, timeout=1200, console_log=str(console))
    text = console.read_text(errors="replace")
    assert "h2k-second-boot: rebuilt by the guest, rebooting" in text, result.console_tail
    assert (result.booted, result.verdict, result.reboots) == (True, "login", 1), result.console_tail
    assert (result.dhcp_address or "").startswith("10.0.2."), result.console_tail


@pytest.fixture(scope="module")
def windows_sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("windows")
    disks = windows_disks(["win10", "win10-hibernated"])
    src = base / "src"
    src.mkdir()
    for name, path in disks.items():
        link_or_copy(str(path), str(src / f"{name}.raw"))
    return base, src, fake_virtio_win(base / "virtio-win")


def test_windows_gets_virtio_and_refused_guest_keeps_its_outputs(windows_sources):
    base, src, virtio = windows_sources
    out = base / "out"
    cfg = base / "two-phase.yaml"
    cfg.write_text("vms:\n  win10:\n    two_phase_boot: true\n")
    res = h2k("migrate", str(src / "win10.raw"), str(src / "win10-hibernated.raw"), "-o", str(out), "--format", "raw",
              "--virtio-win", str(virtio), "--json", "--config", str(cfg), timeout=1800)
    assert res.returncode == 1, res.stderr  # one VM failed
    statuses = {v["vm"]: v["status"] for v in json.loads(res.stdout)["vms"]}
    assert statuses == {"win10": "succeeded", "win10-hibernated": "failed"}

    ok = json.load(open(out / "win10" / "report.json"))
    registry = [c for c in ok["changes"] if c["kind"] == "registry"]
    assert any("Services\\viostor" in c["path"] for c in registry)
    assert any("CriticalDeviceDatabase" in c["path"] or "DriverDatabase" in c["path"] for c in registry)
    assert (out / "win10" / "undo-SYSTEM.reg").exists()
    assert any("not run: Windows" in n for n in ok["notes"])
    first_boot = ok["first_boot_domain_xml"]
    assert first_boot and 'bus="sata"' in open(first_boot).read() and 'bus="virtio"' in open(ok["domain_xml"]).read()
    for xml in (first_boot, ok["domain_xml"]):
        check = subprocess.run(["virt-xml-validate", xml, "domain"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr

    refused = json.load(open(out / "win10-hibernated" / "report.json"))
    assert any("hibernated" in e for e in refused["errors"]), refused["errors"]
    output = refused["outputs"][0]["path"]
    reference = str(base / "reference.raw")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", str(src / "win10-hibernated.raw"), reference],
                   check=True)
    assert sha256(output) == sha256(reference)  # the fixers' overlay was thrown away


def test_plan_inspect_refuses_hibernated_windows(windows_sources):
    base, src, virtio = windows_sources
    before = sha256(str(src / "win10-hibernated.raw"))
    res = h2k("plan", str(src / "win10-hibernated.raw"), "--inspect", "--virtio-win", str(virtio), timeout=900)
    assert res.returncode == 2
    assert "windows-hibernated" in res.stderr and "remedy" in res.stderr.lower()
    assert sha256(str(src / "win10-hibernated.raw")) == before
