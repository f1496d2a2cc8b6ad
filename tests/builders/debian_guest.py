"""A real, bootable Debian 12 guest configured like one that ran on VMware, as a VMDK.

Built with debootstrap from the Debian archive, then put on an MBR disk with libguestfs (grub is
installed from inside the guest through `g.command`, so no loop devices are needed). Like a VMware
guest it has `root=/dev/sda1`, fstab on `/dev/sda1`, ifupdown DHCP on `ens192` pinned to a VMware
MAC, and an initramfs with the VMware/ATA/SCSI drivers only: no virtio. `/etc/issue` prints the
IPv4 address, so a serial console that reaches the login prompt also proves DHCP worked.

The result is cached in `$H2K_TEST_CACHE` (default `~/.cache/h2k-tests`) under a hash of the
recipe: built once per machine, published atomically. Run `python -m tests.builders.debian_guest`
to build it ahead of the tests.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from h2k_tasks.appliance import open_session
from tests.builders.cache import cache_dir, locked

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = ["linux-image-amd64", "grub-pc", "systemd", "systemd-sysv", "udev", "kmod", "initramfs-tools",
            "ifupdown", "isc-dhcp-client", "open-vm-tools"]
MAC = "00:50:56:8a:3c:01"
INTERFACE = "ens192"
HOSTNAME = "h2k-deb12"
ROOT_DEVICE = "/dev/sda1"
DISK_SIZE = 2 * 1024**3
# What a VMware guest's initramfs carries: its SCSI/SATA/IDE controllers, the VMware NIC, ext4.
INITRAMFS_MODULES = ["vmw_pvscsi", "mptspi", "mptsas", "ahci", "ata_piix", "ata_generic", "sd_mod", "sr_mod",
                     "vmxnet3", "ext4"]
# Kernel module trees a server guest never loads: pruned to keep the image small.
PRUNED_MODULES = ["drivers/gpu", "drivers/media", "drivers/net/wireless", "drivers/infiniband",
                  "drivers/bluetooth", "drivers/staging", "drivers/isdn", "drivers/iio", "drivers/comedi",
                  "sound", "net/wireless", "net/mac80211", "net/bluetooth"]


def guest_files(hostname: str, modules: list[str], cmdline: str = "", uuid_in_grub: bool = False,
                issue_address: bool = True) -> dict[str, str]:
    """The files every test guest has as VMware leaves it: its name, an initramfs holding `modules` only
    (`MODULES=list`), GRUB on the serial console (plus `cmdline`; `GRUB_DISABLE_LINUX_UUID=true` unless
    `uuid_in_grub`), `/etc/issue` printing the IPv4 address if `issue_address`, no documentation."""
    return {
        "etc/hostname": f"{hostname}\n",
        "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n",
        "etc/issue": "Debian GNU/Linux 12 \\n \\l\n" + ("IPv4: \\4\n" if issue_address else "") + "\n",
        "etc/machine-id": "",
        "etc/initramfs-tools/modules": "\n".join(modules) + "\n",
        "etc/initramfs-tools/conf.d/h2k-modules": "MODULES=list\n",
        "etc/default/grub": ('GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\nGRUB_TERMINAL=console\n'
                             f'GRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200{cmdline}"\n'
                             + ("" if uuid_in_grub else "GRUB_DISABLE_LINUX_UUID=true\n") + "GRUB_DISABLE_RECOVERY=true\n"),
        "etc/dpkg/dpkg.cfg.d/h2k-nodoc": ("path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\n"
                                          "path-exclude /usr/share/locale/*\npath-exclude /usr/share/info/*\n"),
    }


FILES = {
    **guest_files(HOSTNAME, INITRAMFS_MODULES),
    "etc/fstab": f"{ROOT_DEVICE}\t/\text4\terrors=remount-ro\t0\t1\n",
    "etc/network/interfaces": ("source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
                               f"auto {INTERFACE}\niface {INTERFACE} inet dhcp\n"),
    f"etc/systemd/network/10-{INTERFACE}.link": f"[Match]\nMACAddress={MAC}\n\n[Link]\nName={INTERFACE}\n",
    # The login prompt comes after DHCP, so the address that /etc/issue prints is the leased one.
    "etc/systemd/system/serial-getty@ttyS0.service.d/h2k-after-network.conf":
        "[Unit]\nWants=network-online.target\nAfter=network-online.target\n",
}
# For the guests whose console must show more than the login prompt: before it, the SELinux mode, whether
# a relabel is pending, and `ip -br -4 addr` ("h2k-facts: <name> <state> <address>" per interface).
FACTS_SCRIPT = "usr/local/sbin/h2k-facts"
FACTS_FILES = {
    "etc/systemd/system/h2k-facts.service": (
        "[Unit]\nDescription=Print the SELinux mode and the addresses to the console\n"
        "Wants=network-online.target\nAfter=network-online.target\nBefore=serial-getty@ttyS0.service getty.target\n\n"
        f"[Service]\nType=oneshot\nStandardOutput=journal+console\nExecStart=/{FACTS_SCRIPT}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"),
    FACTS_SCRIPT: (
        "#!/bin/sh\n"
        "command -v getenforce >/dev/null && echo \"h2k-facts: selinux=$(getenforce) "
        "relabel=$(test -e /.autorelabel && echo pending || echo none)\"\n"
        "ip -br -4 addr | sed 's/^/h2k-facts: /'\n"),
}
# A line of theirs saying an interface is UP with a QEMU user-network address: (interface, address).
FACTS_UP = re.compile(r"h2k-facts: (\S+)\s+UP\s+(10\.0\.2\.\d+)/")
PRUNED_PATHS = ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt",
                "var/lib/apt/lists"]
RECIPE = {"version": 1, "mirror": MIRROR, "suite": SUITE, "packages": PACKAGES, "mac": MAC,
          "disk_size": DISK_SIZE, "initramfs_modules": INITRAMFS_MODULES, "pruned_modules": PRUNED_MODULES,
          "files": FILES, "pruned_paths": PRUNED_PATHS}
DEBOOTSTRAP_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class DebianGuest:
    vmdk: str
    mac: str
    interface: str
    root_device: str
    hostname: str
    kernel: str
    firmware: str
    initramfs_modules: list[str]
    virtual_size: int


def cached_guest(name: str, recipe: dict, build) -> tuple[str, dict]:
    """The cache directory and facts of the guest `name` made by `recipe`, building it first if this machine
    has none: `build(work, root, final)` debootstraps into `root` under the scratch directory `work` and
    publishes `final` (see publish()). One build at a time per guest, under a lock."""
    cache = str(cache_dir())
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    final = os.path.join(cache, f"{name}-{key}")
    with locked(name):
        if not os.path.exists(os.path.join(final, "facts.json")):
            for entry in os.listdir(cache):  # left by a build that was killed: we hold the lock
                if entry.startswith(f".build-{name}-"):
                    remove_tree(os.path.join(cache, entry))
            work = tempfile.mkdtemp(prefix=f".build-{name}-", dir=cache)
            try:
                build(work, os.path.join(work, "root"), final)
            finally:
                remove_tree(work)
    with open(os.path.join(final, "facts.json")) as f:
        return final, json.load(f)


def build_debian_guest() -> DebianGuest:
    """The cached guest, building it first if this machine has none (takes minutes, once)."""
    final, facts = cached_guest("debian12-vmware", RECIPE, _build)
    return DebianGuest(vmdk=os.path.join(final, facts.pop("vmdk")), **facts)


def _build(work: str, root: str, final: str) -> None:
    debootstrap(root, PACKAGES)
    kernel = configure(root, FILES)
    modules = initramfs_listing(root, kernel, ["ata_piix", "ahci", "vmw_pvscsi", "ext4"])
    publish(work, root, lambda tarball, raws: install_on_mbr(tarball, raws, DISK_SIZE, ROOT_DEVICE), final, {
        "vmdk": "debian12.vmdk", "mac": MAC, "interface": INTERFACE, "root_device": ROOT_DEVICE,
        "hostname": HOSTNAME, "kernel": kernel, "firmware": "bios", "initramfs_modules": modules,
        "virtual_size": DISK_SIZE}, ["debian12.vmdk"])


def publish(work: str, root: str, make_disk, final: str, facts: dict, vmdks: list[str]) -> None:
    """Put the configured tree `root` on raw disks (`make_disk(tarball, raws)`, one raw per name in
    `vmdks`), convert them to those VMDKs beside `facts.json`, and publish the directory at `final`
    (an atomic rename)."""
    tarball = os.path.join(work, "rootfs.tar")
    subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", tarball, "."], check=True)
    remove_tree(root)
    raws = [os.path.join(work, f"disk{n}.raw") for n in range(len(vmdks))]
    make_disk(tarball, raws)
    out = os.path.join(work, "out")
    os.mkdir(out)
    for raw, vmdk in zip(raws, vmdks):
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "adapter_type=lsilogic",
                        raw, os.path.join(out, vmdk)], check=True)
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)
    os.rename(out, final)


def debootstrap(root: str, packages: list[str]) -> None:
    for attempt in range(1, DEBOOTSTRAP_ATTEMPTS + 1):
        proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                               SUITE, root, MIRROR], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        remove_tree(root)
        if attempt == DEBOOTSTRAP_ATTEMPTS:
            raise RuntimeError(f"debootstrap failed {attempt} times; last output:\n{proc.stdout[-3000:]}"
                               f"{proc.stderr[-2000:]}")
        time.sleep(10 * attempt)


def configure(root: str, files: dict[str, str], private: tuple[str, ...] = ()) -> str:
    """Make the tree look like a VMware guest (`private` files mode 0600, programs in usr/local/sbin 0755);
    return its kernel version."""
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        os.chmod(path, 0o600 if rel in private else 0o755 if rel.startswith("usr/local/sbin/") else 0o644)
    for rel in PRUNED_PATHS:
        _empty_dir(os.path.join(root, rel))
    (kernel,) = os.listdir(os.path.join(root, "usr/lib/modules"))
    for rel in PRUNED_MODULES:
        shutil.rmtree(os.path.join(root, "usr/lib/modules", kernel, "kernel", rel), ignore_errors=True)
    subprocess.run(["chroot", root, "depmod", "-a", kernel], check=True, capture_output=True)
    subprocess.run(["chroot", root, "update-initramfs", "-u", "-k", kernel], check=True, capture_output=True)
    return kernel


def initramfs_listing(root: str, kernel: str, required: list[str]) -> list[str]:
    """The kernel modules in the initramfs; fails if any virtio driver slipped in or one of `required` is missing."""
    listing = subprocess.run(["chroot", root, "lsinitramfs", f"/boot/initrd.img-{kernel}"],
                             check=True, capture_output=True, text=True).stdout.split()
    modules = sorted({os.path.basename(p).split(".ko")[0] for p in listing if ".ko" in os.path.basename(p)})
    virtio = [m for m in modules if "virtio" in m]
    if virtio:
        raise RuntimeError(f"initramfs must not carry virtio drivers, found {virtio}")
    missing = [m for m in required if m not in modules]
    if missing:
        raise RuntimeError(f"initramfs lacks {missing}")
    return modules


def install_on_mbr(tarball: str, raws: list[str], size: int, root_device: str) -> None:
    """The tree in `tarball` on one MBR disk `raws[0]` of `size` bytes: ext4 on its first partition, GRUB
    in its MBR, grub.cfg booting `root=root_device` (the name the guest has on VMware)."""
    (raw,) = raws
    with open(raw, "wb") as f:
        f.truncate(size)
    g = open_session([(raw, "raw")], readonly=False).g
    try:
        g.part_init("/dev/sda", "msdos")
        g.part_add("/dev/sda", "p", 2048, -1)
        g.part_set_bootable("/dev/sda", 1, True)
        g.mkfs("ext4", "/dev/sda1")
        g.mount("/dev/sda1", "/")
        g.tar_in(tarball, "/")
        # Inside the appliance the kernel may name this disk sdb (the appliance's own disk taking
        # sda), so grub is installed on whatever disk holds / there, and grub.cfg names the root
        # device as the guest will see it on its first controller.
        disk = g.command(["sh", "-c", 'lsblk -no PKNAME "$(findmnt -no SOURCE /)"']).strip()
        g.command(["grub-install", "--target=i386-pc", f"/dev/{disk}"])
        g.command(["update-grub"])
        grub_cfg = re.sub(rf"root=/dev/{disk}1 ", f"root={root_device} ", g.cat("/boot/grub/grub.cfg"))
        if f"root={root_device} " not in grub_cfg:
            raise RuntimeError(f"grub.cfg does not boot root={root_device}")
        g.write("/boot/grub/grub.cfg", grub_cfg)
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


def _empty_dir(path: str) -> None:
    if os.path.isdir(path):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)


def remove_tree(path: str) -> None:
    """rmtree, after unmounting whatever a failed debootstrap left mounted under `path`."""
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        mounts = [line.split()[1].replace("\\040", " ") for line in f]
    for mnt in sorted((m for m in mounts if m.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=True)
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(dataclasses.asdict(build_debian_guest()), indent=1))
