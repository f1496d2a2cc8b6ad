"""Which KVM host each VM goes to. Pure: the same VMs, rules and host facts give the same answer.

Only hosts whose worker writes under the wave's output directory (its `data_dir` holds it) can
take a VM. In order: a host pinned for the VM in the config; the host mapped to the VM's source
group (a datastore, or a local source's mount point); else the host with the most room, room
being the free space its worker reported for its data_dir less the bytes already queued for it
and the bytes placed so far (largest VMs first).
"""
from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from h2k_planner.errors import InputError
from h2k_planner.models import VM

LOCAL_HOST = "local"


class HostFacts(BaseModel):
    """What a worker host reports about itself (see h2k_tasks/hostinfo.py)."""

    name: str
    data_dir: str = "/"
    free_bytes: int = Field(0, description="free space of data_dir, as the worker measured it")
    queued_bytes: int = 0
    concurrency: int = 1


class PlacementRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: dict[str, str] = Field(default_factory=dict,
                                    description="source group (e.g. 'ds:datastore1' or 'file:/vmfs/a') -> host")


def source_cap(vm: VM) -> str:
    """What a VM's reads count against for the per-source concurrency cap: the host its disks are
    read through when the source names one (an ESXi host), else its source group."""
    return vm.source_host or source_group(vm)


def source_group(vm: VM) -> str:
    """Where a VM's disks live (a datastore or a mounted file system), for placement rules."""
    first = vm.disks[0].source if vm.disks else vm.source
    if first.startswith("["):
        return "ds:" + first[1:first.index("]")] if "]" in first else "ds:?"
    path = os.path.abspath(first)
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return f"file:{path}"


def writes_under(host: HostFacts, directory: str) -> bool:
    root = os.path.abspath(host.data_dir)
    return os.path.commonpath([root, os.path.abspath(directory)]) == root


def place(vms: list[VM], rules: PlacementRules, hosts: list[HostFacts],
          pinned: dict[str, str], output_dir: str) -> dict[str, str]:
    known = {h.name: h for h in hosts}
    able = [h for h in hosts if writes_under(h, output_dir)]
    if hosts and not able:
        raise InputError(None, f"no live worker writes under {output_dir}: their data_dir are "
                               f"{', '.join(f'{h.name}: {h.data_dir}' for h in hosts)}")
    for vm_name, host in list(pinned.items()) + [(g, h) for g, h in rules.sources.items()]:
        if known and host not in known:
            raise InputError(None, f"host {host!r} (for {vm_name}) has no live worker; known hosts: "
                                   f"{', '.join(sorted(known))}")
        if known and not writes_under(known[host], output_dir):
            raise InputError(None, f"host {host!r} (for {vm_name}) writes under its data_dir "
                                   f"{known[host].data_dir}, which does not hold {output_dir}")
    room = {h.name: h.free_bytes - h.queued_bytes for h in able}
    placed: dict[str, str] = {}
    for vm in sorted(vms, key=lambda v: -sum(d.virtual_size for d in v.disks)):
        host = pinned.get(vm.name) or rules.sources.get(source_group(vm))
        if host is None:
            host = max(sorted(room), key=lambda h: room[h]) if room else LOCAL_HOST
        placed[vm.name] = host
        if host in room:
            room[host] -= sum(d.virtual_size for d in vm.disks)
    return placed
