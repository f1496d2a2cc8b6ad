"""Inputs assembled around virt-v2v's own `-i vmx` / `-i ova` fixtures (../shared/peer-fixtures/virt-v2v,
read-only data): the disks the fixtures name, as real images, packed the ways its README describes,
and the results its `.expected` files and `test-i-ova.xml` give, read into plain values."""
from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from xml.etree import ElementTree

from tests.builders.disks import run
from tests.support import ROOT

FIXTURES = os.path.join(os.path.dirname(ROOT), "shared", "peer-fixtures", "virt-v2v")
MIB = 2**20


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def stream_vmdk(path: str, mib: int) -> bytes:
    """A streamOptimized VMDK of `mib` MiB (its virtual size tells which member was read)."""
    run(["qemu-img", "create", "-q", "-f", "raw", path + ".raw", f"{mib}M"])
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", path + ".raw", path])
    os.unlink(path + ".raw")
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


def digest_line(algo: str, name: str, data: bytes, end: str = "\r\n") -> str:
    return f"{algo}({name})= {hashlib.new(algo.lower(), data).hexdigest()}{end}"


@dataclass
class Expected:
    name: str
    memory: int  # bytes
    cpus: int
    firmware: str  # as the plan says it: bios or efi
    secure_boot: bool
    buses: list[str]  # disk bus in boot order
    nics: list[tuple[str, str | None, str]] = field(default_factory=list)  # (network, mac, model)


_NIC = re.compile(r'^\t(?:Bridge|Network) "(?P<net>[^"]*)"(?: mac: (?P<mac>\S+))? \[(?P<model>[^\]]+)\]$')


def expected(name: str) -> Expected:
    """What a `.expected` (virt-v2v --print-source) file says of the source VM."""
    with open(fixture(name)) as f:
        text = f.read()
    field_of, section, current = {}, {}, ""
    for line in text.splitlines():
        if line.startswith("\t"):
            section[current].append(line)
        elif line.endswith(":"):
            current = line[:-1]
            section[current] = []
        elif ":" in line:
            key, value = line.split(":", 1)
            field_of[key.strip()] = value.strip()
    nics = [(m["net"], m["mac"], m["model"]) for line in section["NICs"] if (m := _NIC.match(line))]
    return Expected(
        name=field_of["source name"], memory=int(field_of["memory"].split()[0]), cpus=int(field_of["nr vCPUs"]),
        firmware={"uefi": "efi", "bios": "bios"}[field_of["firmware"]],
        secure_boot=field_of["UEFI secureboot"] == "true",
        buses=[re.search(r"\[(\w+)\]", line).group(1) for line in section["disks"]], nics=nics)


def expected_from_domain(name: str) -> Expected:
    """What virt-v2v's libvirt output (`test-i-ova.xml`) says of the source VM it converted."""
    dom = ElementTree.parse(fixture(name)).getroot()
    memory = int(dom.findtext("memory")) * {"KiB": 2**10, "MiB": 2**20}[dom.find("memory").get("unit")]
    disks = [d for d in dom.iter("disk") if d.get("device") == "disk"]
    nics = [(i.find("source").get("bridge") or i.find("source").get("network"), None, "")
            for i in dom.iter("interface")]
    return Expected(name=dom.findtext("name"), memory=memory, cpus=int(dom.findtext("vcpu")),
                    firmware="efi" if dom.find("os/loader") is not None else "bios", secure_boot=False,
                    buses=["" for _ in disks], nics=nics)


def vmx_case(name: str, out: str) -> tuple[str, dict[str, tuple[str, int, int]]]:
    """The fixture `.vmx` copied into `out` with a real VMDK for every hard disk it names; returns
    its path and {disk file: (bus, controller, unit)} as the `.vmx` keys place them."""
    os.makedirs(out, exist_ok=True)
    vmx = os.path.join(out, name)
    shutil.copyfile(fixture(name), vmx)
    with open(vmx, encoding="utf-8", errors="replace") as f:
        text = f.read()
    slots = {}
    for bus, ctl, unit, file in re.findall(r'^(scsi|sata|ide|nvme)(\d+):(\d+)\.fileName = "([^"/]+\.vmdk)"', text, re.M | re.I):
        run(["qemu-img", "create", "-q", "-f", "vmdk", os.path.join(out, file), "1M"])
        slots[file] = (bus.lower(), int(ctl), int(unit))
    return vmx, slots


def tar_ova(path: str, members: list[tuple[str, bytes | None]], compression: str = "") -> str:
    """A tar (`compression` "", "gz" or "xz") of `members` in order; content None is a directory entry."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    data = buf.getvalue()
    if compression == "gz":
        data = gzip.compress(data, mtime=0)
    elif compression == "xz":
        data = lzma.compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


def zip_ova(path: str, members: list[tuple[str, bytes]]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members:
            z.writestr(name, content)
    return path
