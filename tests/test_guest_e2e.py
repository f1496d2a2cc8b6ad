"""Guests through the whole pipeline: a real Debian 12 VMware guest boots on virtio after
`h2k migrate`; Windows guests get their virtio drivers, and a guest the fixers refuse keeps
its outputs exactly as converted."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from h2k_tasks import boot_console
from h2k_tasks.accel import host_accel
from h2k_tasks.fixers.linux import nicnames
from h2k_tasks.process import kill_group

from tests.builders.debian_guest import build_debian_guest
from tests.builders.virtio_win import fake_virtio_win
from tests.builders.vmware import write_vmx
from tests.builders.windows_guest import windows_disks
from tests.support import h2k, sha256

pytestmark = pytest.mark.slow


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)




def test_real_debian_guest_boots_on_virtio_after_migration(tmp_path):
    guest = build_debian_guest()
    src = tmp_path / "src"
    src.mkdir()
    link_or_copy(guest.vmdk, str(src / "deb12.vmdk"))
    write_vmx(str(src / "deb12.vmx"), "deb12", [("scsi", 0, 0, "deb12.vmdk")], guest.mac, memsize=1024)
    res = h2k("migrate", str(src / "deb12.vmx"), "-o", str(tmp_path / "out"), "--json", timeout=2400)
    report = json.load(open(tmp_path / "out" / "deb12" / "report.json"))
    assert res.returncode == 0, (res.stderr, report["errors"])
    boot = report["validation"]["boot"]
    assert boot["booted"] and boot["verdict"] == "login", boot["console_tail"]
    assert boot["dhcp_address"] and boot["dhcp_address"].startswith("10.0.2."), boot["console_tail"]
    changed = {c["path"] for c in report["changes"]}
    assert {"/etc/fstab", "/boot/grub/grub.cfg", "/etc/network/interfaces", nicnames.RULE} <= changed
    assert any(c["fixer"] == "linux.initramfs" for c in report["changes"])
    assert report["inspection"]["distro"] == "debian" and report["inspection"]["linux"]["init"] == "systemd"
    assert boot["machine"]["nics"] == [{"mac": guest.mac, "port": 1}] and boot["reboots"] == 0

    # The same output on another placement (QEMU's default `pc` machine, the NIC at 00:03.0, where its
    # predictable name would be ens3) and with a new MAC: the udev rule still names it as its config says.
    output = report["outputs"][0]["path"]
    text = _boot_elsewhere(output, tmp_path / "elsewhere", timeout=900)
    assert boot_console.classify(text) is not None and boot_console.classify(text).kind == "login", text[-3000:]
    assert (boot_console.dhcp_address(text) or "").startswith("10.0.2."), text[-3000:]


def _boot_elsewhere(disk: str, work, timeout: float) -> str:
    """Boot `disk` (on an overlay) under plain QEMU defaults with a new MAC; the console text at the verdict."""
    work.mkdir()
    overlay, console = work / "overlay.qcow2", work / "console.log"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, str(overlay)], check=True)
    accel = host_accel()
    proc = subprocess.Popen(["qemu-system-x86_64", *accel.qemu_args, "-machine", "pc", "-m", "1024", "-nodefaults",
                             "-display", "none", "-serial", f"file:{console}",
                             "-drive", f"file={overlay},format=qcow2,if=virtio",
                             "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:4b:32:01"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    text = ""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            text = boot_console.clean(console.read_bytes().decode("utf-8", "replace")) if console.exists() else ""
            if boot_console.classify(text):
                return text
            time.sleep(1)
        return text
    finally:
        kill_group(proc)


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
