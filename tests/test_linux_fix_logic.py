"""Pure logic of the Linux fixers and of inspect_linux: text in, text out (no libguestfs)."""
import yaml

from h2k_planner.models import Severity
from h2k_tasks.fixers.linux import netconfigs as nc
from h2k_tasks.fixers.linux import netkinds
from h2k_tasks.fixers.linux.network import vlan_renames
from h2k_tasks.fixers.linux.blockdev import rewrite_cmdline, rewrite_grubenv, rewrite_table
from h2k_tasks.fixers.linux.bootloader import (add_to_linux_lines, cfg_is_stale, grub_args, grub_default_with_serial,
                                               grub_default_with_uuid, with_serial)
from h2k_tasks.fixers.linux.initramfs import _names, add_to_list_var
from h2k_tasks.fixers.linux.tools import installed_dpkg
from h2k_tasks.inspect_linux import linux_concerns, os_release

SPECS = {"/dev/sda1": "UUID=aaaa", "/dev/sdb2": "UUID=bbbb", "/dev/disk/by-path/pci-0:0-scsi-0:0:1:0-part1": "LABEL=data"}


def resolve(name, mountpoint, swap=False):
    resolve.calls.append((name, mountpoint, swap))
    return SPECS.get(name)


def test_fstab_legacy_names_only():
    resolve.calls = []
    fstab = ("# /dev/sda1 was the root\n/dev/sda1\t/ ext4 defaults 0 1\n/dev/mapper/vg-home /home xfs defaults 0 0\n"
             "/dev/md0 /srv ext4 defaults 0 0\n/dev/sdb2 none swap sw 0 0\n/dev/sdc1 /gone ext4 defaults 0 0\n"
             "/dev/disk/by-path/pci-0:0-scsi-0:0:1:0-part1 /data ext4 defaults 0 2\nUUID=cccc /boot ext4 defaults 0 2\n")
    assert rewrite_table(fstab, 0, resolve, True) == (
        "# /dev/sda1 was the root\nUUID=aaaa\t/ ext4 defaults 0 1\n/dev/mapper/vg-home /home xfs defaults 0 0\n"
        "/dev/md0 /srv ext4 defaults 0 0\nUUID=bbbb none swap sw 0 0\n/dev/sdc1 /gone ext4 defaults 0 0\n"
        "LABEL=data /data ext4 defaults 0 2\nUUID=cccc /boot ext4 defaults 0 2\n")
    assert ("/dev/sdb2", None, True) in resolve.calls and ("/dev/sda1", "/", False) in resolve.calls


def test_crypttab_source_column():
    resolve.calls = []
    assert rewrite_table("luks-1 /dev/sdb2 none luks\n", 1, resolve, False) == "luks-1 UUID=bbbb none luks\n"
    assert resolve.calls == [("/dev/sdb2", None, False)]


def test_cmdline_root_and_resume_but_not_grub_root():
    resolve.calls = []
    cfg = ("set root='hd0,msdos1'\nsearch --set=root /dev/sda1\n"
           "linux /vmlinuz root=/dev/sda1 ro resume=/dev/sdb2 rd.lvm.lv=vg/root\n"
           'GRUB_CMDLINE_LINUX="root=/dev/mapper/vg-root resume=/dev/sdb2"\nAPPEND root=/dev/sdz9\n')
    assert rewrite_cmdline(cfg, resolve) == (
        "set root='hd0,msdos1'\nsearch --set=root /dev/sda1\n"
        "linux /vmlinuz root=UUID=aaaa ro resume=UUID=bbbb rd.lvm.lv=vg/root\n"
        'GRUB_CMDLINE_LINUX="root=/dev/mapper/vg-root resume=UUID=bbbb"\nAPPEND root=/dev/sdz9\n')
    assert ("/dev/sda1", "/", False) in resolve.calls and ("/dev/sdb2", None, True) in resolve.calls


def test_vmware_by_id_matches_but_other_by_id_does_not():
    assert rewrite_cmdline("root=/dev/disk/by-id/wwn-0x6000c29aa-part1 x", lambda *a: "UUID=z") == "root=UUID=z x"
    assert rewrite_cmdline("root=/dev/disk/by-id/ata-Samsung_SSD-part1", lambda *a: "UUID=z") == \
        "root=/dev/disk/by-id/ata-Samsung_SSD-part1"


