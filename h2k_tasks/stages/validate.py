"""validate: the final outputs, after the guest fixes, are sound images of the right size, and
the guest boots from them: QEMU on throwaway overlays runs the machine the domain XML describes
(h2k_tasks/machine.py; memory and CPUs capped), and the serial console is watched for a login prompt
(see h2k_tasks/boot_test.py)."""
from __future__ import annotations

import os
from typing import Callable

from h2k_planner.models import Output, PlannedVM
from h2k_tasks.accel import Hypervisor
from h2k_tasks.boot_test import boot_test
from h2k_tasks.machine import for_test, shipped_machine
from h2k_tasks.stages import StageFailed
from h2k_tasks.atomic import identity
from h2k_tasks.stages.verify import check_output, content_sha256


def _checked(path: str, output: Output, size: int, verified: dict, alive: Callable[[], bool]) -> dict:
    """An output's check and content digest; the digest verify took is reused while the output is
    the file verify read (same inode, size and mtime)."""
    result = check_output(path, output.format, size) | {"path": path}
    if verified.get("output") == identity(path):
        return result | {"content_sha256": verified["content_sha256"], "digest": "as verified"}
    return result | {"content_sha256": content_sha256(path, output.format, size, alive), "digest": "read"}


def validate_vm(pvm: PlannedVM, output: Output, outputs: list[str], verified: list[dict], inspection: dict,
                vm_dir: str, alive: Callable[[], bool], hv: Hypervisor = Hypervisor(), gen: int = 0) -> dict:
    """`verified`: each disk's verify result. `gen`: this attempt's lease generation (its boot scratch
    directory is named by it)."""
    vm = pvm.vm
    checks = [_checked(path, output, disk.virtual_size, done, alive)
              for disk, path, done in zip(vm.disks, outputs, verified)]
    os_type = inspection.get("os_type", "unknown")
    if "guest" in pvm.stages and os_type == "unknown":
        raise StageFailed("no operating system was found on the disks; a VM that holds data only is migrated "
                          "with `guest: false` in its config", details={"checks": checks, "boot": None})
    if not pvm.boot_test:
        return {"checks": checks, "boot": None, "boot_note": "boot test turned off"}
    if os_type != "linux":
        note = {"windows": "not run: Windows has no serial-console login to watch (see docs/windows.md)",
                "unknown": "not run: the VM holds data only (guest: false)"}.get(os_type, f"not run for {os_type}")
        return {"checks": checks, "boot": None, "boot_note": note}
    if not inspection.get("linux", {}).get("kernels", [None]):
        raise StageFailed("boot test: the guest has no kernel installed", details={"checks": checks, "boot": None})
    machine, capped = for_test(shipped_machine(vm, inspection, [(path, output.format) for path in outputs]))
    result = boot_test(machine, timeout=pvm.boot_timeout, cancel=lambda: not alive(),
                       console_log=os.path.join(vm_dir, "console.log"), workdir=vm_dir, hv=hv, gen=gen)
    boot = result.model_dump() | {"machine": machine.model_dump(mode="json"), "notes": capped}
    if not result.booted and result.verdict != "cancelled":
        raise StageFailed(f"boot test: {result.verdict}: {result.reason}", details={"checks": checks, "boot": boot})
    return {"checks": checks, "boot": boot}
