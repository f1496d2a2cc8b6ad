"""`h2k wave submit|status|cancel|retry|resume|report`: waves stored in Redis.

`submit` plans a wave file (a config with `name`, `sources` and `output.directory`), places its
VMs on live worker hosts and stores it; the conductor (`h2k conductor`, or `--wait` here) drives
it. The broker is the configured one, or with `--output DIR` the private one that
`h2k migrate -o DIR` left its state in.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.table import Table

from conductor.commands.common import add_config_args, load_config, state_dir
from conductor.driver import Driver, VMView
from conductor.embedded import Embedded
from conductor.planning import VSPHERE, driver_for, plan_wave
from conductor.progress import vm_bytes
from conductor.report import markdown
from h2k_planner.concerns import gate
from h2k_planner.errors import InputError
from h2k_planner.models import Plan
from h2k_planner.plan import FINAL_STAGE
from h2k_tasks.app import configure
from h2k_tasks.settings import redis_url
from h2k_tasks.stages.finalize import build_report
from h2k_tasks.state import State

ACTIONS = ["submit", "status", "cancel", "retry", "resume", "report"]


def register(sub) -> None:
    p = sub.add_parser("wave", help="submit, watch, cancel, retry, resume or report a wave")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("target", metavar="ID|FILE", help="a wave id (a wave file for submit)")
    p.add_argument("vms", nargs="*", metavar="VM", help="cancel or retry only these VMs")
    p.add_argument("--output", metavar="DIR", help="use the private broker state of `h2k migrate -o DIR`")
    p.add_argument("--watch", action="store_true", help="status: refresh until the wave finishes")
    p.add_argument("--wait", action="store_true", help="submit, retry, resume: drive the wave here until it ends")
    p.add_argument("--markdown", action="store_true", help="report: a Markdown summary instead of JSON")
    add_config_args(p)
    p.set_defaults(func=run)


@contextmanager
def _broker(args: argparse.Namespace, with_worker: bool):
    cfg = load_config(args)
    settings = cfg.worker_settings()
    if cfg.broker_url:
        yield cfg, settings
        return
    if not args.output:
        raise InputError(None, "no broker: give --broker, a config with broker_url, H2K_BROKER_URL, or --output DIR")
    sdir = state_dir(os.path.abspath(args.output))
    if not os.path.isdir(sdir):
        raise InputError(args.output, "holds no hyper2kvm state (no .h2k directory)")
    embedded = Embedded(sdir + "/redis", settings, sdir + "/logs")
    try:
        if with_worker:
            embedded.start()
        else:
            embedded.start_redis()
        yield cfg, embedded.settings
    except BaseException:
        embedded.stop(graceful=False)
        raise
    embedded.stop()


def _load(state: State, wave: str) -> Plan:
    raw = state.wave(wave).get("plan")
    if not raw:
        raise InputError(None, f"wave {wave} is not known to this broker")
    return Plan.model_validate_json(raw)


def run(args: argparse.Namespace) -> int:
    if args.action == "submit":
        return _submit(args)
    drives = args.action in ("resume", "retry") and (args.wait or not load_config(args).broker_url)
    with _broker(args, with_worker=drives) as (cfg, settings):
        state = State.from_url(redis_url(settings.broker_url))
        driver = driver_for(cfg, state, _load(state, args.target))
        unknown = sorted(set(args.vms) - {p.vm.name for p in driver.plan.vms})
        if unknown:
            raise InputError(None, f"wave {args.target} has no VM {unknown[0]!r}")
        if args.action == "status":
            return _status(driver, args.watch)
        if args.action == "report":
            return _report(driver, args.markdown)
        if args.action == "cancel":
            print("cancelled:", ", ".join(driver.cancel(args.vms or None)))
            return 0
        if args.action == "retry":
            chosen = driver.retry(args.vms or None)
            print("retrying:", ", ".join(chosen) if chosen else "nothing (no failed or cancelled VM)")
        else:
            driver.submit()
        if not drives:
            return 0
        configure(settings)
        views = driver.wait()
        return 0 if all(v.status == "succeeded" for v in views) else 1


def _submit(args: argparse.Namespace) -> int:
    cfg = load_config(argparse.Namespace(config=args.config + [args.target], broker=args.broker))
    if not cfg.broker_url:
        raise InputError(args.target, "a wave needs a broker: broker_url, --broker or H2K_BROKER_URL")
    if not cfg.output.directory:
        raise InputError(args.target, "output.directory is required in a wave file")
    state = State.from_url(redis_url(cfg.broker_url))
    base = os.path.dirname(os.path.abspath(args.target))
    sources = [s if os.path.isabs(s) or s.startswith(VSPHERE) else os.path.join(base, s) for s in cfg.sources]
    started = time.perf_counter()
    plan = plan_wave(cfg, sources, cfg.output.directory, state)
    gate([p.vm for p in plan.vms], cfg.allowed_concerns())
    driver = driver_for(cfg, state, plan)
    configure(cfg.worker_settings())
    driver.submit()
    print(json.dumps({"wave": plan.wave, "name": plan.name, "vms": len(plan.vms),
                      "plan_seconds": round(time.perf_counter() - started, 3),
                      "hosts": sorted({p.host for p in plan.vms})}))
    if not args.wait:
        return 0
    views = driver.wait()
    return 0 if all(v.status == "succeeded" for v in views) else 1


def status_table(driver: Driver, views: list[VMView]) -> Table:
    table = Table("VM", "host", "status", "progress", "ETA", title=f"wave {driver.wave} {driver.plan.name}".strip())
    for v in views:
        moved = vm_bytes(v)
        pct = f"{100 * moved.done / moved.total:.0f}%" if moved.total else "-"
        eta = moved.eta
        table.add_row(v.pvm.vm.name, v.pvm.host, v.status, pct, f"{eta:.0f}s" if eta is not None else "-")
    return table


def _status(driver: Driver, watch: bool) -> int:
    console = Console()
    if not watch:
        console.print(status_table(driver, driver.views()))
        return 0
    with Live(status_table(driver, driver.views()), console=console, refresh_per_second=2) as live:
        while True:
            views = driver.views()
            live.update(status_table(driver, views))
            if all(v.finished for v in views):
                return 0
            time.sleep(1)


def _report(driver: Driver, as_markdown: bool) -> int:
    reports = [build_report(driver.plan, v.pvm, {k: r for k, r in v.records.items() if k[1] != FINAL_STAGE})
               for v in driver.views()]
    if as_markdown:
        print(markdown(driver.plan, reports))
    else:
        print(json.dumps({"wave": driver.wave, "name": driver.plan.name, "vms": reports}, indent=2))
    return 0
