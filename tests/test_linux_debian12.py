"""Debian 12 (by-path swap, ifupdown, 70-persistent-net.rules, VirtualBox leftover) with serial_console: false."""
import pytest

from tests.builders.phony_recipes import UUID
from tests.linux_guests import fixed_guest

pytestmark = pytest.mark.slow
KVER = "6.1.0-13-amd64"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    yield from fixed_guest("debian12", tmp_path_factory.mktemp("debian"), options={"serial_console": False})


def test_fstab_keeps_uuid_and_maps_by_path_swap(run):
    assert run[0].read("/etc/fstab") == (f"UUID={UUID['debian-root']} / ext4 errors=remount-ro 0 1\n"
                                         f"UUID={UUID['debian-swap']} none swap sw 0 0\n")


def test_no_serial_console_and_no_regeneration(run):
    guest = run[0]
    cfg = guest.read("/boot/grub/grub.cfg")
    assert f"root=UUID={UUID['debian-root']} ro quiet\n" in cfg
    assert "ttyS0" not in cfg + guest.read("/etc/default/grub")
    assert guest.calls() == ["dpkg --purge open-vm-tools", f"update-initramfs -u -k {KVER}"]


def test_initramfs_rebuilt_with_backup(run):
    guest = run[0]
    assert any(p.endswith("virtio_scsi.ko.xz") for p in guest.g.initrd_list(f"/boot/initrd.img-{KVER}"))
    assert not any("virtio" in p for p in guest.g.initrd_list(f"/boot/initrd.img-{KVER}.h2k-orig"))


def test_interfaces_renamed_without_hwaddress(run):
    assert run[0].read("/etc/network/interfaces") == (
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
        "# The primary network interface\nallow-hotplug enp1s0\niface enp1s0 inet static\n"
        "    address 192.0.2.30/24\n    gateway 192.0.2.1\n"
        "    dns-nameservers 192.0.2.53\n    up ip route add 198.51.100.0/24 via 192.0.2.254 dev enp1s0\n")
    assert not run[0].g.exists("/etc/udev/rules.d/70-persistent-net.rules")


def test_virtualbox_service_disabled(run):
    guest = run[0]
    assert not guest.g.is_symlink("/etc/systemd/system/multi-user.target.wants/vboxadd.service")
    assert guest.g.exists("/lib/systemd/system/vboxadd.service")


def test_second_run_changes_nothing(run):
    assert run[1] and run[2] == []
