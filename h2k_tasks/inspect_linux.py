"""Plan-time facts about a Linux guest, and the concerns they raise.

`inspect_linux(g, root)` reads a guest found by libguestfs inspection: distro family and version,
init system, bootloader, kernels with their initramfs images, initramfs tool, package manager,
network configuration backends, SELinux mode. The fixers in `h2k_tasks.fixers.linux` use the same facts.
"""
from __future__ import annotations

import contextlib
import re

from h2k_planner.models import Concern, Severity
from h2k_tasks.fixers.guestfiles import find_tool, listdir, read

FAMILIES = {
    "rhel": ["rhel", "centos", "rocky", "almalinux", "alma", "oraclelinux", "scientificlinux", "fedora",
             "redhat-based", "circle", "kylin"],
    "debian": ["debian", "ubuntu", "linuxmint", "kalilinux"],
    "suse": ["sles", "opensuse", "suse-based"],
    "photon": ["photon"],
    "arch": ["archlinux", "manjaro"],
}
# Oldest major version of each distro whose kernel has the virtio drivers and whose tools the fixers know.
OLDEST = {"rhel": 7, "centos": 7, "rocky": 8, "almalinux": 8, "oraclelinux": 7, "ubuntu": 16, "debian": 9,
          "sles": 12, "photon": 3}
INITRAMFS_NAMES = ("initramfs-{}.img", "initrd.img-{}", "initrd-{}")
NETWORK_DIRS = {
    "ifcfg-rh": ("/etc/sysconfig/network-scripts", "ifcfg-", ""),
    "ifcfg-suse": ("/etc/sysconfig/network", "ifcfg-", ""),
    "networkmanager": ("/etc/NetworkManager/system-connections", "", ".nmconnection"),
    "netplan": ("/etc/netplan", "", ".yaml"),
    "systemd-networkd": ("/etc/systemd/network", "", ".network"),
}


def family_of(distro: str) -> str:
    return next((f for f, names in FAMILIES.items() if distro in names), "unknown")


@contextlib.contextmanager
def _mounted(g, root: str):
    """Mount the guest read-only for the duration, unless something is mounted already."""
    if g.mountpoints():
        yield
        return
    mps = g.inspect_get_mountpoints(root)
    for mp in sorted(mps, key=len):
        with contextlib.suppress(RuntimeError):
            g.mount_ro(mps[mp], mp)
    try:
        yield
    finally:
        g.umount_all()


def inspect_linux(g, root: str) -> dict:
    """Facts about the Linux guest at inspection root `root` (mounts it read-only if nothing is mounted)."""
    distro = g.inspect_get_distro(root)
    facts = {
        "distro": distro,
        "family": family_of(distro),
        "major": g.inspect_get_major_version(root),
        "minor": g.inspect_get_minor_version(root),
        "product": g.inspect_get_product_name(root),
    }
    with _mounted(g, root):
        if distro == "unknown":  # libguestfs does not know every distro (e.g. Photon OS in 1.48)
            facts.update(os_release(read(g, "/etc/os-release") or read(g, "/usr/lib/os-release") or ""))
        facts.update(
            init=_init_system(g),
            kernels=kernels(g),
            initramfs_tool=initramfs_tool(g),
            package_manager=_package_manager(g),
            network=network_backends(g),
            selinux=selinux_mode(g),
            efi=bool(g.is_dir("/boot/efi/EFI")),
            **bootloader_facts(g),
        )
    return facts


def os_release(text: str) -> dict:
    """distro/family/major/minor/product from os-release text; {} when it names no ID."""
    values = dict(re.findall(r'^(\w+)=["\']?([^"\'\n]*)', text, re.M))
    if not values.get("ID"):
        return {}
    version = [int(v) for v in re.findall(r"\d+", values.get("VERSION_ID", ""))[:2]] + [0, 0]
    return {"distro": values["ID"], "family": family_of(values["ID"]), "major": version[0], "minor": version[1],
            "product": values.get("PRETTY_NAME") or values.get("NAME") or values["ID"]}


