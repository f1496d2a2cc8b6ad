"""The .vmx reader: hardware, disks by controller, NICs, encodings."""
from __future__ import annotations

import pytest

from h2k_planner.errors import InputError
from h2k_planner.sources.vmx import load_vmx, parse_vmx
from tests.builders.vmware import DiskSpec, build_vm


@pytest.fixture(scope="module")
def vm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vmx")
    build_vm(str(d), "base", [DiskSpec(size_mib=8, files={"/a": "a"})])
    return d


def write(vm_dir, text: str, name="t.vmx", encoding="utf-8"):
    p = vm_dir / name
    p.write_bytes(text.encode(encoding))
    return str(p)


HEADER = 'config.version = "8"\nvirtualHW.version = "19"\n'


def test_controllers_order_and_skip_cdrom(vm_dir):
    vmx = write(vm_dir, HEADER + (
        'displayName = "ctl"\nmemsize = "2048"\nnumvcpus = "4"\nfirmware = "efi"\nuefi.secureBoot.enabled = "TRUE"\n'
        'sata0.present = "TRUE"\nsata0:1.present = "TRUE"\nsata0:1.fileName = "base.vmdk"\n'
        'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "base.vmdk"\n'
        'nvme0.present = "TRUE"\nnvme0:0.present = "TRUE"\nnvme0:0.fileName = "base.vmdk"\n'
        'ide0:0.present = "TRUE"\nide0:0.fileName = "base.vmdk"\n'
        'ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-image"\nide1:0.fileName = "x.iso"\n'
        'scsi0:1.present = "FALSE"\nscsi0:1.fileName = "gone.vmdk"\n'))
    vm = load_vmx(vmx)
    assert [(d.bus, d.controller, d.unit, d.index) for d in vm.disks] == [
        ("scsi", 0, 0, 0), ("sata", 0, 1, 1), ("nvme", 0, 0, 2), ("ide", 0, 0, 3)]
    assert (vm.name, vm.memory_mib, vm.cpus, vm.firmware.value, vm.secure_boot) == ("ctl", 2048, 4, "efi", True)


def test_nics_generated_static_and_absent(vm_dir):
    vmx = write(vm_dir, HEADER + (
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "base.vmdk"\n'
        'ethernet0.present = "TRUE"\nethernet0.addressType = "generated"\n'
        'ethernet0.generatedAddress = "00:0C:29:AA:BB:CC"\nethernet0.virtualDev = "e1000e"\n'
        'ethernet0.networkName = "Prod"\n'
        'ethernet1.present = "TRUE"\nethernet1.addressType = "static"\nethernet1.address = "00:50:56:00:00:02"\n'
        'ethernet2.present = "FALSE"\nethernet2.address = "00:50:56:00:00:03"\n'))
    vm = load_vmx(vmx)
    assert [(n.name, n.mac, n.model, n.network) for n in vm.nics] == [  # no networkName: named after its port
        ("ethernet0", "00:0c:29:aa:bb:cc", "e1000e", "Prod"), ("ethernet1", "00:50:56:00:00:02", "e1000", "ethernet1")]


def test_encoding_is_honoured_and_name_defaults_to_file(vm_dir):
    vmx = write(vm_dir, '.encoding = "windows-1252"\n' + HEADER + 'displayName = "caf\xe9"\n'
                'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "base.vmdk"\n', encoding="cp1252")
    assert load_vmx(vmx).name == "caf\xe9"
    vmx = write(vm_dir, HEADER + 'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "base.vmdk"\n', name="noname.vmx")
    assert load_vmx(vmx).name == "noname"


def test_crlf_and_comments(vm_dir):
    vmx = write(vm_dir, "# comment\r\n" + HEADER.replace("\n", "\r\n") +
                'scsi0:0.present = "TRUE"\r\nscsi0:0.fileName = "base.vmdk"\r\n')
    assert len(load_vmx(vmx).disks) == 1


@pytest.mark.parametrize("text,problem", [
    ("", "is empty"),
    ('displayName = "x"\n', "no config.version"),
    (HEADER + 'memsize = "lots"\nscsi0:0.fileName = "base.vmdk"\n', "memsize = 'lots' is not a number"),
    (HEADER + 'ethernet0.present = "TRUE"\nethernet0.addressType = "static"\nethernet0.address = "zz"\n'
     'scsi0:0.fileName = "base.vmdk"\n', "malformed MAC"),
    (HEADER + 'scsi0:0.fileName = "missing.vmdk"\n', "missing VMDK (disk)"),
    ('.encoding = "no-such-codec"\n' + HEADER, "cannot decode as no-such-codec"),
])
def test_errors_name_the_problem(vm_dir, text, problem):
    vmx = write(vm_dir, text, name="bad.vmx")
    with pytest.raises(InputError) as e:
        load_vmx(vmx)
    assert problem in str(e.value)


def test_parse_keeps_unquoted_values(vm_dir):
    assert parse_vmx(write(vm_dir, "a.b = TRUE\nC = \"x y\"\n", name="kv.vmx")) == {"a.b": "TRUE", "c": "x y"}


def test_bios_hdd_order_names_the_boot_disks(vm_dir):
    disks = ('scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "base.vmdk"\n'
             'sata0.present = "TRUE"\nsata0:0.present = "TRUE"\nsata0:0.fileName = "base.vmdk"\n')
    vm = load_vmx(write(vm_dir, HEADER + disks + 'bios.bootOrder = "hdd,cdrom"\nbios.hddOrder = "SATA0:0,scsi0:0,nvme9:9"\n'))
    assert [(d.bus, d.index) for d in vm.disks] == [("scsi", 0), ("sata", 1)] and vm.boot_order == [1, 0]
    assert load_vmx(write(vm_dir, HEADER + disks, name="u.vmx")).boot_order == []