def test_serial_console_once():
    assert with_serial("ro quiet") == "ro quiet console=tty0 console=ttyS0,115200"
    assert with_serial("ro console=ttyS1,9600") == "ro console=ttyS1,9600"
    cfg = "menuentry x {\n  linux /vmlinuz root=UUID=a ro\n  linuxefi /vmlinuz ro console=ttyS0\n}\n"
    once = add_to_linux_lines(cfg)
    assert once == ("menuentry x {\n  linux /vmlinuz root=UUID=a ro console=tty0 console=ttyS0,115200\n"
                    "  linuxefi /vmlinuz ro console=ttyS0\n}\n")
    assert add_to_linux_lines(once) == once


def test_grubenv_keeps_its_size():
    env = "# GRUB Environment Block\nkernelopts=root=/dev/sda1 ro resume=/dev/sdb2\n"
    env += "#" * (1024 - len(env))
    new = rewrite_grubenv(env, resolve)
    assert len(new) == 1024
    assert new.startswith("# GRUB Environment Block\nkernelopts=root=UUID=aaaa ro resume=UUID=bbbb\n#")
    assert rewrite_grubenv(env[:80], lambda *a: "UUID=" + "x" * 100) == env[:80]


def test_grub_default_serial_once_across_both_variables():
    text = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet console=ttyS0,9600"\nGRUB_CMDLINE_LINUX=""\n'
    assert grub_default_with_serial(text) == text
    assert grub_default_with_serial("GRUB_CMDLINE_LINUX=quiet\n") == \
        'GRUB_CMDLINE_LINUX="quiet console=tty0 console=ttyS0,115200"\n'


def test_grub_cfg_staleness():
    args = grub_args('GRUB_CMDLINE_LINUX="resume=UUID=b console=ttyS0,115200"\n')
    assert args == ["resume=UUID=b", "console=ttyS0,115200"]
    assert cfg_is_stale("  linux /vmlinuz root=UUID=a ro resume=UUID=b\n", args)
    assert not cfg_is_stale("  linux /vmlinuz root=UUID=a resume=UUID=b console=ttyS0,115200 quiet\n", args)
    assert not cfg_is_stale("blscfg\n", args)


def test_shell_list_variables():
    assert add_to_list_var('MODULES=(btrfs)\nHOOKS=(base)\n', "MODULES", ["virtio_blk", "btrfs"], "(", ")") == \
        'MODULES=(btrfs virtio_blk)\nHOOKS=(base)\n'
    assert add_to_list_var('X=1', "INITRD_MODULES", ["a"], '"', '"') == 'X=1\nINITRD_MODULES="a"\n'


def test_module_names_from_image_listing():
    assert _names(["usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko.zst", "kernel/fs/ext4.ko",
                   "usr/lib/modules/6.1/kernel/drivers/scsi/virtio-scsi.ko", "etc/modprobe.d"]) == \
        {"virtio_blk", "ext4", "virtio_scsi"}


def test_dpkg_status_installed_only():
    status = ("Package: open-vm-tools\nStatus: install ok installed\n\n"
              "Package: open-vm-tools-desktop\nStatus: deinstall ok config-files\n\n"
              "Package: hyperv-daemons\nStatus: install ok unpacked\n")
    assert installed_dpkg(status) == ["open-vm-tools", "hyperv-daemons"]


def test_ifcfg_drops_mac_and_renames():
    text = 'DEVICE="ens192"\nHWADDR=00:50:56:00:00:01\nMACADDR=00:50:56:00:00:02\nIPADDR=10.0.0.1\nNAME="System ens192"\n'
    assert nc.ifcfg_pins(text) == ("ens192", "00:50:56:00:00:01")
    assert nc.ifcfg(text, {"ens192": "enp1s0"}) == 'DEVICE="enp1s0"\nIPADDR=10.0.0.1\nNAME="System enp1s0"\n'
    assert nc.ifcfg("DEVICE=ens1920\n", {"ens192": "enp1s0"}) == "DEVICE=ens1920\n"


def test_nm_keyfile_several_nics_renamed():
    text = "[connection]\ninterface-name=ens224\n[ethernet]\nmac-address=00:50:56:00:00:02\n"
    assert nc.nm_pins(text) == ("ens224", "00:50:56:00:00:02")
    assert nc.nm_keyfile(text, {"ens192": "enp1s0", "ens224": "enp2s0"}, anyname=False) == \
        "[connection]\ninterface-name=enp2s0\n[ethernet]\n"


