"""Two disks: /boot on disk 1, / on LVM on disk 2; machine type "pc" names the NIC ens3."""
import pytest

from tests.builders.phony_recipes import UUID
from tests.linux_guests import fixed_guest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    yield from fixed_guest("lvm2disk", tmp_path_factory.mktemp("lvm"), options={"machine": "pc"})


def test_inspection_finds_root_on_lvm(run):
    guest = run[0]
    assert guest.root == "/dev/vg0/root"
    assert guest.g.inspect_get_mountpoints(guest.root) == {"/": "/dev/vg0/root", "/boot": "/dev/sda1"}


def test_lvm_names_stay_and_sda1_is_disk_one(run):
    guest = run[0]
    assert guest.read("/etc/fstab") == (
        "/dev/mapper/vg0-root / ext4 errors=remount-ro 0 1\n"
        f"UUID={UUID['lvm-boot']} /boot ext4 defaults 0 2\n/dev/mapper/vg0-swap none swap sw 0 0\n")
    cfg = guest.read("/boot/grub/grub.cfg")
    assert "root=/dev/mapper/vg0-root ro resume=/dev/mapper/vg0-swap console=tty0 console=ttyS0,115200 quiet\n" in cfg


def test_pc_machine_names_nic_ens3(run):
    guest = run[0]
    assert "allow-hotplug ens3\niface ens3 inet dhcp\n" in guest.read("/etc/network/interfaces")
    assert guest.calls() == ["dpkg --purge open-vm-tools", "update-initramfs -u -k 6.1.0-13-amd64", "update-grub "]


def test_second_run_changes_nothing(run):
    assert run[1] and run[2] == []
