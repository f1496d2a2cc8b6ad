"""Recipes of the phony Linux guests: disk layout (fixed filesystem UUIDs) and the files to write.

Each recipe is plain data, so its hash keys the image cache. File entries are
("file", path, text[, mode]), ("initrd", path, members), ("tool", path, phony tool name), ("link", path, target).
"""
from __future__ import annotations

CALLS_LOG = "/var/log/phony-calls.log"
MAC = "00:50:56:8a:12:34"
IDS = "scsi-36000c29a1b2c3d4e5f6a7b8c9d0e1f2"  # a VMware disk's by-id name (NAA 6000c29...)

UUID = {
    "rocky-boot": "11111111-0000-4000-8000-000000000002",
    "rocky-root": "11111111-0000-4000-8000-000000000003",
    "ubuntu-root": "22222222-0000-4000-8000-000000000001",
    "ubuntu-swap": "22222222-0000-4000-8000-000000000002",
    "debian-root": "33333333-0000-4000-8000-000000000001",
    "debian-swap": "33333333-0000-4000-8000-000000000002",
    "sles-root": "44444444-0000-4000-8000-000000000001",
    "sles-swap": "44444444-0000-4000-8000-000000000002",
    "photon-root": "55555555-0000-4000-8000-000000000001",
    "lvm-boot": "66666666-0000-4000-8000-000000000001",
    "lvm-root": "66666666-0000-4000-8000-000000000002",
    "lvm-swap": "66666666-0000-4000-8000-000000000003",
}

VIRTIO = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"]
_PATHS = {"virtio_blk": "block", "virtio_scsi": "scsi", "virtio_net": "net", "virtio_pci": "virtio",
          "vmw_pvscsi": "scsi", "vmxnet3": "net/vmxnet3", "ahci": "ata", "nvme": "nvme/host", "ext4": "../fs/ext4"}
KERNEL_MODULES_ALL = [f"usr/lib/modules/any/kernel/drivers/{_PATHS[m]}/{m}.ko.xz" for m in [*VIRTIO, "ahci", "nvme"]]


def _modules(kver: str, names: list[str]) -> list[str]:
    return [f"usr/lib/modules/{kver}/kernel/drivers/{_PATHS[m]}/{m}.ko.xz" for m in names]


VMWARE_ONLY = ["vmw_pvscsi", "vmxnet3", "ext4"]


def _os_release(id_: str, version: str, name: str, like: str = "") -> tuple:
    text = f'NAME="{name}"\nID="{id_}"\nVERSION_ID="{version}"\nPRETTY_NAME="{name} {version}"\n'
    return ("file", "/etc/os-release", text + (f'ID_LIKE="{like}"\n' if like else ""))


def _base(systemd_dir: str) -> list:
    return [
        ("file", "/etc/hostname", "vmware-guest\n"),
        ("file", "/etc/hosts", "127.0.0.1 localhost\n"),
        ("file", f"{systemd_dir}/systemd", "", 0o755),
        ("file", "/etc/udev/udev.conf", "#udev_log=info\n"),
    ]


def _rpm_vmtools(unitdir: str) -> list:
    files = ["/usr/bin/vmtoolsd", "/etc/vmware-tools/tools.conf", f"{unitdir}/vmtoolsd.service"]
    return [
        ("tool", "/usr/bin/rpm", "rpm"),
        ("file", "/usr/bin/vmtoolsd", "", 0o755),
        ("file", "/etc/vmware-tools/tools.conf", "[logging]\n"),
        ("file", f"{unitdir}/vmtoolsd.service", "[Service]\nExecStart=/usr/bin/vmtoolsd\n"),
        ("link", "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service", f"{unitdir}/vmtoolsd.service"),
        ("file", "/var/lib/phony-rpm/open-vm-tools", "\n".join(files) + "\n"),
        ("file", "/var/lib/phony-rpm/bash", ""),
    ]


