"""A launched, inspected and mounted phony Linux guest on a throwaway overlay, ready for the fixers."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from h2k_planner.models import VM, Disk, Firmware, Nic
from h2k_tasks import qemu_img
from h2k_tasks.appliance import open_session
from h2k_tasks.fixers import FixContext
from h2k_tasks.fixers.guestfiles import read
from h2k_tasks.fixers.linux import fix_linux
from h2k_tasks.inspect_linux import inspect_linux
from tests.builders import phony_linux
from tests.builders.phony_recipes import MAC


@dataclass
class Guest:
    g: object
    root: str
    facts: dict
    ctx: FixContext

    def read(self, path: str) -> str:
        text = read(self.g, path)
        assert text is not None, f"{path} is missing"
        return text

    def calls(self) -> list[str]:
        if not self.g.is_file(phony_linux.CALLS_LOG):
            return []
        return self.read(phony_linux.CALLS_LOG).splitlines()


def fixed_guest(name: str, workdir: Path, firmware: str = "bios", options: dict | None = None):
    """Open the guest, run fix_linux twice; yield (guest, first changes, second changes), then close."""
    guest = open_guest(name, workdir, firmware, options)
    try:
        first = fix_linux(guest.ctx)
        second = fix_linux(guest.ctx)
        yield guest, first, second
    finally:
        guest.g.close()


def open_guest(name: str, workdir: Path, firmware: str = "bios", options: dict | None = None) -> Guest:
    disks = []
    for i, image in enumerate(phony_linux.build_all()[name]):
        overlay = workdir / f"{name}-{i}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)],
                       check=True)
        disks.append(Disk(source=str(overlay), format="qcow2", virtual_size=qemu_img.info(str(overlay), "qcow2")["virtual-size"],
                          bus="scsi", unit=i, index=i))
    g = open_session([(d.source, d.format) for d in disks], readonly=False).g
    roots = g.inspect_os()
    assert len(roots) == 1, roots
    mps = g.inspect_get_mountpoints(roots[0])
    for mp in sorted(mps, key=len):
        g.mount(mps[mp], mp)
    facts = inspect_linux(g, roots[0])
    vm = VM(name=name, firmware=Firmware(firmware), disks=disks, nics=[Nic(mac=MAC, model="vmxnet3", name="ens192")],
            source=str(workdir), source_kind="disk")
    ctx = FixContext(g=g, root=roots[0], inspection=facts, vm=vm, options=options or {})
    return Guest(g=g, root=roots[0], facts=facts, ctx=ctx)
