"""`h2k migrate SOURCE... -o DIR`: plan, run and report a wave in one command.

With no broker configured it runs its own (see conductor/embedded.py); running the same command
again resumes: finished stages whose artifacts still verify are skipped.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import redis
from rich.console import Console

from conductor.commands.common import add_planning_args, load_config, require_output_dir, state_dir
from conductor.commands.plan import print_plan
from conductor.driver import VMView
from conductor.embedded import Embedded
from conductor.progress import LineProgress, WaveProgress, failure_lines, summary_table
from conductor.planning import driver_for, plan_wave
from h2k_planner.concerns import gate
from h2k_planner.errors import InputError
from h2k_planner.placement import LOCAL_HOST
from h2k_planner.plan import FINAL_STAGE
from h2k_planner.models import Plan
from h2k_tasks.app import configure
from h2k_tasks.stages.guest import guest_stage
from h2k_tasks.settings import redis_url
from h2k_tasks.state import State, decode


def register(sub) -> None:
    p = sub.add_parser("migrate", help="migrate VMs to KVM")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a .vmx, .ovf, .ova, disk image, or a directory of them")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory, one sub-directory per VM")
    p.add_argument("--format", choices=["qcow2", "raw"], help="output disk format (default qcow2)")
    p.add_argument("--compress", action="store_true", default=None, help="zstd-compressed qcow2")
    p.add_argument("--dry-run", action="store_true",
                   help="plan, then run the guest fixers on throwaway overlays of the sources and print what "
                        "they would change; write nothing")
    p.add_argument("--no-boot-test", action="store_true", help="do not boot the converted guests")
    add_planning_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args, output={"format": args.format, "compress": args.compress},
                      fixes={"virtio_win": args.virtio_win, "boot_test": False if args.no_boot_test else None})
    out_dir = require_output_dir(args.output)
    state = State.from_url(redis_url(cfg.broker_url)) if cfg.broker_url else None
    plan = plan_wave(cfg, args.sources, out_dir, state, allow=tuple(args.allow_path), inspect=args.inspect)
    gate([p.vm for p in plan.vms], cfg.allowed_concerns())
    if state is None and any(p.host != LOCAL_HOST for p in plan.vms):
        raise InputError(None, f"without a broker only the embedded host {LOCAL_HOST!r} runs VMs; "
                               "remove the host overrides or give --broker")
    if args.dry_run:
        return dry_run(plan, args.json)
    console = Console(stderr=args.json)
    settings = cfg.worker_settings()
    embedded = None
    if state is None:
        embedded = Embedded(state_dir(out_dir) + "/redis", settings, state_dir(out_dir) + "/logs")
    try:
        if embedded:
            settings = embedded.start().settings
            state = State.from_url(redis_url(settings.broker_url))
        configure(settings)
        driver = driver_for(cfg, state, plan)
        since = time.time()
        driver.submit()
        bars = WaveProgress(console) if console.is_terminal and not args.json else None
        shown = bars or LineProgress(console)

        def on_pass(views: list[VMView]) -> None:
            if embedded:
                embedded.check()
            shown.update(views)

        if bars:
            with bars:
                views = driver.wait(on_pass)
        else:
            views = driver.wait(on_pass)
    except BaseException as e:
        if not embedded:
            raise
        broker_died = isinstance(e, redis.ConnectionError) and embedded.redis is not None and _exited(embedded.redis)
        embedded.stop(graceful=False)
        if broker_died:
            embedded.check()  # raises EmbeddedFailed naming the redis-server that exited
        raise
    if embedded:
        embedded.stop()
    rows = [result_row(v, since) for v in views]
    if args.json:
        json.dump({"wave": plan.wave, "vms": rows}, sys.stdout, indent=2)
        print()
    else:
        console.print(summary_table(rows))
        for line in failure_lines(rows):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        for row in rows:
            if row["first_boot_domain_xml"]:
                console.print(f"{row['vm']}: two-phase boot. First `virsh define {row['first_boot_domain_xml']}` "
                              "(SATA disks) and boot once so Windows installs its virtio drivers; shut it down, then "
                              f"`virsh define {row['domain_xml']}` (virtio) and start it.", markup=False)
    return 0 if all(r["status"] == "succeeded" for r in rows) else 1


def result_row(view: VMView, since: float) -> dict:
    """A VM's line in the summary; its seconds are this invocation's (a resumed VM's earlier work
    is not counted again)."""
    result = decode(view.records[("vm", FINAL_STAGE)], "result", {})
    starts = [max(since, float(r["started"])) for r in view.records.values() if r.get("started")]
    ends = [float(r["ended"]) for r in view.records.values() if r.get("ended")]
    errors = [f"{lane}/{stage}: {r['error']}" for (lane, stage), r in view.records.items()
              if r.get("status") == "failed" and r.get("error")]
    return {
        "vm": view.pvm.vm.name, "status": result.get("status", "unknown"), "disks": len(view.pvm.vm.disks),
        "seconds": max(0.0, max(ends) - min(starts)) if starts and ends else None,
        "report": result.get("report"), "errors": errors, "domain_xml": result.get("domain_xml"),
        "first_boot_domain_xml": result.get("first_boot_domain_xml"),
    }


def dry_run(plan: Plan, as_json: bool) -> int:
    """The plan, and per VM every change the fixers would make, from overlays of the sources."""
    if not as_json:
        print_plan(plan, as_json=False)
    results = {}
    for pvm in plan.vms:
        if "guest" not in pvm.stages:
            continue
        if any(d.packed for d in pvm.vm.disks):
            results[pvm.vm.name] = {"notes": ["compressed disks: unpacked only by a real run"], "changes": []}
            continue
        results[pvm.vm.name] = guest_stage(pvm.vm, [(d.source, d.format) for d in pvm.vm.disks], None, pvm.fixes)
    if as_json:
        print(json.dumps({"plan": plan.model_dump(mode="json"), "dry_run": results}, indent=2))
        return 0
    console = Console()
    for name, result in results.items():
        console.rule(f"{name}: {len(result['changes'])} change(s) the fixers would make")
        for note in result["notes"]:
            console.print(f"  note: {note}", markup=False)
        for change in result["changes"]:
            console.print(f"  [{change['fixer']}] {change['kind']} {change['path']}: {change['summary']}", markup=False)
            if change["diff"]:
                console.print("    " + change["diff"].rstrip().replace("\n", "\n    "), markup=False, highlight=False)
    return 0


def _exited(proc: subprocess.Popen) -> bool:
    """Whether `proc` has exited, waiting a moment: a killed redis-server closes its clients' sockets
    before its parent can reap it."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True
