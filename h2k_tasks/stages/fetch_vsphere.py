"""fetch for vSphere disks: nothing is downloaded. The fetch records the disk's identity on the
datastore (each file's datastore path, size and Last-Modified, and which file holds the data, as
`vmdk` or `raw`; h2k_tasks/vsphere_stream.py) and convert streams the disk from there, refusing it
if those files changed in between. The worker logs in with its own session, resolving the plan's
secret reference itself: no password travels in a task or in Redis."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from h2k_planner.models import Disk, Output, VM
from h2k_tasks import vsphere_stream
from h2k_tasks.stages import vm_dir


def fetch_vsphere(endpoint: dict, disk: Disk) -> dict:
    return vsphere_stream.probe(endpoint, disk.source, disk.chain, disk.virtual_size)


@contextmanager
def streamed(endpoint: dict, fetched: dict, output: Output, vm: VM, disk: Disk,
             gen: int) -> Iterator[vsphere_stream.Stream]:
    """The disk as convert reads it: streamed from the datastore, through a scratch directory of
    attempt `gen` in the VM's output directory that holds only the stream's cookie, CA and read log."""
    directory = vm_dir(output, vm)
    os.makedirs(directory, exist_ok=True)
    scratch = vsphere_stream.scratch_dir(directory, f"{vm.slug}-disk{disk.index}", gen)
    with vsphere_stream.stream(endpoint, fetched, scratch) as s:
        yield s
