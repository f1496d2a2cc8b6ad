"""A libvirt domain for a converted VM: virtio disks and NICs, the source's MACs, firmware,
memory and CPUs, a guest-agent channel; for Windows a local-time clock and Hyper-V enlightenments.
`virt-xml-validate` accepts it."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from h2k_planner.models import VM, Firmware

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


def domain_xml(vm: VM, disks: list[tuple[str, str]], network: str = "default", disk_bus: str = "virtio",
               windows: bool = False) -> str:
    """`disks` are (path, format) in boot order; `vm.firmware` is the firmware to ship (see h2k_tasks.firmware)."""
    dom = ET.Element("domain", type="kvm")
    _sub(dom, "name", vm.name)
    if vm.uuid:
        _sub(dom, "uuid", vm.uuid)
    _sub(dom, "memory", str(vm.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(vm.cpus))
    os_el = _sub(dom, "os", **({"firmware": "efi"} if vm.firmware == Firmware.efi else {}))
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if vm.firmware == Firmware.efi:
        fw = _sub(os_el, "firmware")
        _sub(fw, "feature", enabled="yes" if vm.secure_boot else "no", name="secure-boot")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if windows:
        hyperv = _sub(features, "hyperv", mode="custom")
        for name in HYPERV:
            _sub(hyperv, name, state="on", **({"retries": "8191"} if name == "spinlocks" else {}))
    if vm.firmware == Firmware.efi and vm.secure_boot:
        _sub(features, "smm", state="on")
    _sub(dom, "cpu", mode="host-model")
    if windows:
        clock = _sub(dom, "clock", offset="localtime")
        for timer in WINDOWS_TIMERS:
            _sub(clock, "timer", **timer)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    prefix = {"virtio": "vd", "sata": "sd", "scsi": "sd"}[disk_bus]
    for n, (path, fmt) in enumerate(disks):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=fmt, discard="unmap")
        _sub(disk, "source", file=path)
        _sub(disk, "target", dev=f"{prefix}{chr(ord('a') + n)}", bus=disk_bus)
        if n == 0:
            _sub(disk, "boot", order="1")
    if disk_bus == "scsi":
        _sub(devices, "controller", type="scsi", model="virtio-scsi")
    for nic in vm.nics:
        iface = _sub(devices, "interface", type="network")
        if nic.mac:
            _sub(iface, "mac", address=nic.mac)
        _sub(iface, "source", network=network)
        _sub(iface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=GUEST_AGENT)
    _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type="virtio")
    _sub(devices, "rng", model="virtio").append(_backend())
    _sub(devices, "memballoon", model="virtio")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _backend() -> ET.Element:
    el = ET.Element("backend", model="random")
    el.text = "/dev/urandom"
    return el
