"""Phony Windows disks: NTFS (GPT or MBR) with real-format SYSTEM and SOFTWARE hives and a header-only cmd.exe.

No Windows binary is involved: hives start from `regf.empty_hive` and are filled with hivex; cmd.exe is
`pe.pe_header_only`. libguestfs inspection recognizes the result as Windows (version, arch, drive C:).
Images are cached in `$H2K_TEST_CACHE` (default ~/.cache/h2k-tests) under a hash of their recipe and
of these builder sources; tests must write to overlays, never to the cached images.
"""
from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import hivex

from h2k_tasks.appliance import open_session
from tests.builders.cache import cache_dir, locked
from tests.builders.pe import pe_header_only
from tests.builders.regf import write_empty_hive

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
DISK_SIZE = 96 * 1024 * 1024
PART_START = 2048  # sectors
VMWARE_TOOLS_CODE = "{3FA2C4A1-7E2B-4C4B-9C55-0D4E2B1C9A10}"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


@dataclass(frozen=True)
class WindowsProfile:
    name: str
    product_name: str
    major: int
    minor: int
    build: int
    edition: str
    installation_type: str  # "Client" or "Server"
    arch: str  # "x86_64" or "i386"
    partitioning: str  # "gpt" or "mbr"
    hibernated: bool = False
    bitlocker_data_volume: bool = False

    @property
    def current_version(self) -> str:
        return "6.3" if self.major >= 10 else f"{self.major}.{self.minor}"


PROFILES: dict[str, WindowsProfile] = {
    p.name: p
    for p in [
        WindowsProfile("win7", "Windows 7 Professional", 6, 1, 7601, "Professional", "Client", "i386", "mbr"),
        WindowsProfile("win10", "Windows 10 Pro", 10, 0, 19045, "Professional", "Client", "x86_64", "gpt"),
        # Windows 11 still calls itself "Windows 10" in ProductName; only the build tells
        WindowsProfile("win11", "Windows 10 Pro", 10, 0, 22631, "Professional", "Client", "x86_64", "gpt"),
        WindowsProfile("win2016", "Windows Server 2016 Standard", 10, 0, 14393, "ServerStandard", "Server",
                       "x86_64", "mbr"),
        WindowsProfile("win2019", "Windows Server 2019 Standard", 10, 0, 17763, "ServerStandard", "Server",
                       "x86_64", "gpt"),
        WindowsProfile("win2022", "Windows Server 2022 Datacenter", 10, 0, 20348, "ServerDatacenter", "Server",
                       "x86_64", "gpt"),
    ]
}
VARIANTS: dict[str, WindowsProfile] = {
    "win10-hibernated": replace(PROFILES["win10"], name="win10-hibernated", hibernated=True),
    "win10-bitlocker": replace(PROFILES["win10"], name="win10-bitlocker", bitlocker_data_volume=True),
}
STATIC_IP = {"ip": "192.0.2.10", "mask": "255.255.255.0", "gateway": "192.0.2.1", "dns": ["192.0.2.53"]}
STATIC_IF_GUID = "{6B1F2A10-93C2-4D1B-8B0E-1C2D3E4F5A6B}"


