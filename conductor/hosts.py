"""The live worker hosts, as they publish themselves in Redis, with the bytes already queued for
each by unfinished VMs of running waves."""
from __future__ import annotations

from h2k_planner.models import Plan
from h2k_planner.placement import HostFacts
from h2k_tasks.state import P, State


def live_hosts(state: State, count_queued: bool = True) -> list[HostFacts]:
    """The hosts with a live worker; `count_queued` adds the bytes already queued for each, which
    placement needs and reading every running wave's plan costs."""
    names = [k.split(":", 2)[2] for k in state.r.scan_iter(f"{P}:host:*")]
    queued = queued_bytes(state) if count_queued else {}
    hosts = []
    for name in sorted(names):
        rec = state.r.hgetall(f"{P}:host:{name}")
        if rec:
            hosts.append(HostFacts(name=name, data_dir=rec.get("data_dir", "/"),
                                   free_bytes=int(float(rec.get("free_bytes", 0))),
                                   concurrency=int(rec.get("concurrency", 1)), queued_bytes=queued.get(name, 0)))
    return hosts


def queued_bytes(state: State) -> dict[str, int]:
    out: dict[str, int] = {}
    for wave in state.waves():
        rec = state.wave(wave)
        if rec.get("status") != "running" or not rec.get("plan"):
            continue
        plan = Plan.model_validate_json(rec["plan"])
        for pvm in plan.vms:
            final = state.r.hget(f"{P}:st:{wave}:{pvm.vm.name}:vm:finalize", "status")
            if final != "succeeded":
                out[pvm.host] = out.get(pvm.host, 0) + sum(d.virtual_size for d in pvm.vm.disks)
    return out