def _init_system(g) -> str:
    if any(g.exists(p) for p in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")):
        return "systemd"
    if g.exists("/sbin/openrc"):
        return "openrc"
    return "sysvinit" if g.exists("/etc/inittab") else "unknown"


def kernels(g) -> list[dict]:
    """Installed kernels (those with a /lib/modules tree; rescue images are not kernels) and their initramfs."""
    out = []
    for path in listdir(g, "/boot", prefix="vmlinuz-"):
        version = path.removeprefix("/boot/vmlinuz-")
        if not g.is_dir(f"/lib/modules/{version}", followsymlinks=True):
            continue
        images = [f"/boot/{n.format(version)}" for n in INITRAMFS_NAMES]
        out.append({"version": version, "vmlinuz": path,
                    "initramfs": next((p for p in images if g.is_file(p, followsymlinks=True)), None)})
    return out


def initramfs_tool(g) -> str | None:
    if find_tool(g, "dracut"):
        return "dracut"
    if find_tool(g, "update-initramfs"):
        return "initramfs-tools"
    if find_tool(g, "mkinitcpio"):
        return "mkinitcpio"
    return None


def _package_manager(g) -> str | None:
    if g.is_file("/var/lib/dpkg/status"):
        return "dpkg"
    return "rpm" if find_tool(g, "rpm") else None


def network_backends(g) -> list[str]:
    found = [name for name, (d, prefix, suffix) in NETWORK_DIRS.items() if listdir(g, d, suffix, prefix)]
    if "ifcfg-suse" in found and g.exists("/usr/sbin/wicked"):
        found.append("wicked")
    if g.is_file("/etc/network/interfaces"):
        found.append("ifupdown")
    return found


def selinux_mode(g) -> str | None:
    text = read(g, "/etc/selinux/config")
    m = re.search(r"^\s*SELINUX\s*=\s*(\w+)", text or "", re.M)
    return m.group(1).lower() if m else None


def bootloader_facts(g) -> dict:
    cfg = next((p for p in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg") if g.is_file(p)), None)
    if cfg is None:
        cfg = next(iter(p for p in listdir(g, "/boot/efi/EFI") if g.is_file(f"{p}/grub.cfg")), None)
        cfg = cfg and f"{cfg}/grub.cfg"
    if cfg:
        bls = "GRUB_ENABLE_BLSCFG=true" in (read(g, "/etc/default/grub") or "")
        return {"bootloader": "grub2-bls" if bls else "grub2", "grub_cfg": cfg}
    for path in ("/boot/extlinux/extlinux.conf", "/boot/syslinux/syslinux.cfg", "/extlinux.conf"):
        if g.is_file(path):
            return {"bootloader": "extlinux", "grub_cfg": None}
    if listdir(g, "/boot/loader/entries", ".conf"):
        return {"bootloader": "systemd-boot", "grub_cfg": None}
    return {"bootloader": "unknown", "grub_cfg": None}


def linux_concerns(facts: dict) -> list[Concern]:
    """What a migration engineer should read before moving this guest; unknown guests are reported, not skipped."""
    out = []
    family, distro, major = facts["family"], facts["distro"], facts["major"]
    if family == "unknown":
        out.append(Concern(id="linux-unknown-distro", severity=Severity.warning,
                           message=f"Linux distribution '{distro}' is not one the fixers know; they run best-effort",
                           remedy="Check fstab, initramfs drivers and network names by hand after the first boot"))
    elif major and major < OLDEST.get(distro, 0):
        out.append(Concern(id="linux-old-release", severity=Severity.warning,
                           message=f"{facts['product']} is older than the oldest supported {distro} {OLDEST[distro]}",
                           remedy="Expect the virtio drivers or the initramfs tool to be missing; test the boot"))
    if not facts["kernels"]:
        out.append(Concern(id="linux-no-kernel", severity=Severity.critical,
                           message="No kernel with modules was found under /boot", remedy="Check the /boot filesystem"))
    esx = [k["version"] for k in facts["kernels"] if k["version"].endswith("-esx")]
    if esx:
        out.append(Concern(id="linux-esx-kernel", severity=Severity.critical,
                           message=f"Kernel(s) {', '.join(esx)} are VMware-only builds without virtio drivers",
                           remedy="Install the generic kernel (Photon OS: the 'linux' package) before moving"))
    if facts["initramfs_tool"] is None:
        out.append(Concern(id="linux-no-initramfs-tool", severity=Severity.critical,
                           message="No dracut, update-initramfs or mkinitcpio in the guest: virtio drivers cannot be added",
                           remedy="Add virtio_blk and virtio_scsi to the initramfs before moving"))
    if facts["bootloader"] == "unknown":
        out.append(Concern(id="linux-unknown-bootloader", severity=Severity.warning,
                           message="No GRUB, extlinux or BLS configuration was found",
                           remedy="Check the kernel command line (root=, console=) by hand"))
    if not facts["network"]:
        out.append(Concern(id="linux-no-network-config", severity=Severity.info,
                           message="No network configuration files were recognised; the NIC will be unconfigured"
                                   " unless the guest uses DHCP by default"))
    return out
