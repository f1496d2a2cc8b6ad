"""Emitted libvirt domains are accepted by virt-xml-validate, for every firmware, NIC shape and guest OS."""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from h2k_planner.models import VM, Disk, Firmware, Nic
from h2k_tasks.machine import is_windows, target_machine
from h2k_tasks.outputs.libvirt import domain_xml

OUTPUTS = [("/out/a.qcow2", "qcow2"), ("/out/b.raw", "raw")]


def make_vm(**kw) -> VM:
    base = dict(name="web01", source="/s.vmx", source_kind="vmx", cpus=2, memory_mib=4096,
                disks=[Disk(source="/s.vmdk", format="vmdk", virtual_size=1 << 30, index=0),
                       Disk(source="/t.vmdk", format="vmdk", virtual_size=1 << 30, index=1)],
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
    path.write_text(domain_xml(target_machine(vm, None, OUTPUTS, bus=bus, windows=windows)))
    res = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = path.read_text()
    assert text.count(f'bus="{bus}"') == 2 and '<memory unit="MiB">4096</memory>' in text
    assert ('firmware="efi"' in text) == (vm.firmware == Firmware.efi)


def test_windows_gets_localtime_clock_and_hyperv_enlightenments():
    dom = ET.fromstring(domain_xml(target_machine(make_vm(), None, OUTPUTS, windows=True)))
    assert dom.find("clock").get("offset") == "localtime"
    assert {t.get("name") for t in dom.findall("clock/timer")} == {"rtc", "pit", "hpet", "hypervclock"}
    hyperv = {el.tag: el.attrib for el in dom.find("features/hyperv")}
    assert {tag for tag, attrs in hyperv.items() if attrs.get("state") == "on"} == {
        "relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset", "frequencies"}
    assert hyperv["spinlocks"]["retries"] == "8191"


def test_linux_keeps_utc_and_no_hyperv():
    dom = ET.fromstring(domain_xml(target_machine(make_vm(), None, OUTPUTS)))
    assert dom.find("clock") is None and dom.find("features/hyperv") is None


@pytest.mark.parametrize("windows", [False, True])
def test_every_guest_has_a_guest_agent_channel(windows):
    dom = ET.fromstring(domain_xml(target_machine(make_vm(), None, OUTPUTS, windows=windows)))
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


def _qemu_devices(args: list[str]) -> list[dict]:
    """The -device options of a QEMU command line, parsed ("driver,key=value,..." -> dict)."""
    out = []
    for flag, value in zip(args, args[1:]):
        if flag == "-device":
            driver, *rest = value.split(",")
            out.append({"driver": driver} | dict(kv.split("=", 1) for kv in rest))
    return out


def _pci(el) -> tuple[int, int, int]:
    a = el.find("address")
    return int(a.get("bus"), 16), int(a.get("slot"), 16), int(a.get("function"), 16)


def _addr(dev: dict) -> tuple[int, int, int]:
    slot, _, function = dev.get("addr", "0x0.0x0").partition(".")
    bus = 0 if dev["bus"] == "pcie.0" else int(dev["bus"].removeprefix("pci."))
    return bus, int(slot, 16), int(function or "0", 16)


@pytest.mark.parametrize("bus", ["virtio", "sata", "scsi"])
@pytest.mark.parametrize("firmware", [Firmware.bios, Firmware.efi])
def test_domain_and_boot_test_command_describe_the_same_machine(tmp_path, bus, firmware):
    """Firmware, boot order, disk bus, NICs and their MACs, and every PCI address: the boot test's QEMU
    command (h2k_tasks.boot_test.qemu_args) and the shipped domain, both made from one machine."""
    from h2k_tasks.boot_test import qemu_args
    vm = make_vm(firmware=firmware, boot_order=[1], nics=[Nic(mac="00:50:56:01:02:03"), Nic(mac="00:50:56:01:02:04")])
    m = target_machine(vm, {"boot_disk": 1}, OUTPUTS, bus=bus)
    dom = ET.fromstring(domain_xml(m))
    args = qemu_args(m, ["/tmp/o0.qcow2", "/tmp/o1.qcow2"], str(tmp_path), str(tmp_path / "console"))
    devices = _qemu_devices(args)

    assert (dom.find("os").get("firmware") == "efi") == (firmware == Firmware.efi) == any(
        "OVMF_CODE" in a for a in args)
    assert args[args.index("-machine") + 1] == dom.find("os/type").get("machine") == "q35"
    disks = dom.findall("devices/disk")
    xml_boot = [(d.find("target").get("bus"), int(d.find("boot").get("order"))) for d in disks]
    drivers = {"virtio": "virtio-blk-pci", "sata": "ide-hd", "scsi": "scsi-hd"}
    qemu_boot = [(bus, int(d["bootindex"])) for d in devices if d["driver"] == drivers[bus]]
    assert xml_boot == qemu_boot == [(bus, 2), (bus, 1)]  # the source's boot disk (index 1) boots first
    ports_xml = {int(c.get("index")): _pci(c) for c in dom.findall("devices/controller[@model='pcie-root-port']")}
    ports_qemu = {int(d["id"].removeprefix("pci.")): _addr(d) for d in devices if d["driver"] == "pcie-root-port"}
    assert ports_xml == ports_qemu and len(ports_xml) == len(m.nics) + len(m.ports)
    nics_xml = [(i.find("mac").get("address"), _pci(i)) for i in dom.findall("devices/interface")]
    nics_qemu = [(d["mac"], _addr(d)) for d in devices if d["driver"] == "virtio-net-pci"]
    assert nics_xml == nics_qemu == [("00:50:56:01:02:03", (1, 0, 0)), ("00:50:56:01:02:04", (2, 0, 0))]
    if bus == "virtio":
        assert [_pci(d) for d in disks] == [_addr(d) for d in devices if d["driver"] == "virtio-blk-pci"]
    else:
        assert [int(d.find("address").get("unit")) for d in disks] == [0, 1]
    by_driver = {d["driver"]: _addr(d) for d in devices if d.get("bus", "").startswith("pci")}
    assert _pci(dom.find("devices/video")) == by_driver["virtio-vga"] == (0, 1, 0)
    assert _pci(dom.find("devices/rng")) == by_driver["virtio-rng-pci"]
    assert _pci(dom.find("devices/memballoon")) == by_driver["virtio-balloon-pci"]
    assert _pci(dom.find("devices/controller[@type='virtio-serial']")) == by_driver["virtio-serial-pci"]
    assert _pci(dom.find("devices/controller[@type='usb']")) == by_driver["qemu-xhci"]
    path = tmp_path / "d.xml"
    path.write_text(domain_xml(m))
    check = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_many_devices_fill_root_ports_eight_functions_a_slot():
    vm = make_vm(nics=[Nic(mac=f"00:50:56:00:00:{i:02x}") for i in range(10)])
    dom = ET.fromstring(domain_xml(target_machine(vm, None, OUTPUTS)))
    ports = [_pci(c) for c in dom.findall("devices/controller[@model='pcie-root-port']")]
    assert ports[:9] == [(0, 2, f) for f in range(8)] + [(0, 3, 0)]
    multi = [c.find("address").get("multifunction") for c in dom.findall("devices/controller[@model='pcie-root-port']")]
    assert multi[0] == multi[8] == "on" and multi[1] is None
    assert [_pci(i)[0] for i in dom.findall("devices/interface")] == list(range(1, 11))