def _sz(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def _multi(items: list[str]) -> bytes:
    return "".join(i + "\0" for i in items).encode("utf-16-le") + b"\0\0"


def _dword(n: int) -> bytes:
    return struct.pack("<I", n)


class _Hive:
    def __init__(self, path: Path):
        self.h = hivex.Hivex(str(path), write=True)

    def key(self, path: str) -> int:
        node = self.h.root()
        for part in filter(None, path.split("\\")):
            child = self.h.node_get_child(node, part)
            node = child if child else self.h.node_add_child(node, part)
        return node

    def values(self, path: str, **values: tuple[int, bytes]) -> None:
        node = self.key(path)
        for name, (kind, data) in values.items():
            self.h.node_set_value(node, {"key": "" if name == "default" else name, "t": kind, "value": data})

    def commit(self) -> None:
        self.h.commit(None)


def software_hive(path: Path, p: WindowsProfile) -> None:
    write_empty_hive(path, "CMI-CreateHive{SOFTWARE}")
    hive = _Hive(path)
    cv = "Microsoft\\Windows NT\\CurrentVersion"
    hive.values(
        cv,
        ProductName=(REG_SZ, _sz(p.product_name)),
        CurrentVersion=(REG_SZ, _sz(p.current_version)),
        CurrentBuild=(REG_SZ, _sz(str(p.build))),
        CurrentBuildNumber=(REG_SZ, _sz(str(p.build))),
        EditionID=(REG_SZ, _sz(p.edition)),
        InstallationType=(REG_SZ, _sz(p.installation_type)),
        SystemRoot=(REG_SZ, _sz("C:\\Windows")),
    )
    if p.major >= 10:
        hive.values(cv, CurrentMajorVersionNumber=(REG_DWORD, _dword(p.major)),
                    CurrentMinorVersionNumber=(REG_DWORD, _dword(p.minor)))
    hive.values(
        "Microsoft\\Windows\\CurrentVersion",
        DevicePath=(REG_EXPAND_SZ, _sz("%SystemRoot%\\inf")),
        ProgramFilesDir=(REG_SZ, _sz("C:\\Program Files")),
    )
    hive.values(
        f"Microsoft\\Windows\\CurrentVersion\\Uninstall\\{VMWARE_TOOLS_CODE}",
        DisplayName=(REG_SZ, _sz("VMware Tools")),
        DisplayVersion=(REG_SZ, _sz("12.3.5.22544099")),
        Publisher=(REG_SZ, _sz("VMware, Inc.")),
        UninstallString=(REG_EXPAND_SZ, _sz(f"MsiExec.exe /I{VMWARE_TOOLS_CODE}")),
        WindowsInstaller=(REG_DWORD, _dword(1)),
    )
    hive.commit()


def system_hive(path: Path, p: WindowsProfile, drive_c: bytes) -> None:
    write_empty_hive(path, "CMI-CreateHive{SYSTEM}")
    hive = _Hive(path)
    hive.values("Select", Current=(REG_DWORD, _dword(1)), Default=(REG_DWORD, _dword(1)),
                LastKnownGood=(REG_DWORD, _dword(1)), Failed=(REG_DWORD, _dword(0)))
    cs = "ControlSet001"
    hostname = f"H2K-{p.name.upper()}"[:15]
    hive.values(f"{cs}\\Control\\ComputerName\\ComputerName", ComputerName=(REG_SZ, _sz(hostname)))
    hive.values(f"{cs}\\Control\\CrashControl", AutoReboot=(REG_DWORD, _dword(1)))
    hive.values(f"{cs}\\Services\\Tcpip\\Parameters", Hostname=(REG_SZ, _sz(hostname)))
    hive.values(
        f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{STATIC_IF_GUID}",
        EnableDHCP=(REG_DWORD, _dword(0)),
        IPAddress=(REG_MULTI_SZ, _multi([STATIC_IP["ip"]])),
        SubnetMask=(REG_MULTI_SZ, _multi([STATIC_IP["mask"]])),
        DefaultGateway=(REG_MULTI_SZ, _multi([STATIC_IP["gateway"]])),
        NameServer=(REG_SZ, _sz(",".join(STATIC_IP["dns"]))),
    )
    hive.values(f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{{0C1D2E3F-4A5B-4C6D-8E9F-A0B1C2D3E4F5}}",
                EnableDHCP=(REG_DWORD, _dword(1)))
    hive.values(f"{cs}\\Services\\pvscsi", Type=(REG_DWORD, _dword(1)), Start=(REG_DWORD, _dword(0)),
                ImagePath=(REG_EXPAND_SZ, _sz("System32\\drivers\\pvscsi.sys")))
    if (p.major, p.minor) < (6, 2):
        hive.key(f"{cs}\\Control\\CriticalDeviceDatabase")
    else:
        for sub in ("DriverInfFiles", "DriverPackages", "DeviceIds"):
            hive.key(f"DriverDatabase\\{sub}")
    hive.values("MountedDevices", **{"\\DosDevices\\C:": (REG_BINARY, drive_c)})
    hive.commit()


def _recipe(p: WindowsProfile) -> str:
    sources = "".join(
        (Path(__file__).parent / f).read_text() for f in ("windows_guest.py", "regf.py", "pe.py")
    )
    blob = json.dumps(asdict(p), sort_keys=True) + hashlib.sha256(sources.encode()).hexdigest()
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _disk_identity(p: WindowsProfile) -> tuple[bytes, bytes, str | None]:
    """MBR signature, the MountedDevices blob for C:, and the GPT partition GUID (None on MBR)."""
    seed = hashlib.sha256(p.name.encode()).digest()
    if p.partitioning == "gpt":
        guid = uuid.UUID(bytes=seed[:16])
        return b"", b"DMIO:ID:" + guid.bytes_le, str(guid).upper()
    signature = seed[:4]
    return signature, signature + struct.pack("<Q", PART_START * 512), None


def _populate(g, dev: str, p: WindowsProfile, work: Path) -> None:
    signature, drive_c, gpt_guid = _disk_identity(p)
    g.part_init(dev, p.partitioning)
    last = (DISK_SIZE // 512) - 34
    system_end = last if not p.bitlocker_data_volume else PART_START + 128 * 1024 - 1
    g.part_add(dev, "p", PART_START, system_end)
    if p.bitlocker_data_volume:
        g.part_add(dev, "p", system_end + 1, last)
    if gpt_guid:
        g.part_set_gpt_type(dev, 1, BASIC_DATA)
        g.part_set_gpt_guid(dev, 1, gpt_guid)
    else:
        g.part_set_mbr_id(dev, 1, 0x07)
        g.part_set_bootable(dev, 1, True)
        g.pwrite_device(dev, signature, 0x1B8)
    system = f"{dev}1"
    g.mkfs("ntfs", system, label="Windows")
    g.mount(system, "/")
    for d in ("/Windows/System32/config", "/Windows/System32/drivers", "/Windows/inf", "/Program Files"):
        g.mkdir_p(d)
    system_path, software_path, cmd_path = work / "SYSTEM", work / "SOFTWARE", work / "cmd.exe"
    system_hive(system_path, p, drive_c)
    software_hive(software_path, p)
    cmd_path.write_bytes(pe_header_only(p.arch))
    g.upload(str(system_path), "/Windows/System32/config/SYSTEM")
    g.upload(str(software_path), "/Windows/System32/config/SOFTWARE")
    g.upload(str(cmd_path), "/Windows/System32/cmd.exe")
    if p.hibernated:
        g.write("/hiberfil.sys", b"HIBR" + b"\0" * 4092)
    g.umount("/")
    if p.bitlocker_data_volume:
        data = f"{dev}2"
        g.mkfs("ntfs", data)
        g.pwrite_device(data, b"\xeb\x58\x90-FVE-FS-", 0)  # a BitLocker volume's boot sector signature


def windows_disks(names: list[str]) -> dict[str, Path]:
    """Raw images for the named profiles/variants, building the missing ones in one libguestfs launch."""
    everything = {**PROFILES, **VARIANTS}
    wanted = {n: cache_dir() / f"windows-{n}-{_recipe(everything[n])}.raw" for n in names}
    with locked("windows"):
        missing = [n for n, path in wanted.items() if not path.exists()]
        if missing:
            _build(missing, everything, wanted)
    return wanted


def _build(missing: list[str], everything: dict, wanted: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory(prefix="h2k-win-build-") as tmp:
        parts = {}
        for n in missing:
            parts[n] = wanted[n].with_suffix(".partial")
            with open(parts[n], "wb") as f:
                f.truncate(DISK_SIZE)
        g = open_session([(str(parts[n]), "raw") for n in missing], readonly=False).g
        devices = g.list_devices()
        for n, dev in zip(missing, devices):
            work = Path(tmp) / n
            work.mkdir()
            _populate(g, dev, everything[n], work)
        g.shutdown()
        g.close()
        for n in missing:
            parts[n].rename(wanted[n])
