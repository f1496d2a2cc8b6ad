"""VMware `.vmx` files: the VM's hardware, its disks (each a VMDK chain) and its NICs."""
from __future__ import annotations

import os
import re

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Firmware, Nic, Severity
from h2k_planner.sources.scope import Scope
from h2k_planner.sources.vmdk import vmdk_disk

MAX_VMX = 4 * 1024 * 1024
_LINE = re.compile(r'^(?P<key>[A-Za-z0-9_.:\[\]-]+)\s*=\s*(?:"(?P<q>[^"]*)"|(?P<u>\S*))\s*$')
_DISK = re.compile(r"^(?P<bus>scsi|sata|ide|nvme)(?P<ctl>\d+):(?P<unit>\d+)$")
_BOOT_ORDER = {"scsi": 0, "sata": 1, "nvme": 2, "ide": 3}
DISK_DEVICE_TYPES = {"scsi-harddisk", "disk", "ata-harddisk", "nvme-harddisk", ""}


def parse_vmx(path: str) -> dict[str, str]:
    """Key/value pairs of a .vmx, keys lower-cased, decoded per its `.encoding`."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_VMX + 1)
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_VMX:
        raise InputError(path, "larger than 4 MiB: not a .vmx")
    if not raw.strip():
        raise InputError(path, "is empty")
    if b"\0" in raw:
        raise InputError(path, "binary content: not a .vmx")
    encoding = "utf-8"
    m = re.search(rb'^\.encoding\s*=\s*"([^"]+)"', raw, re.M | re.I)
    if m:
        encoding = m.group(1).decode("ascii", "replace")
    try:
        text = raw.decode(encoding)
    except (LookupError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot decode as {encoding}: {e}") from None
    pairs: dict[str, str] = {}
    for lineno, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lm = _LINE.match(line)
        if not lm:
            raise InputError(path, f"line {lineno}: not a 'key = \"value\"' line: {line[:60]!r}")
        pairs[lm["key"].lower()] = lm["q"] if lm["q"] is not None else lm["u"]
    return pairs


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes"}


def _int(path: str, pairs: dict[str, str], key: str, default: int) -> int:
    value = pairs.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(path, f"{key} = {value!r} is not a number") from None


def load_vmx(path: str, allow: tuple[str, ...] = ()) -> VM:
    path = os.path.abspath(path)
    scope = Scope.of(path, allow)
    pairs = parse_vmx(path)
    if "config.version" not in pairs and "virtualhw.version" not in pairs:
        raise InputError(path, "no config.version or virtualHW.version: not a .vmx")
    base = os.path.dirname(path)
    slots = []
    for key, value in pairs.items():
        if not key.endswith(".filename"):
            continue
        dm = _DISK.match(key[: -len(".filename")])
        if not dm:
            continue
        dev = key[: -len(".filename")]
        if not _true(pairs.get(f"{dev}.present", "true")):
            continue
        if pairs.get(f"{dev}.devicetype", "").lower() not in DISK_DEVICE_TYPES:
            continue  # CD-ROMs, floppies, passthrough
        if not _true(pairs.get(f"{dm['bus']}{dm['ctl']}.present", "true")):
            continue
        slots.append((_BOOT_ORDER[dm["bus"]], int(dm["ctl"]), int(dm["unit"]), dm["bus"], value, dev))
    if not slots:
        raise InputError(path, "names no hard disks")
    disks = []
    concerns: list[Concern] = []
    slots.sort()
    for index, (_, ctl, unit, bus, name, dev) in enumerate(slots):
        disk_path = scope.resolve(name, base, path)
        disks.append(vmdk_disk(disk_path, scope, bus=bus, controller=ctl, unit=unit, index=index))
        if pairs.get(f"{dev}.sharing", "").lower() == "multi-writer" or \
                pairs.get(f"{bus}{ctl}.sharedbus", "none").lower() not in ("none", ""):
            concerns.append(Concern(
                id="shared-disk", severity=Severity.critical,
                message=f"{dev} is shared with other VMs (multi-writer or a shared SCSI bus)",
                remedy="migrate the cluster as a whole, or allow the concern for this VM in the config"))
        if "independent" in pairs.get(f"{dev}.mode", "").lower():
            concerns.append(Concern(
                id="independent-disk", severity=Severity.warning,
                message=f"{dev} is an independent disk ({pairs[f'{dev}.mode']}): VMware snapshots never held it",
                remedy="make sure the disk's content is consistent (VM powered off) before migrating"))
    if any(d.depth > 1 for d in disks):
        concerns.append(Concern(
            id="snapshot-chain", severity=Severity.info,
            message="disks have snapshot deltas; the migration flattens the chain into one image",
            remedy="none needed; consolidate snapshots in VMware first if you want the source simplified"))
    if pairs.get("encryption.keysafe") or pairs.get("encryption.data"):
        concerns.append(Concern(
            id="encrypted-vm", severity=Severity.critical,
            message="the VM is encrypted by VMware; its disks cannot be read without the key",
            remedy="decrypt the VM in vSphere before migrating"))
    firmware = Firmware.efi if pairs.get("firmware", "bios").lower() == "efi" else Firmware.bios
    name = pairs.get("displayname") or os.path.splitext(os.path.basename(path))[0]
    return VM(
        name=name,
        firmware=firmware,
        secure_boot=_true(pairs.get("uefi.secureboot.enabled")),
        guest_os=pairs.get("guestos", ""),
        cpus=max(1, _int(path, pairs, "numvcpus", 1)),
        memory_mib=max(1, _int(path, pairs, "memsize", 1024)),
        uuid=_uuid(pairs.get("uuid.bios")),
        disks=disks,
        nics=_nics(path, pairs),
        boot_order=_hdd_order(pairs, [s[5].lower() for s in slots]),
        source=path,
        source_kind="vmx",
        concerns=concerns,
    )


def _hdd_order(pairs: dict[str, str], devices: list[str]) -> list[int]:
    """`bios.hddOrder` ("scsi0:1,sata0:0"): the disks the BIOS tries, in order, as indexes into `devices`."""
    named = [d.strip().lower() for d in pairs.get("bios.hddorder", "").split(",")]
    return list(dict.fromkeys(devices.index(d) for d in named if d in devices))


def _uuid(value: str | None) -> str | None:
    """VMware writes `56 4d 12 ... 34-12 ...`; libvirt wants 8-4-4-4-12 hex."""
    if not value:
        return None
    h = re.sub(r"[^0-9a-fA-F]", "", value).lower()
    if len(h) != 32:
        return None
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _nics(path: str, pairs: dict[str, str]) -> list[Nic]:
    nics = []
    ids = sorted({int(m.group(1)) for k in pairs if (m := re.match(r"^ethernet(\d+)\.present$", k))})
    for n in ids:
        p = f"ethernet{n}."
        if not _true(pairs.get(p + "present")):
            continue
        kind = pairs.get(p + "addresstype", "generated").lower()
        mac = pairs.get(p + ("address" if kind == "static" else "generatedaddress"), "").lower() or None
        if mac is not None and not _MAC.match(mac):
            raise InputError(path, f"ethernet{n} has a malformed MAC address {mac!r}")
        nics.append(Nic(
            mac=mac,
            model=pairs.get(p + "virtualdev", "e1000").lower(),
            network=pairs.get(p + "networkname") or f"ethernet{n}",  # a bridged port without one: named after it
            name=f"ethernet{n}",
        ))
    return nics
