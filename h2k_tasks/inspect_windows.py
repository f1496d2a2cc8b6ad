"""What a Windows guest is (from libguestfs inspection and its hives), and what stops it from moving.

`inspect_windows(g, root)` returns JSON-able facts; `windows_concerns(g, root, facts, options)` turns them
into Concerns. The guest's filesystems must be mounted (read-only is enough) at `/`.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from h2k_planner.errors import InputError
from h2k_planner.models import Concern, Severity
from h2k_tasks.windows.hives import REG_MULTI_SZ, Hive, decode_multi, decode_string
from h2k_tasks.windows.virtio_win import BOOT_DRIVERS, VirtioWin, boot_choices

BITLOCKER_SIGNATURE = b"-FVE-FS-"  # at byte 3 of a BitLocker volume's boot sector
UNINSTALL = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
UNINSTALL_KEYS = (UNINSTALL, "WOW6432Node\\" + UNINSTALL)
_PRODUCT_CODE = re.compile(r"\{[0-9A-Fa-f-]{36}\}")


def generation(major: int, minor: int, build: int, server: bool) -> str | None:
    """The virtio-win OS directory name for a Windows version (e.g. "w11", "2k19"), None if unsupported."""
    if server:
        if major >= 10:
            for min_build, name in ((26100, "2k25"), (20348, "2k22"), (17763, "2k19")):
                if build >= min_build:
                    return name
            return "2k16"
        return {(6, 3): "2k12r2", (6, 2): "2k12", (6, 1): "2k8r2"}.get((major, minor))
    if major >= 10:
        return "w11" if build >= 22000 else "w10"
    return {(6, 3): "w8.1", (6, 2): "w8", (6, 1): "w7"}.get((major, minor))


def guest_path(g, path: str) -> str | None:
    """The real spelling of a case-insensitive guest path, None if it does not exist."""
    try:
        real = g.case_sensitive_path(path)
    except RuntimeError:
        return None
    return real if g.exists(real) else None


def open_hive(g, systemroot: str, name: str, work: Path) -> Hive:
    path = guest_path(g, f"{systemroot}/System32/config/{name}")
    if path is None:
        raise FileNotFoundError(f"{systemroot}/System32/config/{name}")
    return Hive(g, path, name, work)


def _applications(software: Hive) -> list[dict]:
    apps = []
    for base in UNINSTALL_KEYS:
        for sub in software.subkeys(base):
            key = f"{base}\\{sub}"
            name = software.get_str(key, "DisplayName")
            if not name:
                continue
            apps.append({
                "name": name,
                "version": software.get_str(key, "DisplayVersion") or "",
                "publisher": software.get_str(key, "Publisher") or "",
                "uninstall_string": software.get_str(key, "UninstallString") or "",
                "key": f"HKLM\\SOFTWARE\\{key}",
            })
    return apps


def _vmware_tools(apps: list[dict]) -> dict | None:
    for app in apps:
        if app["name"].lower().startswith("vmware tools"):
            code = _PRODUCT_CODE.search(app["uninstall_string"]) or _PRODUCT_CODE.search(app["key"])
            return {**app, "product_code": code.group(0).upper() if code else None}
    return None


def _strings(hive: Hive, key: str, name: str) -> list[str]:
    """A REG_MULTI_SZ as a list, a REG_SZ as a one-item list, nothing as []."""
    value = hive.get(key, name)
    if not value:
        return []
    if value[0] == REG_MULTI_SZ:
        return decode_multi(value[1])
    return [s for s in [decode_string(value[1])] if s]


def _static_ips(system: Hive, cs: str) -> list[dict]:
    base = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces"
    found = []
    for guid in system.subkeys(base):
        key = f"{base}\\{guid}"
        if system.get_dword(key, "EnableDHCP") != 0:
            continue
        ips = [ip for ip in _strings(system, key, "IPAddress") if ip != "0.0.0.0"]
        if not ips:
            continue
        dns = " ".join(_strings(system, key, "NameServer"))
        found.append({
            "interface": guid,
            "ip": ips,
            "mask": _strings(system, key, "SubnetMask"),
            "gateway": _strings(system, key, "DefaultGateway"),
            "dns": [d for d in re.split(r"[ ,]+", dns) if d],
        })
    return found


def bitlocker_volumes(g, devices: list[str] | None = None) -> list[str]:
    """Block devices (partitions, or whole disks without partitions) carrying the BitLocker signature."""
    devices = devices if devices is not None else g.list_devices()
    partitions = [p for p in g.list_partitions() if any(p.startswith(d) for d in devices)]
    candidates = partitions + [d for d in devices if not any(p.startswith(d) for p in partitions)]
    return [d for d in candidates if g.pread_device(d, 11, 0)[3:11] == BITLOCKER_SIGNATURE]


def _hibernation(g, root: str) -> dict | None:
    probe = g.ntfs_3g_probe(True, root) if g.vfs_type(root) == "ntfs" else 0
    hiberfil = guest_path(g, "/hiberfil.sys")
    header = g.pread(hiberfil, 4, 0).decode("latin-1") if hiberfil and g.filesize(hiberfil) >= 4 else ""
    if probe == 0 and header.lower() != "hibr":
        return None
    return {"device": root, "ntfs_3g_probe": probe, "hiberfil_header": header}


def inspect_windows(g, root: str, devices: list[str] | None = None) -> dict:
    """JSON-able facts about the Windows guest at inspection root `root`.

    `devices` limits the BitLocker scan to this guest's disks when the handle holds several guests
    (default: every disk of the handle).
    """
    systemroot = g.inspect_get_windows_systemroot(root)
    drives = g.inspect_get_drive_mappings(root)
    with tempfile.TemporaryDirectory(prefix="h2k-hives-") as tmp:
        software = open_hive(g, systemroot, "SOFTWARE", Path(tmp))
        system = open_hive(g, systemroot, "SYSTEM", Path(tmp))
        cv = "Microsoft\\Windows NT\\CurrentVersion"
        major, minor = g.inspect_get_major_version(root), g.inspect_get_minor_version(root)
        build = int(software.get_str(cv, "CurrentBuildNumber") or software.get_str(cv, "CurrentBuild") or 0)
        installation = software.get_str(cv, "InstallationType") or g.inspect_get_product_variant(root)
        server = installation.lower().startswith("server")
        cs = g.inspect_get_windows_current_control_set(root)
        product = g.inspect_get_product_name(root)
        if not server and major >= 10 and build >= 22000:
            product = product.replace("Windows 10", "Windows 11")  # Windows 11 keeps "10" in ProductName
        apps = _applications(software)
        fast_startup = system.get_dword(f"{cs}\\Control\\Session Manager\\Power", "HiberbootEnabled")
        facts = {
            "product_name": product,
            "major": major,
            "minor": minor,
            "build": build,
            "edition": software.get_str(cv, "EditionID") or "",
            "installation_type": installation,
            "server": server,
            "arch": g.inspect_get_arch(root),
            "hostname": g.inspect_get_hostname(root),
            "systemroot": systemroot,
            "system_drive": next((d for d, dev in sorted(drives.items()) if dev == root), "C"),
            "current_control_set": cs,
            "generation": generation(major, minor, build, server),
            "applications": apps,
            "vmware_tools": _vmware_tools(apps),
            "static_ips": _static_ips(system, cs),
            "fast_startup": fast_startup == 1,
            "hibernation": _hibernation(g, root),
            "bitlocker_volumes": bitlocker_volumes(g, devices),
        }
    return facts


def windows_concerns(g, root: str, facts: dict, options: dict) -> list[Concern]:
    """Critical and lesser findings for a Windows guest: hibernation, BitLocker, drivers, first boot."""
    concerns = []
    name = f"{facts['product_name']} ({root})"
    if facts["hibernation"]:
        h = facts["hibernation"]
        concerns.append(Concern(
            id="windows-hibernated", severity=Severity.critical,
            message=f"{name} is hibernated or shut down with Fast Startup (ntfs-3g read-write probe "
                    f"{h['ntfs_3g_probe']}, hiberfil.sys header {h['hiberfil_header']!r}); its disk cannot be "
                    f"changed safely and resuming would lose the changes",
            remedy="Boot the source VM, run `powercfg /h off` as administrator, shut it down with "
                   "`shutdown /s /t 0`, then migrate again."))
    if facts["bitlocker_volumes"]:
        concerns.append(Concern(
            id="windows-bitlocker", severity=Severity.critical,
            message=f"{name}: BitLocker-encrypted volume(s) {', '.join(facts['bitlocker_volumes'])} cannot be "
                    f"read or fixed offline, and the new virtual hardware would trigger recovery",
            remedy="Decrypt on the source (`manage-bde -off <drive>`, wait for it to finish) or at least "
                   "suspend protection, and keep the recovery keys at hand."))
    if facts["generation"] is None:
        concerns.append(Concern(
            id="windows-unsupported", severity=Severity.critical,
            message=f"{name} {facts['major']}.{facts['minor']} is older than Windows 7 / Server 2008 R2",
            remedy="Upgrade the guest before migrating, or convert it by hand."))
    concerns += _driver_concerns(name, facts, options)
    if not options.get("firstboot_service_exe"):
        concerns.append(Concern(
            id="windows-no-firstboot", severity=Severity.warning,
            message=f"{name}: no first-boot service host given, so the staged virtio drivers are not installed "
                    f"and VMware Tools is not removed on first boot",
            remedy="Set the `firstboot_service_exe` option to a srvany-compatible service host executable."))
    return concerns


def _driver_concerns(name: str, facts: dict, options: dict) -> list[Concern]:
    path = options.get("virtio_win")
    if not path:
        return [Concern(
            id="windows-no-virtio-win", severity=Severity.critical,
            message=f"{name} needs the virtio-win drivers to boot on KVM and none were given",
            remedy="Set the `virtio_win` option to a virtio-win ISO or unpacked directory.")]
    if facts["generation"] is None:
        return []
    try:
        choices = VirtioWin(path).choose(facts["generation"], facts["arch"])
    except InputError as e:
        return [Concern(id="windows-virtio-win-unreadable", severity=Severity.critical,
                        message=f"{name}: virtio-win {path} cannot be read: {e}",
                        remedy="Point `virtio_win` at a readable virtio-win ISO or directory.")]
    missing = [d for d in BOOT_DRIVERS if d not in boot_choices(choices)]
    if len(missing) == len(BOOT_DRIVERS):
        return [Concern(
            id="windows-no-boot-driver", severity=Severity.critical,
            message=f"{name}: virtio-win {path} has no viostor or vioscsi build for {facts['generation']} "
                    f"{facts['arch']} or any older release",
            remedy="Use a virtio-win release that supports this Windows version.")]
    return []