def _deb_vmtools() -> list:
    files = ["/usr/bin/vmtoolsd", "/etc/vmware-tools/tools.conf", "/lib/systemd/system/open-vm-tools.service"]
    status = (
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\n"
        "Package: open-vm-tools\nStatus: install ok installed\nVersion: 2:12.2.0-1\n\n"
    )
    return [
        ("tool", "/usr/bin/dpkg", "dpkg"),
        ("file", "/var/lib/dpkg/status", status),
        ("file", "/var/lib/dpkg/info/open-vm-tools.list", "\n".join(files) + "\n"),
        ("file", "/usr/bin/vmtoolsd", "", 0o755),
        ("file", "/etc/vmware-tools/tools.conf", "[logging]\n"),
        ("file", "/lib/systemd/system/open-vm-tools.service", "[Service]\nExecStart=/usr/bin/vmtoolsd\n"),
        ("link", "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
         "/lib/systemd/system/open-vm-tools.service"),
    ]


def _grub_tool(path: str, cfg: str) -> list:
    return [("tool", path, "grub-mkconfig"), ("file", "/usr/lib/phony/grub-cfg-path", cfg + "\n")]


def _grub_cfg(kernels: list[str], root: str, args: str, initrd_prefix: str) -> str:
    out = ["### BEGIN /etc/grub.d/10_linux ###"]
    for k in kernels:
        out += [f"menuentry 'Linux {k}' {{", "  set root='hd0,msdos1'",
                f"  linux /boot/vmlinuz-{k} root={root} ro {args}", f"  initrd /boot/{initrd_prefix}{k}", "}"]
    return "\n".join(out) + "\n"


def _kernels(kernels: list[str], initrd_name: str, in_image: list[str], builtin: list[str] = ()) -> list:
    out = []
    for k in kernels:
        out.append(("file", f"/boot/vmlinuz-{k}", "phony kernel\n"))
        out.append(("initrd", f"/boot/{initrd_name.format(k)}", _modules(k, in_image)))
        text = "".join(f"kernel/drivers/{_PATHS[m]}/{m}.ko\n" for m in builtin)
        out.append(("file", f"/lib/modules/{k}/modules.builtin", text))
    return out


def rocky9() -> dict:
    kernels = ["5.14.0-362.8.1.el9_3.x86_64", "5.14.0-284.11.1.el9_2.x86_64"]
    mid = "0123456789abcdef0123456789abcdef"
    files = [
        _os_release("rocky", "9.3", "Rocky Linux", "rhel centos fedora"),
        ("file", "/etc/redhat-release", "Rocky Linux release 9.3 (Blue Onyx)\n"),
        ("file", "/etc/fstab", "/dev/sda3 / ext4 defaults 1 1\n/dev/sda2 /boot ext4 defaults 1 2\n"
                               "/dev/sda1 /boot/efi vfat umask=0077,shortname=winnt 0 2\n"),
        ("file", "/etc/default/grub", 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="crashkernel=1G-4G:192M rhgb quiet"\n'
                                      "GRUB_DISABLE_RECOVERY=true\nGRUB_ENABLE_BLSCFG=true\n"),
        ("file", "/boot/grub2/grub.cfg", "# generated by the installer\nblscfg\n"),
        ("file", "/boot/efi/EFI/rocky/grub.cfg",
         f"search --no-floppy --fs-uuid --set=dev {UUID['rocky-boot']}\nset prefix=($dev)/grub2\n"
         "configfile $prefix/grub.cfg\n"),
        ("file", "/boot/efi/EFI/rocky/shimx64.efi", "phony shim\n"),
        ("file", "/boot/efi/EFI/rocky/grubx64.efi", "phony grub\n"),
        ("file", "/etc/kernel/cmdline", "root=/dev/sda3 ro crashkernel=1G-4G:192M rhgb quiet\n"),
        *[("file", f"/boot/loader/entries/{mid}-{k}.conf",
           f"title Rocky Linux ({k})\nversion {k}\nlinux /vmlinuz-{k}\ninitrd /initramfs-{k}.img\n"
           f"options root=/dev/sda3 ro crashkernel=1G-4G:192M rhgb quiet\ngrub_users $grub_users\n") for k in kernels],
        ("file", "/etc/sysconfig/network-scripts/ifcfg-ens192",
         f'TYPE=Ethernet\nBOOTPROTO=none\nNAME=ens192\nDEVICE=ens192\nONBOOT=yes\nIPADDR=192.0.2.10\nPREFIX=24\n'
         f'GATEWAY=192.0.2.1\nDNS1=192.0.2.53\nHWADDR={MAC.upper()}\n'),
        ("file", "/etc/sysconfig/network-scripts/route-ens192", "198.51.100.0/24 via 192.0.2.254 dev ens192\n"),
        ("file", "/etc/NetworkManager/system-connections/ens192.nmconnection",
         f"[connection]\nid=ens192\nuuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03\ntype=ethernet\ninterface-name=ens192\n\n"
         f"[ethernet]\nmac-address={MAC.upper()}\n\n[ipv4]\naddress1=192.0.2.10/24,192.0.2.1\ndns=192.0.2.53;\n"
         "method=manual\n\n[ipv6]\nmethod=disabled\n", 0o600),
        ("file", "/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n"),
        ("file", "/etc/selinux/targeted/contexts/files/file_contexts", "/.*\tsystem_u:object_r:default_t:s0\n"),
        ("tool", "/usr/sbin/setfiles", "setfiles"),
        ("tool", "/usr/bin/dracut", "dracut"),
        *_grub_tool("/usr/sbin/grub2-mkconfig", "/boot/grub2/grub.cfg"),
        *_rpm_vmtools("/usr/lib/systemd/system"),
        *_base("/usr/lib/systemd"),
        *_kernels(kernels, "initramfs-{}.img", VMWARE_ONLY),
    ]
    return {"disks": [{"mb": 160, "table": "gpt", "parts": [
        {"mb": 24, "fs": "vfat", "mount": "/boot/efi"},
        {"mb": 40, "fs": "ext4", "mount": "/boot", "uuid": UUID["rocky-boot"]},
        {"mb": 0, "fs": "ext4", "mount": "/", "uuid": UUID["rocky-root"]}]}], "files": files}


