"""OVF envelopes (1.x and 2.x) parsed with defusedxml into plain records: the files referenced,
the disks (capacity in bytes), and each VirtualSystem's hardware. Elements and attributes are
matched by local name, so both OVF namespaces read the same. No file is opened here."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from h2k_planner.errors import InputError
from h2k_planner.sources.scope import check_size

MAX_OVF = 16 * 1024 * 1024
_UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$", re.I)
_NAMED_UNITS = {"bytes": 1, "kilobytes": 2**10, "megabytes": 2**20, "gigabytes": 2**30, "terabytes": 2**40}
_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")


@dataclass
class FileRef:
    id: str
    href: str
    size: int | None
    gzip: bool


@dataclass
class DiskDef:
    id: str
    file_ref: str | None
    capacity: int


@dataclass
class Device:
    instance: str
    kind: int
    subtype: str = ""
    parent: str = ""
    address: str = ""
    address_on_parent: str = ""
    host_resource: str = ""
    connection: str = ""
    name: str = ""
    quantity: str = ""
    units: str = ""


@dataclass
class System:
    id: str
    name: str
    os_type: str = ""
    devices: list[Device] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    macs: list[str | None] = field(default_factory=list)  # a VirtualBox machine's adapters' MACs, by slot
    boot_order: list[str] = field(default_factory=list)  # InstanceIDs of the disks vmw:BootOrderSection names


@dataclass
class Envelope:
    files: dict[str, FileRef]
    disks: dict[str, DiskDef]
    systems: list[System]


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _attr(el: Element, name: str, default: str = "") -> str:
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return default


def _children(el: Element, name: str) -> list[Element]:
    return [c for c in el if isinstance(c.tag, str) and _local(c.tag) == name]


def _all(el: Element, name: str) -> list[Element]:
    return [c for c in el.iter() if isinstance(c.tag, str) and _local(c.tag) == name]


def _text(el: Element, name: str) -> str:
    found = _children(el, name)
    return (found[0].text or "").strip() if found else ""


def unit_scale(path: str, units: str) -> int:
    """Bytes per unit of an OVF allocation-units string such as `byte * 2^30`."""
    if not units:
        return 1
    if units.strip().lower() in _NAMED_UNITS:
        return _NAMED_UNITS[units.strip().lower()]
    m = _UNITS.match(units)
    if not m:
        raise InputError(path, f"allocation units {units[:40]!r} are not understood")
    if m.group(1) is None:
        return 1
    base, exp = int(m.group(1)), int(m.group(2))
    if base not in (2, 10) or exp > 60:
        raise InputError(path, f"allocation units {units[:40]!r} are absurd")
    return base**exp


def count(path: str, value: str, what: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise InputError(path, f"{what} {value[:40]!r} is not a whole number") from None
    if n < 0:
        raise InputError(path, f"{what} {n} is negative")
    return n


def parse_ovf(path: str, data: bytes) -> Envelope:
    """Parse the envelope at `path` (its bytes given); InputError on anything malformed."""
    if not data.strip():
        raise InputError(path, "is empty")
    if len(data) > MAX_OVF:
        raise InputError(path, "OVF descriptor larger than 16 MiB")
    try:
        root = DET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as e:
        raise InputError(path, f"refused XML: {type(e).__name__} (DTDs and entities are not allowed)") from None
    except DET.ParseError as e:
        raise InputError(path, f"not well-formed XML: {e}") from None
    except (ValueError, LookupError) as e:
        raise InputError(path, f"cannot decode the XML: {e}") from None
    if _local(root.tag) != "Envelope":
        raise InputError(path, f"root element is {_local(root.tag)}, not an OVF Envelope")
    files: dict[str, FileRef] = {}
    for refs in _children(root, "References"):
        for f in _children(refs, "File"):
            fid, href = _attr(f, "id"), _attr(f, "href")
            if not fid or not href:
                raise InputError(path, "a References/File lacks ovf:id or ovf:href")
            if fid in files:
                raise InputError(path, f"file id {fid!r} is declared twice")
            compression = _attr(f, "compression").lower()
            if compression not in ("", "identity", "gzip"):
                raise InputError(path, f"file {href!r}: compression {compression!r} is not supported")
            size = _attr(f, "size")
            files[fid] = FileRef(fid, href, count(path, size, "file size") if size else None, compression == "gzip")
    disks: dict[str, DiskDef] = {}
    for section in _all(root, "DiskSection"):
        for d in _children(section, "Disk"):
            did = _attr(d, "diskId")
            if not did or did in disks:
                raise InputError(path, f"disk id {did!r} is missing or declared twice")
            ref = _attr(d, "fileRef") or None
            if ref is not None and ref not in files:
                raise InputError(path, f"disk {did!r} refers to undeclared file {ref!r}")
            scale = unit_scale(path, _attr(d, "capacityAllocationUnits"))
            capacity = count(path, _attr(d, "capacity", "0"), f"disk {did!r} capacity") * scale
            disks[did] = DiskDef(did, ref, check_size(path, capacity, f"disk {did!r} capacity"))
    systems = [_system(path, vs) for vs in _all(root, "VirtualSystem")]
    if not systems:
        raise InputError(path, "no VirtualSystem in the OVF")
    return Envelope(files, disks, systems)


def _system(path: str, vs: Element) -> System:
    system = System(id=_attr(vs, "id"), name=_text(vs, "Name") or _attr(vs, "id"))
    for os_section in _children(vs, "OperatingSystemSection"):
        system.os_type = _attr(os_section, "osType") or _text(os_section, "Description")
    for hw in _children(vs, "VirtualHardwareSection"):
        for item in _children(hw, "Item") + _children(hw, "StorageItem") + _children(hw, "EthernetPortItem"):
            kind = _text(item, "ResourceType")
            system.devices.append(Device(
                instance=_text(item, "InstanceID"), kind=count(path, kind, "ResourceType") if kind else 0,
                subtype=_text(item, "ResourceSubType"), parent=_text(item, "Parent"),
                address=_text(item, "Address"), address_on_parent=_text(item, "AddressOnParent"),
                host_resource=_text(item, "HostResource"), connection=_text(item, "Connection"),
                name=_text(item, "ElementName"), quantity=_text(item, "VirtualQuantity"),
                units=_text(item, "AllocationUnits")))
        for cfg in _children(hw, "Config"):
            system.extra[_attr(cfg, "key").lower()] = _attr(cfg, "value")
    for boot in _children(vs, "BootOrderSection"):  # VMware's: one per bootable device, in boot order
        if _attr(boot, "type").lower() == "disk" and _attr(boot, "instanceId"):
            system.boot_order.append(_attr(boot, "instanceId"))
    for machine in _children(vs, "Machine"):
        _vbox_machine(path, machine, system)
    return system


def _vbox_machine(path: str, machine: Element, system: System) -> None:
    """VirtualBox's own `vbox:Machine` section: its firmware, and the MACs its OVF items lack."""
    for hw in _children(machine, "Hardware"):
        for fw in _children(hw, "Firmware"):
            if _attr(fw, "type").upper().startswith("EFI"):
                system.extra.setdefault("firmware", "efi")
        adapters = [a for net in _children(hw, "Network") for a in _children(net, "Adapter")
                    if _attr(a, "enabled", "true").lower() == "true"]
        for a in sorted(adapters, key=lambda a: int(_attr(a, "slot", "0")) if _attr(a, "slot", "0").isdigit() else 0):
            raw = _attr(a, "MACAddress").lower()
            if not raw:
                system.macs.append(None)
                continue
            mac = ":".join(raw[i:i + 2] for i in range(0, len(raw), 2)) if len(raw) == 12 else raw
            if not _MAC.match(mac):
                raise InputError(path, f"VirtualBox adapter {_attr(a, 'slot')} has a malformed MAC address {raw[:40]!r}")
            system.macs.append(mac)


def quantity(path: str, dev: Device, what: str, default_units: str = "") -> int:
    scale = unit_scale(path, dev.units or default_units)
    return count(path, dev.quantity or "0", what) * scale


def mac_of(path: str, dev: Device) -> str | None:
    if not dev.address:
        return None
    mac = dev.address.lower().replace("-", ":")
    if not _MAC.match(mac):
        raise InputError(path, f"NIC {dev.name or dev.instance} has a malformed MAC address {dev.address[:40]!r}")
    return mac
