"""Boot storage: viostor (virtio-blk) and vioscsi load at boot, bound to the PCI ids QEMU presents.

Drivers go to `System32\\drivers`, each gets a boot-start `Services` key, and the devices are tied to
them through `CriticalDeviceDatabase` (before Windows 8) or `DriverDatabase` (Windows 8 and later).
"""
from __future__ import annotations

import hashlib
import re
import struct
import uuid
from datetime import datetime, timezone

from h2k_tasks.windows.hives import binary, dword, expand_sz, multi_sz, sz
from h2k_tasks.fixers.windows.session import Session
from h2k_tasks.windows.virtio_win import DriverChoice, boot_choices

NAME = "windows.boot_storage"
SCSI_ADAPTER_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
# transitional (legacy) and modern (virtio 1.0) ids, with and without SUBSYS/REV
DEVICE_IDS = {
    "viostor": [
        "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
        "PCI\\VEN_1AF4&DEV_1001",
        "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
        "PCI\\VEN_1AF4&DEV_1042",
    ],
    "vioscsi": [
        "PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00",
        "PCI\\VEN_1AF4&DEV_1004",
        "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01",
        "PCI\\VEN_1AF4&DEV_1048",
    ],
}
_DRIVER_VER = re.compile(rb"DriverVer\s*=\s*(\d+)/(\d+)/(\d+)\s*,\s*(\d+)\.(\d+)\.(\d+)\.(\d+)", re.I)
_EPOCH_1601 = datetime(1601, 1, 1, tzinfo=timezone.utc)


def uses_driver_database(facts: dict) -> bool:
    return (facts["major"], facts["minor"]) >= (6, 2)


def _file(choice: DriverChoice, name: str) -> str | None:
    return next((f for f in choice.files if f.lower().endswith("/" + name.lower())), None)


def driver_version(inf: bytes) -> tuple[int, tuple[int, int, int, int]]:
    """(FILETIME of the driver date, version) from an .inf's DriverVer line; zeros when it has none."""
    m = _DRIVER_VER.search(inf)
    if not m:
        return 0, (0, 0, 0, 0)
    month, day, year = (int(x) for x in m.groups()[:3])
    seconds = (datetime(year, month, day, tzinfo=timezone.utc) - _EPOCH_1601).total_seconds()
    return int(seconds) * 10_000_000, tuple(int(x) for x in m.groups()[3:])  # type: ignore[return-value]


def package_version(inf: bytes) -> bytes:
    """DriverPackages\\<pkg>\\Version: class GUID, driver date (FILETIME), version (4 x 16 bits, high first)."""

    date, (a, b, c, d) = driver_version(inf)
    return uuid.UUID(SCSI_ADAPTER_CLASS).bytes_le + struct.pack("<QQ", date, a << 48 | b << 32 | c << 16 | d)


def fix(s: Session) -> None:
    chosen = boot_choices(s.choices)
    for driver, choice in sorted(chosen.items()):
        sys_file = _file(choice, f"{driver}.sys")
        s.write_file(NAME, f"{s.systemroot}/System32/drivers/{driver}.sys", s.source.read(sys_file))
        _service(s, driver)
        if uses_driver_database(s.facts):
            inf_file = _file(choice, f"{driver}.inf")
            _driver_database(s, driver, s.source.read(inf_file) if inf_file else b"")
        else:
            _critical_device_database(s, driver)
        s.log.append(f"boot storage: {choice.describe()}")


def _service(s: Session, driver: str) -> None:
    key = f"{s.control_set}\\Services\\{driver}"
    for name, value in (
        ("Type", dword(1)),  # kernel driver
        ("Start", dword(0)),  # boot start
        ("ErrorControl", dword(1)),
        ("Group", sz("SCSI miniport")),
        ("ImagePath", expand_sz(f"system32\\drivers\\{driver}.sys")),
    ):
        s.system.set(NAME, key, name, value, s.changes)


def _critical_device_database(s: Session, driver: str) -> None:
    for device in DEVICE_IDS[driver]:
        key = f"{s.control_set}\\Control\\CriticalDeviceDatabase\\{device.replace(chr(92), '#').lower()}"
        s.system.set(NAME, key, "Service", sz(driver), s.changes)
        s.system.set(NAME, key, "ClassGUID", sz(SCSI_ADAPTER_CLASS), s.changes)


def _driver_database(s: Session, driver: str, inf: bytes) -> None:
    arch = "amd64" if s.facts["arch"] == "x86_64" else "x86"
    inf_name = f"{driver}.inf"
    package = f"{inf_name}_{arch}_{hashlib.sha256(inf).hexdigest()[:16]}"
    config = f"{driver}_inst"
    db = "DriverDatabase"
    s.system.set(NAME, f"{db}\\DriverInfFiles\\{inf_name}", "", multi_sz([package]), s.changes)
    s.system.set(NAME, f"{db}\\DriverInfFiles\\{inf_name}", "Active", sz(package), s.changes)
    pkg = f"{db}\\DriverPackages\\{package}"
    s.system.set(NAME, pkg, "", sz(inf_name), s.changes)
    s.system.set(NAME, pkg, "Version", binary(package_version(inf)), s.changes)
    s.system.set(NAME, pkg, "Provider", sz("Red Hat, Inc."), s.changes)
    s.system.set(NAME, f"{pkg}\\Configurations\\{config}", "ConfigFlags", dword(0), s.changes)
    s.system.set(NAME, f"{pkg}\\Configurations\\{config}", "Service", sz(driver), s.changes)
    for device in DEVICE_IDS[driver]:
        s.system.set(NAME, f"{db}\\DeviceIds\\{device}", inf_name, binary(b"\x01\xff\x00\x00"), s.changes)
        descriptor = f"{pkg}\\Descriptors\\{device}"
        s.system.set(NAME, descriptor, "Configuration", sz(config), s.changes)
        s.system.set(NAME, descriptor, "Manufacturer", sz("Red Hat, Inc."), s.changes)
        s.system.set(NAME, descriptor, "Description", sz(f"{driver} virtio storage controller"), s.changes)
