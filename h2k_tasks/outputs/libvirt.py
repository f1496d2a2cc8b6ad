"""The libvirt domain of a migrated VM's machine (h2k_tasks/machine.py): its firmware, memory and CPUs,
its disks in their boot order, virtio NICs with the source's MACs, a guest-agent channel, every PCI
device at the address the boot test gave it; for Windows a local-time clock and Hyper-V
enlightenments. `virt-xml-validate` accepts it."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from h2k_planner.models import Firmware
from h2k_tasks.machine import VIDEO_SLOT, Machine, port_address

# what virt-install and virt-v2v give a Windows guest (docs/windows.md, "Domain details")
HYPERV = ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset", "frequencies"]
WINDOWS_TIMERS = [{"name": "rtc", "tickpolicy": "catchup"}, {"name": "pit", "tickpolicy": "delay"},
                  {"name": "hpet", "present": "no"}, {"name": "hypervclock", "present": "yes"}]
GUEST_AGENT = "org.qemu.guest_agent.0"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def domain_xml(m: Machine, network: str = "default") -> str:
    """The domain of machine `m` (h2k_tasks/machine.py): every PCI device at its pinned address."""
    dom = ET.Element("domain", type="kvm")
    _sub(dom, "name", m.name)
    if m.uuid:
        _sub(dom, "uuid", m.uuid)
    _sub(dom, "memory", str(m.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(m.cpus))
    efi = m.firmware == Firmware.efi
    os_el = _sub(dom, "os", **({"firmware": "efi"} if efi else {}))
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if efi:
        fw = _sub(os_el, "firmware")
        _sub(fw, "feature", enabled="yes" if m.secure_boot else "no", name="secure-boot")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if m.windows:
        hyperv = _sub(features, "hyperv", mode="custom")
        for name in HYPERV:
            _sub(hyperv, name, state="on", **({"retries": "8191"} if name == "spinlocks" else {}))
    if efi and m.secure_boot:
        _sub(features, "smm", state="on")
    _sub(dom, "cpu", mode="host-model")
    if m.windows:
        clock = _sub(dom, "clock", offset="localtime")
        for timer in WINDOWS_TIMERS:
            _sub(clock, "timer", **timer)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _sub(devices, "controller", type="pci", index="0", model="pcie-root")
    for port in range(1, len(m.nics) + len(m.ports) + 1):
        slot, function = port_address(port)
        ctl = _sub(devices, "controller", type="pci", index=str(port), model="pcie-root-port")
        _sub(ctl, "target", chassis=str(port))
        _pci(ctl, 0, slot, function, multifunction=function == 0)
    prefix = {"virtio": "vd", "sata": "sd", "scsi": "sd"}[m.bus]
    for n, d in enumerate(m.disks):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=d.format, discard="unmap")
        _sub(disk, "source", file=d.path)
        _sub(disk, "target", dev=f"{prefix}{chr(ord('a') + n)}", bus=m.bus)
        _sub(disk, "boot", order=str(d.boot_order))
        if m.bus == "virtio":
            _pci(disk, m.ports[f"disk{n}"])
        else:
            _sub(disk, "address", type="drive", controller="0", bus="0", target="0", unit=str(d.unit))
    if m.bus == "scsi":
        _pci(_sub(devices, "controller", type="scsi", index="0", model="virtio-scsi"), m.ports["scsi"])
    _pci(_sub(devices, "controller", type="virtio-serial", index="0"), m.ports["serial"])
    _pci(_sub(devices, "controller", type="usb", index="0", model="qemu-xhci"), m.ports["usb"])
    for nic in m.nics:
        iface = _sub(devices, "interface", type="network")
        if nic.mac:
            _sub(iface, "mac", address=nic.mac)
        _sub(iface, "source", network=network)
        _sub(iface, "model", type="virtio")
        _pci(iface, nic.port)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=GUEST_AGENT)
    _sub(devices, "input", type="tablet", bus="usb")
    _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type="virtio", primary="yes")
    _pci(video, 0, VIDEO_SLOT)
    rng = _sub(devices, "rng", model="virtio")
    rng.append(_backend())
    _pci(rng, m.ports["rng"])
    _pci(_sub(devices, "memballoon", model="virtio"), m.ports["balloon"])
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _pci(parent: ET.Element, bus: int, slot: int = 0, function: int = 0, multifunction: bool = False) -> None:
    _sub(parent, "address", type="pci", domain="0x0000", bus=f"0x{bus:02x}", slot=f"0x{slot:02x}",
         function=f"0x{function:x}", **({"multifunction": "on"} if multifunction else {}))


def _backend() -> ET.Element:
    el = ET.Element("backend", model="random")
    el.text = "/dev/urandom"
    return el
