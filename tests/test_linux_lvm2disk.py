"""Two disks: /boot on disk 1, / on LVM on disk 2; `nic_names` names the NIC, on any placement."""
import pytest

from h2k_tasks.fixers.linux import nicnames
from tests.builders.phony_recipes import MAC, UUID
from tests.linux_guests import fixed_guest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    yield from fixed_guest("lvm2disk", tmp_path_factory.mktemp("lvm"), options={"nic_names": ["lan0"]})


def test_inspection_finds_root_on_lvm(run):
    guest = run[0]
    assert guest.root == "/dev/vg0/root"
    assert guest.g.inspect_get_mountpoints(guest.root) == {"/": "/dev/vg0/root", "/boot": "/dev/sda1"}


def test_lvm_names_stay_and_sda1_is_disk_one(run):
    guest = run[0]
    assert guest.read("/etc/fstab") == (
        "/dev/mapper/vg0-root / ext4 errors=remount-ro 0 1\n"
        f"UUID={UUID['lvm-boot']} /boot ext4 defaults 0 2\n/dev/mapper/vg0-swap none swap sw 0 0\n")
    assert "\nGRUB_DISABLE_LINUX_UUID=false\n" in guest.read("/etc/default/grub")  # the guest's own update-grub
    cfg = guest.read("/boot/grub/grub.cfg")
    assert "root=/dev/mapper/vg0-root ro resume=/dev/mapper/vg0-swap console=tty0 console=ttyS0,115200 quiet\n" in cfg


def test_nic_names_name_the_nic_and_the_udev_rule_keeps_it_on_any_placement(run):
    guest = run[0]
    assert "allow-hotplug lan0\niface lan0 inet dhcp\n" in guest.read("/etc/network/interfaces")
    assert guest.read(nicnames.RULE) == nicnames.rule_text()
    assert guest.read(nicnames.SCRIPT) == nicnames.script_text([("lan0", MAC)])
    assert guest.g.statns(nicnames.SCRIPT)["st_mode"] & 0o777 == 0o755
    assert guest.calls() == ["dpkg --purge open-vm-tools", "update-initramfs -u -k 6.1.0-13-amd64", "update-grub "]


def test_second_run_changes_nothing(run):
    assert run[1] and run[2] == []
