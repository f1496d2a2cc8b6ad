"""Emitted libvirt domains are accepted by virt-xml-validate, for every firmware and NIC shape."""
from __future__ import annotations

import subprocess

import pytest

from h2k_planner.models import VM, Disk, Firmware, Nic
from h2k_tasks.outputs.libvirt import domain_xml


def make_vm(**kw) -> VM:
    base = dict(name="web01", source="/s.vmx", source_kind="vmx", cpus=2, memory_mib=4096,
                disks=[Disk(source="/s.vmdk", format="vmdk", virtual_size=1 << 30)],
                nics=[Nic(mac="00:50:56:01:02:03"), Nic(mac=None)])
    return VM(**(base | kw))


@pytest.mark.parametrize("vm,bus", [
    (make_vm(), "virtio"),
    (make_vm(firmware=Firmware.efi), "virtio"),
    (make_vm(firmware=Firmware.efi, secure_boot=True, uuid="564d1234-5678-9abc-def0-123456789abc"), "virtio"),
    (make_vm(nics=[]), "sata"),
    (make_vm(), "scsi"),
])
def test_virt_xml_validate_accepts(tmp_path, vm, bus):
    path = tmp_path / "d.xml"
    path.write_text(domain_xml(vm, [("/out/a.qcow2", "qcow2"), ("/out/b.raw", "raw")], disk_bus=bus))
    res = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = path.read_text()
    assert text.count(f'bus="{bus}"') == 2 and '<memory unit="MiB">4096</memory>' in text
    assert ('firmware="efi"' in text) == (vm.firmware == Firmware.efi)
