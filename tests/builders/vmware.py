"""Sample VMware VMs: a `.vmx` and VMDK snapshot chains holding a real ext4 filesystem with a
small Linux tree configured as on VMware (fstab on /dev/sda1, a NIC pinned to a 00:50:56 MAC).

    python -m tests.builders.vmware OUT_DIR        # builds the demo VM, prints its .vmx path
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

from tests.builders.disks import debugfs_write, make_ext4, mbr_disk, vmdk_chain

DEMO_MAC = "00:50:56:a1:b2:c3"
ROOT_UUID = "6f0e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


def linux_tree(hostname: str, mac: str) -> dict[str, str]:
    """A minimal Debian 12 root as a VMware-built guest has it."""
    return {
        "/bin/": "", "/sbin/": "", "/usr/bin/": "", "/usr/sbin/": "", "/lib/": "", "/var/log/": "",
        "/boot/": "", "/root/": "", "/tmp/": "", "/dev/": "", "/proc/": "", "/sys/": "",
        "/etc/os-release": (
            'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
            'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
        ),
        "/etc/debian_version": "12.8\n",
        "/etc/hostname": f"{hostname}\n",
        "/etc/fstab": "/dev/sda1  /  ext4  errors=remount-ro  0  1\n",
        "/etc/network/interfaces": (
            "auto lo\niface lo inet loopback\n\nallow-hotplug ens192\niface ens192 inet static\n"
            "    address 192.0.2.10/24\n    gateway 192.0.2.1\n    dns-nameservers 192.0.2.53\n"
        ),
        "/etc/udev/rules.d/70-persistent-net.rules": (
            f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{mac}", NAME="ens192"\n'
        ),
    }


@dataclass
class DiskSpec:
    size_mib: int = 64
    layers: int = 1  # 1: a plain disk; N: a base and N-1 snapshot deltas
    files: dict[str, str] = field(default_factory=dict)  # for a data disk; empty means the root disk
    bus: str = "scsi"


def _disk_layers(tmp: str, n: int, spec: DiskSpec, hostname: str, mac: str) -> list[str]:
    """Raw images of each layer: layer k adds /etc/h2k-snapshot-k to the filesystem of layer k-1."""
    files = spec.files or linux_tree(hostname, mac)
    fs = os.path.join(tmp, f"fs{n}.img")
    uuid = ROOT_UUID if not spec.files else f"{n:08x}-0000-4000-8000-000000000000"
    make_ext4(fs, spec.size_mib - 2, files, uuid=uuid)
    layers = []
    for k in range(spec.layers):
        if k:
            debugfs_write(fs, {f"/etc/h2k-snapshot-{k}" if not spec.files else f"/snapshot-{k}": f"layer {k}\n"})
        raw = os.path.join(tmp, f"disk{n}-layer{k}.raw")
        mbr_disk(raw, spec.size_mib, [fs], disk_id=f"0x{0x4832b00c + n:08x}")
        layers.append(raw)
    return layers


def write_vmx(path: str, name: str, disks: list[tuple[str, int, int, str]], mac: str,
              firmware: str = "bios", memsize: int = 512, cpus: int = 1, hdd_order: str | None = None) -> None:
    """A .vmx for `disks` given as (bus, controller, unit, vmdk file name); `hdd_order` is the BIOS's
    disk boot order (`bios.hddOrder`, e.g. "scsi0:1")."""
    lines = [
        '.encoding = "UTF-8"', 'config.version = "8"', 'virtualHW.version = "19"',
        f'displayName = "{name}"', 'guestOS = "debian12-64"', f'memsize = "{memsize}"',
        f'numvcpus = "{cpus}"', f'firmware = "{firmware}"',
        'uuid.bios = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"',
    ] + ([f'bios.hddOrder = "{hdd_order}"'] if hdd_order else [])
    controllers = sorted({(bus, ctl) for bus, ctl, _, _ in disks})
    for bus, ctl in controllers:
        lines.append(f'{bus}{ctl}.present = "TRUE"')
        if bus == "scsi":
            lines.append(f'{bus}{ctl}.virtualDev = "pvscsi"')
    for bus, ctl, unit, file in disks:
        dev = f"{bus}{ctl}:{unit}"
        lines += [f'{dev}.present = "TRUE"', f'{dev}.fileName = "{file}"', f'{dev}.deviceType = "{"scsi-hardDisk" if bus == "scsi" else "disk"}"']
    lines += ['ide1:0.present = "TRUE"', 'ide1:0.deviceType = "cdrom-image"', 'ide1:0.fileName = "/iso/none.iso"']
    lines += [
        'ethernet0.present = "TRUE"', 'ethernet0.virtualDev = "vmxnet3"', 'ethernet0.networkName = "VM Network"',
        'ethernet0.addressType = "static"', f'ethernet0.address = "{mac}"',
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def build_vm(out_dir: str, name: str, disks: list[DiskSpec], mac: str = DEMO_MAC) -> str:
    """Build a VMware VM in `out_dir`; returns the .vmx path."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    units: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
        for n, spec in enumerate(disks):
            layers = _disk_layers(tmp, n, spec, name, mac)
            vmdks = vmdk_chain(layers, out_dir, f"{name}" if n == 0 else f"{name}_{n}")
            unit = units.get(spec.bus, 0)
            units[spec.bus] = unit + 1
            entries.append((spec.bus, 0, unit, os.path.basename(vmdks[-1])))
    vmx = os.path.join(out_dir, f"{name}.vmx")
    write_vmx(vmx, name, entries, mac)
    return vmx


def build_demo_vm(out_dir: str) -> str:
    """The `make demo` VM: one 256 MiB disk, a base and one snapshot delta."""
    return build_vm(out_dir, "demo-debian12", [DiskSpec(size_mib=256, layers=2)])


if __name__ == "__main__":
    print(build_demo_vm(sys.argv[1]))
