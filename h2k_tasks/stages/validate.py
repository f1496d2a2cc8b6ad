"""validate: the final outputs, after any guest fixes, are sound images of the right size."""
from __future__ import annotations

from h2k_planner.models import VM, Output
from h2k_tasks.stages.verify import check_output


def validate_vm(vm: VM, output: Output, outputs: list[str]) -> dict:
    checks = [check_output(path, output.format, disk.virtual_size) | {"path": path}
              for disk, path in zip(vm.disks, outputs)]
    return {"checks": checks}