def test_netplan_several_nics_and_networkmanager_renderer():
    text = ("network:\n  renderer: NetworkManager\n  ethernets:\n    ens192:\n      dhcp4: true\n"
            "    lan2:\n      match: {macaddress: '00:50:56:00:00:02'}\n      set-name: ens224\n      dhcp4: false\n")
    assert nc.netplan_pins(text) == [("ens192", None), ("ens224", "00:50:56:00:00:02")]
    new = yaml.safe_load(nc.netplan(text, {"ens192": "enp1s0", "ens224": "enp2s0"}, anyname=False))
    assert new["network"]["ethernets"] == {"ens192": {"match": {"name": "enp1s0"}, "dhcp4": True},
                                           "lan2": {"match": {"name": "enp2s0"}, "dhcp4": False}}
    once = nc.netplan(text, {"ens192": "enp1s0", "ens224": "enp2s0"}, anyname=False)
    assert nc.netplan(once, {"enp1s0": "enp1s0", "enp2s0": "enp2s0"}, anyname=False) == once


def test_networkd_network_and_link():
    text = "[Match]\nName=ens192\nMACAddress=00:50:56:00:00:01\n[Network]\nDHCP=yes\n"
    assert nc.networkd_pins(text) == ("ens192", "00:50:56:00:00:01")
    assert nc.networkd_network(text, {"ens192": "enp1s0"}, anyname=False, by_mac={}) == \
        "[Match]\nName=enp1s0\n[Network]\nDHCP=yes\n"
    # Matched by MAC alone: never left with an empty [Match] (which would match every link, lo too).
    mac_only = "[Match]\nMACAddress=00:50:56:00:00:01\n\n[Network]\nDHCP=ipv4\n"
    assert nc.networkd_network(mac_only, {}, anyname=True, by_mac={}) == \
        "[Match]\nDriver=virtio_net\n\n[Network]\nDHCP=ipv4\n"
    assert nc.networkd_network(mac_only, {}, anyname=False, by_mac={"00:50:56:00:00:01": "enp2s0"}) == \
        "[Match]\nName=enp2s0\n\n[Network]\nDHCP=ipv4\n"
    assert nc.networkd_pins(mac_only) == (None, "00:50:56:00:00:01")
    # A MACAddress= outside [Match] (the address to set) is not a pin.
    setter = "[Match]\nName=ens192\n[Link]\nMACAddress=02:00:00:00:00:01\n"
    assert nc.networkd_network(setter, {"ens192": "enp1s0"}, anyname=False, by_mac={}) == \
        "[Match]\nName=enp1s0\n[Link]\nMACAddress=02:00:00:00:00:01\n"
    assert nc.networkd_pins("[Match]\nName=en*\n") == (None, None)
    assert nc.networkd_link_pins_mac("[Match]\nMACAddress=00:50:56:00:00:01\n[Link]\nName=ens192\n")
    assert not nc.networkd_link_pins_mac("[Match]\nOriginalName=*\n[Link]\nNamePolicy=kernel\nMACAddress=x\n")


def test_interfaces_pins_skip_loopback_and_aliases():
    text = "auto lo\niface lo inet loopback\niface ens192 inet static\n hwaddress ether 00:50:56:aa:bb:cc\n" \
           "iface ens192:1 inet static\niface ens192 inet6 auto\n"
    assert nc.interfaces_pins(text) == [("ens192", "00:50:56:aa:bb:cc"), ("ens192", None)]


def test_ifcfg_kinds_from_type_keys_and_references():
    assert netkinds.ifcfg("DEVICE=bond0\nBONDING_OPTS=mode=1\n", "bond0") == ({"bond0": "bond"}, set())
    assert netkinds.ifcfg("TYPE=Ethernet\nMASTER=bond1\nSLAVE=yes\n", "ens192") == ({"bond1": "bond"}, set())
    assert netkinds.ifcfg("TYPE=Ethernet\nBRIDGE=br0\n", "ens192") == ({"br0": "bridge"}, set())
    assert netkinds.ifcfg('DEVICETYPE=TeamPort\nTEAM_MASTER=team0\n', "ens192") == ({"team0": "team"}, set())
    assert netkinds.ifcfg("DEVICETYPE=Team\n", "team0") == ({"team0": "team"}, set())
    assert netkinds.ifcfg("VLAN=yes\n", "ens192.7") == ({"ens192.7": "vlan"}, {"ens192"})
    assert netkinds.ifcfg("VLAN=yes\nPHYSDEV=eno1\n", "vlan7") == ({"vlan7": "vlan"}, {"eno1"})
    assert netkinds.ifcfg("TYPE=InfiniBand\n", "ib0") == ({"ib0": "infiniband"}, set())
    assert netkinds.ifcfg("BOOTPROTO=dhcp\n", "ens192") == ({}, set())
    suse = "BRIDGE='yes'\nBRIDGE_PORTS='ens192 ens224'\n"
    assert netkinds.ifcfg(suse, "br0") == ({"br0": "bridge"}, {"ens192", "ens224"})
    assert netkinds.ifcfg("BONDING_MASTER=yes\nBONDING_SLAVE_0=eth0\n", "bond0") == ({"bond0": "bond"}, {"eth0"})
    assert netkinds.ifcfg("ETHERDEVICE='eth1'\n", "vlan5") == ({"vlan5": "vlan"}, {"eth1"})


