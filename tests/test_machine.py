"""The target machine's boot disk and boot order (h2k_tasks/machine.py): pure logic."""
from __future__ import annotations

import pytest

from h2k_planner.models import VM, Disk, Nic
from h2k_tasks.machine import (BOOT_DISK_CONCERN, TEST_MEMORY_CAP_MIB, boot_disk_concerns, boot_sequence,
                               choose_boot_disk, for_test, target_machine)


def vm(boot_order=(), n=3, **kw) -> VM:
    disks = [Disk(source=f"/d{i}", format="raw", virtual_size=1, index=i) for i in range(n)]
    return VM(**({"name": "v", "disks": disks, "source": "/v.vmx", "source_kind": "vmx",
                  "boot_order": list(boot_order)} | kw))


@pytest.mark.parametrize("declared,bootable,os_disk,expected", [
    ((), [0, 1], None, 0),  # no word from the source: the first bootable disk
    ((), [1, 2], None, 1),  # disk 0 holds no loader (a data disk first in bus order)
    ((2,), [0, 2], None, 2),  # the source's boot disk, when it can boot
    ((2,), [0, 1], None, 0),  # ... and not when it holds no loader
    ((), [0, 1], 1, 1),  # the disk holding /boot, among bootable ones
    ((0,), [0, 1], 1, 0),  # the source's order first
    ((), [], 1, None),
])
def test_choose_boot_disk(declared, bootable, os_disk, expected):
    assert choose_boot_disk(vm(declared), bootable, os_disk) == expected


def test_boot_sequence_puts_the_boot_disk_first_then_the_source_order():
    assert boot_sequence(vm((2, 0)), {"boot_disk": 1}) == [1, 2, 0]
    assert boot_sequence(vm((2,)), {"boot_disk": None}) == [2, 0, 1]
    assert boot_sequence(vm(), None) == [0, 1, 2]


def test_boot_disk_concern_when_the_source_names_a_disk_without_loader():
    [c] = boot_disk_concerns(vm((0,)), {"boot_disk": 1})
    assert c.id == BOOT_DISK_CONCERN and "disk 0" in c.message and "disk 1" in c.message
    assert boot_disk_concerns(vm((1,)), {"boot_disk": 1}) == boot_disk_concerns(vm(), {"boot_disk": 1}) == []


def test_machine_orders_boot_and_caps_memory_for_the_test_only():
    m = target_machine(vm(memory_mib=8192, cpus=8, nics=[Nic(mac="00:50:56:00:00:01")]), {"boot_disk": 2},
                       [(f"/o{i}", "qcow2") for i in range(3)])
    assert [d.boot_order for d in m.disks] == [2, 3, 1] and min(m.disks, key=lambda d: d.boot_order).path == "/o2"
    tested, notes = for_test(m)
    assert (m.memory_mib, m.cpus, tested.memory_mib, tested.cpus) == (8192, 8, TEST_MEMORY_CAP_MIB, 2)
    assert len(notes) == 2 and "8192 MiB" in notes[0]
    small = target_machine(vm(memory_mib=512), None, [(f"/o{i}", "qcow2") for i in range(3)])
    assert for_test(small) == (small, [])
