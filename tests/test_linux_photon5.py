"""Photon OS 5 (systemd-networkd .network and .link, no grub-mkconfig in the guest) through fix_linux."""
import pytest

from h2k_tasks.inspect_linux import inspect_linux
from tests.builders.phony_recipes import UUID
from tests.linux_guests import fixed_guest

pytestmark = pytest.mark.slow
ND = "/etc/systemd/network"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    yield from fixed_guest("photon5", tmp_path_factory.mktemp("photon"))


def test_inspection(run):
    f = run[0].facts
    assert (f["distro"], f["family"], f["major"], f["network"]) == ("photon", "photon", 5, ["systemd-networkd"])


def test_networkd_matches_virtio_driver(run):
    guest = run[0]
    assert guest.read(f"{ND}/10-static-en.network") == (
        "[Match]\nDriver=virtio_net\n\n[Network]\nAddress=192.0.2.50/24\nGateway=192.0.2.1\n"
        "DNS=192.0.2.53\n\n[Route]\nDestination=198.51.100.0/24\nGateway=192.0.2.254\n")
    assert not guest.g.exists(f"{ND}/10-ens192.link")
    assert guest.read(f"{ND}/99-dhcp-en.network") == "[Match]\nName=e*\n\n[Network]\nDHCP=yes\n"


def test_grub_cfg_edited_directly(run):
    guest = run[0]
    assert (f"linux /boot/vmlinuz-6.1.10-11.ph5 root=UUID={UUID['photon-root']} ro init=/lib/systemd/systemd "
            "loglevel=3 console=tty0 console=ttyS0,115200\n") in guest.read("/boot/grub2/grub.cfg")
    assert guest.read("/etc/fstab").startswith(f"UUID={UUID['photon-root']} / ext4 ")
    assert not any("mkconfig" in c for c in guest.calls())


def test_dracut_and_rpm(run):
    assert run[0].calls()[:3] == ["rpm -qa --qf %{NAME}\\n", "rpm -e --nodeps open-vm-tools",
                                  "dracut --force --no-hostonly /boot/initrd.img-6.1.10-11.ph5 6.1.10-11.ph5"]


def test_second_run_changes_nothing(run):
    assert run[1] and run[2] == []


def test_inspect_linux_mounts_read_only_when_nothing_is_mounted(run):
    guest = run[0]
    guest.g.umount_all()
    facts = inspect_linux(guest.g, guest.root)
    assert guest.g.mountpoints() == {}
    assert facts == guest.facts
