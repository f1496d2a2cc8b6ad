"""Emitted libvirt domains are accepted by virt-xml-validate, for every firmware, NIC shape and guest OS."""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from h2k_planner.models import VM, Disk, Firmware, Nic
from h2k_tasks.outputs.libvirt import domain_xml
from h2k_tasks.stages.finalize import is_windows


def make_vm(**kw) -> VM:
    base = dict(name="web01", source="/s.vmx", source_kind="vmx", cpus=2, memory_mib=4096,
                disks=[Disk(source="/s.vmdk", format="vmdk", virtual_size=1 << 30)],
                nics=[Nic(mac="00:50:56:01:02:03"), Nic(mac=None)])
    return VM(**(base | kw))


@pytest.mark.parametrize("vm,bus,windows", [
    (make_vm(), "virtio", False),
    (make_vm(firmware=Firmware.efi), "virtio", False),
    (make_vm(firmware=Firmware.efi, secure_boot=True, uuid="564d1234-5678-9abc-def0-123456789abc"), "virtio", False),
    (make_vm(nics=[]), "sata", False),
    (make_vm(), "scsi", False),
    (make_vm(firmware=Firmware.efi, secure_boot=True), "virtio", True),
    (make_vm(), "sata", True),
])
def test_virt_xml_validate_accepts(tmp_path, vm, bus, windows):
    path = tmp_path / "d.xml"
    path.write_text(domain_xml(vm, [("/out/a.qcow2", "qcow2"), ("/out/b.raw", "raw")], disk_bus=bus, windows=windows))
    res = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = path.read_text()
    assert text.count(f'bus="{bus}"') == 2 and '<memory unit="MiB">4096</memory>' in text
    assert ('firmware="efi"' in text) == (vm.firmware == Firmware.efi)


def test_windows_gets_localtime_clock_and_hyperv_enlightenments():
    dom = ET.fromstring(domain_xml(make_vm(), [("/out/a.qcow2", "qcow2")], windows=True))
    assert dom.find("clock").get("offset") == "localtime"
    assert {t.get("name") for t in dom.findall("clock/timer")} == {"rtc", "pit", "hpet", "hypervclock"}
    hyperv = {el.tag: el.attrib for el in dom.find("features/hyperv")}
    assert {tag for tag, attrs in hyperv.items() if attrs.get("state") == "on"} == {
        "relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset", "frequencies"}
    assert hyperv["spinlocks"]["retries"] == "8191"


def test_linux_keeps_utc_and_no_hyperv():
    dom = ET.fromstring(domain_xml(make_vm(), [("/out/a.qcow2", "qcow2")]))
    assert dom.find("clock") is None and dom.find("features/hyperv") is None


@pytest.mark.parametrize("windows", [False, True])
def test_every_guest_has_a_guest_agent_channel(windows):
    dom = ET.fromstring(domain_xml(make_vm(), [("/out/a.qcow2", "qcow2")], windows=windows))
    channels = dom.findall("devices/channel")
    assert [(c.get("type"), c.find("target").get("type"), c.find("target").get("name")) for c in channels] == [
        ("unix", "virtio", "org.qemu.guest_agent.0")]


@pytest.mark.parametrize("inspection,guest_os,expected", [
    ({"os_type": "windows"}, "", True),
    ({"os_type": "linux"}, "windows9-64", False),  # the inspection wins over the descriptor
    ({"os_type": "unknown"}, "windows2019srv-64", True),
    (None, "windows9Server64Guest", True),
    (None, "darwin-64", False),
    (None, "", False),
])
def test_windows_by_inspection_else_descriptor(inspection, guest_os, expected):
    assert is_windows(make_vm(guest_os=guest_os), inspection) is expected
