"""Rocky 9 (UEFI, BLS, dracut, ifcfg + NetworkManager keyfile, SELinux enforcing) through fix_linux."""
import pytest

from tests.builders.phony_recipes import UUID
from tests.linux_guests import fixed_guest

pytestmark = pytest.mark.slow
KERNELS = ["5.14.0-284.11.1.el9_2.x86_64", "5.14.0-362.8.1.el9_3.x86_64"]
ROOT = f"root=UUID={UUID['rocky-root']}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    yield from fixed_guest("rocky9", tmp_path_factory.mktemp("rocky9"), firmware="efi")


def test_inspection(run):
    guest, _, _ = run
    f = guest.facts
    assert (f["distro"], f["family"], f["major"], f["minor"]) == ("rocky", "rhel", 9, 3)
    assert (f["bootloader"], f["initramfs_tool"], f["init"], f["selinux"], f["efi"]) == \
        ("grub2-bls", "dracut", "systemd", "enforcing", True)
    assert f["network"] == ["ifcfg-rh", "networkmanager"]
    assert [(k["version"], k["initramfs"]) for k in f["kernels"]] == \
        [(k, f"/boot/initramfs-{k}.img") for k in KERNELS]


def test_fstab_uses_uuids(run):
    guest, _, _ = run
    efi = guest.g.vfs_uuid("/dev/sda1")
    assert guest.read("/etc/fstab") == (
        f"UUID={UUID['rocky-root']} / ext4 defaults 1 1\nUUID={UUID['rocky-boot']} /boot ext4 defaults 1 2\n"
        f"UUID={efi} /boot/efi vfat umask=0077,shortname=winnt 0 2\n")


def test_bls_entries_and_kernel_cmdline(run):
    guest, _, _ = run
    for k in KERNELS:
        entry = guest.read(f"/boot/loader/entries/0123456789abcdef0123456789abcdef-{k}.conf")
        assert f"options {ROOT} ro crashkernel=1G-4G:192M rhgb quiet console=tty0 console=ttyS0,115200\n" in entry
    assert guest.read("/etc/kernel/cmdline") == \
        f"{ROOT} ro crashkernel=1G-4G:192M rhgb quiet console=tty0 console=ttyS0,115200\n"
    assert 'GRUB_CMDLINE_LINUX="crashkernel=1G-4G:192M rhgb quiet console=tty0 console=ttyS0,115200"' \
        in guest.read("/etc/default/grub")


SETFILES = "setfiles -F -e /proc -e /sys -e /dev -e /run /etc/selinux/targeted/contexts/files/file_contexts /"


def test_guest_tools_were_run(run):
    guest, _, _ = run
    assert guest.calls() == [
        "rpm -qa --qf %{NAME}\\n",
        "rpm -e --nodeps open-vm-tools",
        *[f"dracut --force --no-hostonly /boot/initramfs-{k}.img {k}" for k in KERNELS],
        "grub2-mkconfig -o /boot/grub2/grub.cfg",
        SETFILES,
        "rpm -qa --qf %{NAME}\\n",  # the second run only asks
    ]


def test_initramfs_regenerated_with_backup(run):
    guest, _, _ = run
    assert 'add_drivers+=" virtio_blk virtio_scsi virtio_net virtio_pci ahci nvme "' in \
        guest.read("/etc/dracut.conf.d/90-h2k-virtio.conf")
    for k in KERNELS:
        old = guest.g.initrd_list(f"/boot/initramfs-{k}.img.h2k-orig")
        new = guest.g.initrd_list(f"/boot/initramfs-{k}.img")
        assert not any("virtio_blk" in p for p in old)
        assert any(p.endswith("virtio_blk.ko.xz") for p in new)


def test_efi_fallback_loader(run):
    guest, _, _ = run
    assert guest.read("/boot/efi/EFI/BOOT/BOOTX64.EFI") == guest.read("/boot/efi/EFI/rocky/shimx64.efi")
    assert guest.read("/boot/efi/EFI/BOOT/grubx64.efi") == guest.read("/boot/efi/EFI/rocky/grubx64.efi")


def test_ifcfg_renamed_without_mac(run):
    guest, _, _ = run
    g = guest.g
    assert not g.exists("/etc/sysconfig/network-scripts/ifcfg-ens192")
    ifcfg = guest.read("/etc/sysconfig/network-scripts/ifcfg-enp1s0")
    assert "HWADDR" not in ifcfg and "DEVICE=enp1s0\n" in ifcfg and "NAME=enp1s0\n" in ifcfg
    assert "IPADDR=192.0.2.10\n" in ifcfg and "GATEWAY=192.0.2.1\n" in ifcfg and "DNS1=192.0.2.53\n" in ifcfg
    assert guest.read("/etc/sysconfig/network-scripts/route-enp1s0") == "198.51.100.0/24 via 192.0.2.254 dev enp1s0\n"
    assert "linux.network: NIC ens192 (00:50:56:8a:12:34) -> matched by driver virtio_net where the backend can, " \
           "else named enp1s0" in guest.ctx.log


def test_nm_keyfile_matches_any_ethernet(run):
    guest, _, _ = run
    keyfile = guest.read("/etc/NetworkManager/system-connections/ens192.nmconnection")
    assert "interface-name" not in keyfile and "mac-address" not in keyfile
    assert "address1=192.0.2.10/24,192.0.2.1\n" in keyfile and "type=ethernet\n" in keyfile
    assert guest.g.statns("/etc/NetworkManager/system-connections/ens192.nmconnection")["st_mode"] & 0o777 == 0o600


def test_vmware_tools_removed_and_relabelled_offline(run):
    guest, first, _ = run
    g = guest.g
    assert not g.exists("/usr/bin/vmtoolsd")
    assert not g.is_symlink("/etc/systemd/system/multi-user.target.wants/vmtoolsd.service")
    assert not g.exists("/.autorelabel")  # no relabel-and-reboot at first boot
    assert first[-1].fixer == "linux.selinux" and first[-1].path == "/usr/sbin/setfiles"
    assert SETFILES in guest.calls()
    assert {c.kind for c in first} == {"file", "file-removed", "command", "package"}


def test_second_run_changes_nothing(run):
    _, first, second = run
    assert first and second == []
