"""SLES 15 (VMware by-id names, wicked ifcfg under sysconfig/network, INITRD_MODULES, dracut) through fix_linux."""
import pytest

from tests.builders.phony_recipes import UUID
from tests.linux_guests import fixed_guest

pytestmark = pytest.mark.slow
KVER = "5.14.21-150500.55.39-default"
NET = "/etc/sysconfig/network"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    yield from fixed_guest("sles15", tmp_path_factory.mktemp("sles"))


def test_inspection(run):
    f = run[0].facts
    assert (f["distro"], f["family"], f["major"], f["initramfs_tool"]) == ("sles", "suse", 15, "dracut")
    assert f["network"] == ["ifcfg-suse", "wicked"]
    assert f["kernels"] == [{"version": KVER, "vmlinuz": f"/boot/vmlinuz-{KVER}", "initramfs": f"/boot/initrd-{KVER}"}]


def test_by_id_names_become_uuids(run):
    guest = run[0]
    root, swap = f"UUID={UUID['sles-root']}", f"UUID={UUID['sles-swap']}"
    assert guest.read("/etc/fstab") == f"{root} / ext4 defaults 0 1\n{swap} swap swap defaults 0 0\n"
    assert f"resume={swap} mitigations" in guest.read("/etc/default/grub")
    assert f"root={root} ro console=tty0 console=ttyS0,115200 splash=silent resume={swap} mitigations=auto quiet\n" \
        in guest.read("/boot/grub2/grub.cfg")


def test_initrd_modules_and_dracut(run):
    guest = run[0]
    assert 'INITRD_MODULES="vmw_pvscsi virtio_blk virtio_scsi virtio_net virtio_pci ahci nvme"\n' in \
        guest.read("/etc/sysconfig/kernel")
    assert f"dracut --force --no-hostonly /boot/initrd-{KVER} {KVER}" in guest.calls()
    assert "grub2-mkconfig -o /boot/grub2/grub.cfg" in guest.calls()


def test_wicked_ifcfg_and_routes_follow_the_nic(run):
    guest = run[0]
    assert not guest.g.exists(f"{NET}/ifcfg-ens192") and not guest.g.exists(f"{NET}/ifroute-ens192")
    assert guest.read(f"{NET}/ifcfg-enp1s0") == \
        "BOOTPROTO='static'\nIPADDR='192.0.2.40/24'\nSTARTMODE='auto'\nNAME='VMXNET3 Ethernet'\n"
    assert guest.read(f"{NET}/routes") == "default 192.0.2.1 - enp1s0\n"
    assert guest.read(f"{NET}/ifroute-enp1s0") == "198.51.100.0/24 192.0.2.254 - enp1s0\n"
    assert not guest.g.exists("/etc/udev/rules.d/70-persistent-net.rules")


def test_second_run_changes_nothing(run):
    assert run[1] and run[2] == []
