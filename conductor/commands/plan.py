"""`h2k plan SOURCE...`: what a migration would do, without doing it."""
from __future__ import annotations

import argparse
import json
import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conductor.commands.common import add_planning_args, load_config
from conductor.planning import plan_wave
from h2k_planner.concerns import gate
from h2k_planner.models import Plan
from h2k_tasks.settings import redis_url
from h2k_tasks.state import State


def register(sub) -> None:
    p = sub.add_parser("plan", help="print the plan for SOURCEs without running it")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="default: the config's sources")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="output directory the plan targets")
    add_planning_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args, fixes={"virtio_win": args.virtio_win})
    state = State.from_url(redis_url(cfg.broker_url)) if cfg.broker_url else None
    plan = plan_wave(cfg, args.sources or cfg.sources, os.path.abspath(args.output), state,
                     allow=tuple(args.allow_path), inspect=args.inspect)
    print_plan(plan, as_json=args.json)
    gate([p.vm for p in plan.vms], cfg.allowed_concerns())  # after printing: the inventory is still shown
    return 0


def _gib(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def print_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        print(json.dumps(plan.model_dump(mode="json"), indent=2))
        return
    console = Console()
    console.print(f"wave [bold]{plan.wave}[/bold] -> {plan.output.directory} "
                  f"({plan.output.format}{', zstd' if plan.output.compress else ''})")
    for pvm in plan.vms:
        vm = pvm.vm
        console.print(f"\n[bold]{vm.name}[/bold] ({vm.source_kind}: {vm.source}) on host {pvm.host}: "
                      f"{vm.firmware.value}, {vm.cpus} vCPU, {vm.memory_mib} MiB, guest {vm.guest_os or '?'}")
        disks = Table("disk", "bus", "format", "virtual", "allocated", "chain", "source")
        for d in vm.disks:
            disks.add_row(str(d.index), f"{d.bus}{d.controller}:{d.unit}", d.format, _gib(d.virtual_size),
                          _gib(d.allocated_size), str(d.depth), d.source)
        console.print(disks)
        for nic in vm.nics:
            console.print(f"  nic {nic.name}: {nic.mac or 'no MAC'} {nic.model} on {nic.network or '?'} -> virtio")
        for c in vm.concerns:
            console.print(f"  {escape(f'[{c.severity.value}]')} {c.id}: {c.message}" + (f" (remedy: {c.remedy})" if c.remedy else ""))
        console.print(f"  stages: per disk {' -> '.join(pvm.disk_stages)}; then {' -> '.join(pvm.stages)} -> finalize")