def ubuntu2204() -> dict:
    kernels = ["5.15.0-91-generic", "5.15.0-88-generic"]
    netplan = (
        "network:\n  version: 2\n  ethernets:\n    ens192:\n      match:\n        macaddress: " + MAC + "\n"
        "      set-name: ens192\n      addresses:\n      - 192.0.2.20/24\n      routes:\n      - to: default\n"
        "        via: 192.0.2.1\n      nameservers:\n        addresses:\n        - 192.0.2.53\n"
    )
    files = [
        _os_release("ubuntu", "22.04", "Ubuntu", "debian"),
        ("file", "/etc/fstab", "# <file system> <mount point> <type> <options> <dump> <pass>\n"
                               "/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sda2 none swap sw 0 0\n"),
        ("file", "/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'
                                      'GRUB_CMDLINE_LINUX="resume=/dev/sda2"\n'),
        ("file", "/boot/grub/grub.cfg", _grub_cfg(kernels, "/dev/sda1", "resume=/dev/sda2 quiet splash", "initrd.img-")),
        ("file", "/boot/grub/device.map", "(hd0) /dev/sda\n"),
        ("file", "/etc/netplan/00-installer-config.yaml", netplan, 0o600),
        ("file", "/etc/initramfs-tools/modules", "# List of modules that you want to include in your initramfs.\n"),
        ("tool", "/usr/sbin/update-initramfs", "update-initramfs"),
        *_grub_tool("/usr/sbin/update-grub", "/boot/grub/grub.cfg"),
        *_deb_vmtools(),
        *_base("/lib/systemd"),
        *_kernels(kernels, "initrd.img-{}", ["virtio_blk", "virtio_scsi", "virtio_net", "ext4"], ["virtio_pci"]),
    ]
    return {"disks": [{"mb": 160, "table": "mbr", "parts": [
        {"mb": 120, "fs": "ext4", "mount": "/", "uuid": UUID["ubuntu-root"]},
        {"mb": 0, "fs": "swap", "uuid": UUID["ubuntu-swap"]}]}], "files": files}


