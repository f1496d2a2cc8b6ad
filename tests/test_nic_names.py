"""The guest-side NIC naming script (h2k_tasks/fixers/linux/nicnames.py) on fake sysfs trees: by kept
MAC first, else by position among the virtio-net PCI functions, under dash and busybox sh."""
from __future__ import annotations

import os
import subprocess

import pytest

from h2k_tasks.fixers.linux import nicnames

NICS = [("enp1s0", "00:50:56:aa:00:01"), ("enp2s0", "00:50:56:aa:00:02")]


def _sysfs(root, functions: dict[str, tuple[str, str, str | None]]) -> str:
    """`functions`: PCI address -> (vendor, device, (kernel name, MAC) of its NIC or None)."""
    sys = root / "sys"
    for n, (addr, (vendor, device, nic)) in enumerate(sorted(functions.items())):
        real = sys / "devices" / "pci0000:00" / f"0000:00:{n + 2:02x}.0" / addr
        real.mkdir(parents=True)
        (real / "vendor").write_text(vendor + "\n")
        (real / "device").write_text(device + "\n")
        (sys / "bus/pci/devices").mkdir(parents=True, exist_ok=True)
        os.symlink(real, sys / "bus/pci/devices" / addr)
        if nic:
            name, mac = nic
            (real / "virtio0").mkdir()
            net = sys / "class/net" / name
            net.mkdir(parents=True)
            os.symlink(real / "virtio0", net / "device")
            (net / "address").write_text(mac + "\n")
    return str(sys)


@pytest.fixture(params=["/bin/sh", "/bin/busybox"])
def name_of(request, tmp_path):
    script = tmp_path / "h2k-nic-name"
    script.write_text(nicnames.script_text(NICS))
    shell = [request.param] + (["sh"] if request.param.endswith("busybox") else [])

    def run(sysfs: str, kernel_name: str) -> str | None:
        res = subprocess.run([*shell, str(script), kernel_name], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "H2K_SYSFS": sysfs})
        return res.stdout.strip() if res.returncode == 0 else None
    return run


def test_kept_mac_names_the_nic_wherever_it_sits(tmp_path, name_of):
    sysfs = _sysfs(tmp_path, {"0000:05:00.0": ("0x1af4", "0x1041", ("eth0", "00:50:56:aa:00:02")),
                              "0000:06:00.0": ("0x1af4", "0x1041", ("eth1", "00:50:56:aa:00:01"))})
    assert (name_of(sysfs, "eth0"), name_of(sysfs, "eth1")) == ("enp2s0", "enp1s0")


def test_new_macs_name_nics_by_virtio_position_skipping_other_devices(tmp_path, name_of):
    sysfs = _sysfs(tmp_path, {"0000:00:03.0": ("0x8086", "0x100e", None),  # an e1000: not virtio
                              "0000:00:04.0": ("0x1af4", "0x1001", None),  # virtio-blk (transitional)
                              "0000:00:05.0": ("0x1af4", "0x1000", ("eth0", "52:54:00:12:34:56")),
                              "0000:00:06.0": ("0x1af4", "0x1000", ("eth1", "52:54:00:12:34:57")),
                              "0000:00:07.0": ("0x1af4", "0x1000", ("eth2", "52:54:00:12:34:58"))})
    assert [name_of(sysfs, n) for n in ("eth0", "eth1", "eth2")] == ["enp1s0", "enp2s0", None]


def test_rule_runs_the_script_for_virtio_nics_only():
    rule = nicnames.rule_text()
    assert f'PROGRAM="{nicnames.SCRIPT} %k", NAME="%c"' in rule and 'DRIVERS=="virtio_net"' in rule
