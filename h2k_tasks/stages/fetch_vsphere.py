"""fetch for vSphere disks: download every file of the disk's chain (descriptors and extents)
from the datastore into `<vm>-disk<N>.download/` on this host, resuming with HTTP Range after a
cut; convert then reads that local copy. The worker logs in with its own session, resolving the
plan's secret reference itself: no password travels in a task or in Redis."""
from __future__ import annotations

import os
from typing import Callable

from h2k_planner.models import Disk, Output, VM
from h2k_planner.sources.vsphere_endpoint import Endpoint
from h2k_tasks.stages import StageFailed, vm_dir
from h2k_tasks.stages.download import Cancelled, download_disk, split_datastore_path


def download_dir(output: Output, vm: VM, disk: Disk) -> str:
    return os.path.join(vm_dir(output, vm), f"{vm.slug}-disk{disk.index}.download")


def local_copy(output: Output, vm: VM, disk: Disk) -> str:
    """Where the downloaded top of the disk's chain lies."""
    return os.path.join(download_dir(output, vm, disk), os.path.basename(split_datastore_path(disk.source)[1]))


def fetch_vsphere(endpoint: dict, output: Output, vm: VM, disk: Disk, alive: Callable[[], bool],
                  progress: Callable[[int, int], None]) -> dict:
    dest = download_dir(output, vm, disk)
    os.makedirs(dest, exist_ok=True)
    ep = Endpoint.model_validate(endpoint)
    files = []
    try:
        for path in disk.chain or [disk.source]:
            files += download_disk(ep, path, dest, progress=progress, cancelled=lambda: not alive())
    except Cancelled:
        raise StageFailed(f"{disk.source}: download stopped") from None
    return {"files": [{"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]}