def _debian_common(kernels: list[str]) -> list:
    return [
        _os_release("debian", "12", "Debian GNU/Linux"),
        ("file", "/etc/debian_version", "12.4\n"),
        ("file", "/etc/initramfs-tools/modules", "# initramfs-tools modules\n"),
        ("tool", "/usr/sbin/update-initramfs", "update-initramfs"),
        *_grub_tool("/usr/sbin/update-grub", "/boot/grub/grub.cfg"),
        *_deb_vmtools(),
        *_base("/lib/systemd"),
        *_kernels(kernels, "initrd.img-{}", VMWARE_ONLY),
    ]


def debian12() -> dict:
    kernels = ["6.1.0-13-amd64"]
    by_path = "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:0:0-part2"
    interfaces = (
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
        "# The primary network interface\nallow-hotplug ens192\niface ens192 inet static\n"
        f"    address 192.0.2.30/24\n    gateway 192.0.2.1\n    hwaddress ether {MAC}\n"
        "    dns-nameservers 192.0.2.53\n    up ip route add 198.51.100.0/24 via 192.0.2.254 dev ens192\n"
    )
    files = [
        *_debian_common(kernels),
        ("file", "/etc/fstab", f"UUID={UUID['debian-root']} / ext4 errors=remount-ro 0 1\n{by_path} none swap sw 0 0\n"),
        ("file", "/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'),
        ("file", "/boot/grub/grub.cfg", _grub_cfg(kernels, "/dev/sda1", "quiet", "initrd.img-")),
        ("file", "/etc/network/interfaces", interfaces),
        ("file", "/etc/udev/rules.d/70-persistent-net.rules",
         f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{MAC}", NAME="ens192"\n'),
        ("file", "/lib/systemd/system/vboxadd.service", "[Service]\nExecStart=/opt/VBoxGuestAdditions/init/vboxadd\n"),
        ("link", "/etc/systemd/system/multi-user.target.wants/vboxadd.service", "/lib/systemd/system/vboxadd.service"),
    ]
    return {"disks": [{"mb": 160, "table": "mbr", "parts": [
        {"mb": 120, "fs": "ext4", "mount": "/", "uuid": UUID["debian-root"]},
        {"mb": 0, "fs": "swap", "uuid": UUID["debian-swap"]}]}], "files": files}


def sles15() -> dict:
    kernels = ["5.14.21-150500.55.39-default"]
    files = [
        _os_release("sles", "15.5", "SLES", "suse"),
        ("file", "/etc/fstab", f"/dev/disk/by-id/{IDS}-part1 / ext4 defaults 0 1\n/dev/sda2 swap swap defaults 0 0\n"),
        ("file", "/etc/default/grub", 'GRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX=""\nGRUB_CMDLINE_LINUX_DEFAULT='
                                      f'"splash=silent resume=/dev/disk/by-id/{IDS}-part2 mitigations=auto quiet"\n'),
        ("file", "/boot/grub2/grub.cfg", _grub_cfg(kernels, f"/dev/disk/by-id/{IDS}-part1",
                                                   f"splash=silent resume=/dev/disk/by-id/{IDS}-part2 mitigations=auto quiet",
                                                   "initrd-")),
        ("file", "/etc/sysconfig/network/ifcfg-ens192",
         f"BOOTPROTO='static'\nIPADDR='192.0.2.40/24'\nSTARTMODE='auto'\nLLADDR='{MAC}'\nNAME='VMXNET3 Ethernet'\n"),
        ("file", "/etc/sysconfig/network/routes", "default 192.0.2.1 - ens192\n"),
        ("file", "/etc/sysconfig/network/ifroute-ens192", "198.51.100.0/24 192.0.2.254 - ens192\n"),
        ("file", "/etc/udev/rules.d/70-persistent-net.rules",
         f'SUBSYSTEM=="net", ACTION=="add", ATTR{{address}}=="{MAC}", NAME="ens192"\n'),
        ("file", "/etc/sysconfig/kernel", 'INITRD_MODULES="vmw_pvscsi"\nDOMU_INITRD_MODULES=""\n'),
        ("file", "/usr/sbin/wicked", "", 0o755),
        ("file", "/etc/wicked/common.xml", "<config/>\n"),
        ("tool", "/usr/bin/dracut", "dracut"),
        *_grub_tool("/usr/sbin/grub2-mkconfig", "/boot/grub2/grub.cfg"),
        *_rpm_vmtools("/usr/lib/systemd/system"),
        *_base("/usr/lib/systemd"),
        *_kernels(kernels, "initrd-{}", VMWARE_ONLY),
    ]
    return {"disks": [{"mb": 160, "table": "mbr", "parts": [
        {"mb": 120, "fs": "ext4", "mount": "/", "uuid": UUID["sles-root"]},
        {"mb": 0, "fs": "swap", "uuid": UUID["sles-swap"]}]}], "files": files}


def photon5() -> dict:
    kernels = ["6.1.10-11.ph5"]
    files = [
        _os_release("photon", "5.0", "VMware Photon OS"),
        ("file", "/etc/fstab", "/dev/sda1 / ext4 defaults,barrier,noatime,noacl,data=ordered 1 1\n"),
        ("file", "/boot/grub2/grub.cfg", _grub_cfg(kernels, "/dev/sda1", "init=/lib/systemd/systemd loglevel=3",
                                                   "initrd.img-")),
        ("file", "/etc/systemd/network/10-static-en.network",
         f"[Match]\nName=ens192\nMACAddress={MAC}\n\n[Network]\nAddress=192.0.2.50/24\nGateway=192.0.2.1\n"
         "DNS=192.0.2.53\n\n[Route]\nDestination=198.51.100.0/24\nGateway=192.0.2.254\n"),
        ("file", "/etc/systemd/network/10-ens192.link", f"[Match]\nMACAddress={MAC}\n\n[Link]\nName=ens192\n"),
        ("file", "/etc/systemd/network/99-dhcp-en.network", "[Match]\nName=e*\n\n[Network]\nDHCP=yes\n"),
        ("tool", "/usr/bin/dracut", "dracut"),
        *_rpm_vmtools("/usr/lib/systemd/system"),
        *_base("/usr/lib/systemd"),
        *_kernels(kernels, "initrd.img-{}", VMWARE_ONLY),
    ]
    return {"disks": [{"mb": 128, "table": "mbr", "parts": [
        {"mb": 0, "fs": "ext4", "mount": "/", "uuid": UUID["photon-root"]}]}], "files": files}


def lvm2disk() -> dict:
    kernels = ["6.1.0-13-amd64"]
    files = [
        *_debian_common(kernels),
        ("file", "/etc/fstab", "/dev/mapper/vg0-root / ext4 errors=remount-ro 0 1\n/dev/sda1 /boot ext4 defaults 0 2\n"
                               "/dev/mapper/vg0-swap none swap sw 0 0\n"),
        ("file", "/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="resume=/dev/mapper/vg0-swap"\n'
                                      "GRUB_DISABLE_LINUX_UUID=true\n"),
        ("file", "/boot/grub/grub.cfg", _grub_cfg(kernels, "/dev/mapper/vg0-root", "resume=/dev/mapper/vg0-swap quiet",
                                                  "initrd.img-")),
        ("file", "/etc/network/interfaces", "auto lo\niface lo inet loopback\n\nallow-hotplug ens192\niface ens192 inet dhcp\n"),
    ]
    return {"disks": [
        {"mb": 64, "table": "mbr", "parts": [{"mb": 0, "fs": "ext4", "mount": "/boot", "uuid": UUID["lvm-boot"]}]},
        {"mb": 192, "table": "mbr", "parts": [{"mb": 0, "fs": "lvm"}]}],
        "lvm": {"vg": "vg0", "lvs": [{"name": "root", "mb": 120, "fs": "ext4", "mount": "/", "uuid": UUID["lvm-root"]},
                                     {"name": "swap", "mb": 32, "fs": "swap", "uuid": UUID["lvm-swap"]}]},
        "files": files}


RECIPES = {"rocky9": rocky9, "ubuntu2204": ubuntu2204, "debian12": debian12, "sles15": sles15,
           "photon5": photon5, "lvm2disk": lvm2disk}