def test_nm_kinds_ports_and_parents():
    port = "[connection]\ntype=802-3-ethernet\ninterface-name=ens192\nmaster=br0\nslave-type=bridge\n"
    assert netkinds.nm_type(port) == "ethernet" and netkinds.nm_keyfile(port) == ({"br0": "bridge"}, set())
    vlan = "[connection]\ntype=vlan\ninterface-name=v7\n[vlan]\nparent=ens224\nid=7\n"
    assert netkinds.nm_keyfile(vlan) == ({"v7": "vlan"}, {"ens224"})
    by_uuid = "[connection]\ntype=vlan\n[vlan]\nparent=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03\n"
    assert netkinds.nm_keyfile(by_uuid) == ({}, set())
    assert nc.nm_keyfile("[vlan]\nparent=ens224\n", {"ens224": "enp2s0"}, anyname=False) == "[vlan]\nparent=enp2s0\n"


def test_netplan_networkd_and_ifupdown_kinds():
    plan = "network:\n  bridges:\n    br0: {interfaces: [ens192]}\n  vlans:\n    v7: {id: 7, link: ens192}\n"
    assert netkinds.netplan(plan) == ({"br0": "bridge", "v7": "vlan"}, set())
    assert netkinds.networkd_netdev("[NetDev]\nName=br0\nKind=bridge\n") == ({"br0": "bridge"}, set())
    ifupdown = ("iface br0 inet dhcp\n bridge_ports ens192 ens224\niface ens256 inet manual\n bond-master bond0\n"
                "iface bond0 inet manual\n bond-slaves none\niface ens161.5 inet manual\n")
    assert netkinds.interfaces(ifupdown) == ({"br0": "bridge", "bond0": "bond"}, {"ens192", "ens224", "ens161"})
    assert not netkinds.is_vlan_name("ens192") and not netkinds.is_vlan_name("eth0:1")


def test_only_physical_nics_are_named_and_vlans_follow_their_parent():
    virtual = {"bond0": "bond", "ens192.100": "vlan", "bond0.200": "vlan", "vlan300": "vlan"}
    assert vlan_renames(virtual, {"ens192": "enp1s0", "bond0": "bond0"}) == {"ens192.100": "enp1s0.100"}
    assert vlan_renames(virtual, {"ens192": "ens192"}) == {}


def _facts(**kw):
    base = {"distro": "rhel", "family": "rhel", "major": 9, "minor": 2, "product": "RHEL 9.2", "bootloader": "grub2",
            "initramfs_tool": "dracut", "network": ["ifcfg-rh"], "kernels": [{"version": "5.14.0-1", "initramfs": "x"}]}
    return {**base, **kw}


def test_concerns_for_a_good_guest_are_none():
    assert linux_concerns(_facts()) == []


def test_concerns_unknown_old_and_broken_guests():
    ids = lambda facts: {c.id: c.severity for c in linux_concerns(facts)}  # noqa: E731
    assert ids(_facts(distro="gentoo", family="unknown")) == {"linux-unknown-distro": Severity.warning}
    assert ids(_facts(distro="centos", major=6)) == {"linux-old-release": Severity.warning}
    assert ids(_facts(kernels=[], initramfs_tool=None, bootloader="unknown", network=[])) == {
        "linux-no-kernel": Severity.critical, "linux-no-initramfs-tool": Severity.critical,
        "linux-unknown-bootloader": Severity.warning, "linux-no-network-config": Severity.info}
    assert ids(_facts(distro="photon", family="photon", major=5, kernels=[{"version": "6.1.10-11.ph5-esx"}])) == \
        {"linux-esx-kernel": Severity.critical}


def test_os_release_fallback():
    assert os_release('ID="photon"\nVERSION_ID=4.0\nNAME="VMware Photon OS"\n') == \
        {"distro": "photon", "family": "photon", "major": 4, "minor": 0, "product": "VMware Photon OS"}
    assert os_release("NAME=x\n") == {}


def test_grub_root_by_uuid_for_the_guests_own_update_grub():
    assert grub_default_with_uuid('X=1\nGRUB_DISABLE_LINUX_UUID="true"\n') == "X=1\nGRUB_DISABLE_LINUX_UUID=false\n"
    kept = "#GRUB_DISABLE_LINUX_UUID=true\nGRUB_DISABLE_LINUX_UUID=false\n"
    assert grub_default_with_uuid(kept) == kept
