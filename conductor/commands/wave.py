"""`h2k wave status|resume|report ID`: look at, continue, or report on a wave stored in Redis.

The broker is the configured one, or with `--output DIR` the private one a `h2k migrate -o DIR`
left its state in.
"""
from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from conductor.commands.common import add_config_args, load_config, state_dir
from conductor.driver import Driver
from conductor.embedded import Embedded
from h2k_planner.errors import InputError
from h2k_planner.models import Plan
from h2k_tasks.app import configure
from h2k_tasks.settings import redis_url
from h2k_tasks.stages.finalize import build_report
from h2k_tasks.state import State


def register(sub) -> None:
    p = sub.add_parser("wave", help="status, resume or report of a wave")
    p.add_argument("action", choices=["status", "resume", "report"])
    p.add_argument("wave", metavar="ID")
    p.add_argument("--output", metavar="DIR", help="use the private broker state of `h2k migrate -o DIR`")
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
    if with_worker:
        embedded.start()
    else:
        embedded.start_redis()
    try:
        yield cfg, embedded.settings
    finally:
        embedded.stop()


def _driver(args, cfg, settings) -> Driver:
    state = State.from_url(redis_url(settings.broker_url))
    raw = state.wave(args.wave).get("plan")
    if not raw:
        raise InputError(None, f"wave {args.wave} is not known to this broker")
    return Driver(state, Plan.model_validate_json(raw), cfg.conductor.poll_interval)


def run(args: argparse.Namespace) -> int:
    with _broker(args, with_worker=args.action == "resume") as (cfg, settings):
        driver = _driver(args, cfg, settings)
        if args.action == "resume":
            configure(settings)
            driver.submit()
            views = driver.wait()
            return 0 if all(v.status == "succeeded" for v in views) else 1
        driver.run = int(driver.state.wave(args.wave).get("run") or 0)
        views = driver.views()
        if args.action == "report":
            reports = [build_report(driver.plan, v.pvm, {k: r for k, r in v.records.items() if k != ("vm", "finalize")})
                       for v in views]
            print(json.dumps({"wave": args.wave, "vms": reports}, indent=2))
            return 0
        table = Table("VM", "host", "status", "stages done", title=f"wave {args.wave} (run {driver.run})")
        for v in views:
            done = sum(1 for k in v.records if v.done(k))
            table.add_row(v.pvm.vm.name, v.pvm.host, v.status, f"{done}/{len(v.records)}")
        Console().print(table)
        return 0
