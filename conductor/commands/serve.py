"""`h2k conductor`: the long-running control plane. Drives every running wave stored in Redis
(sending due lanes, re-sending lanes whose lease expired) and serves Prometheus metrics. Its state
is all in Redis: kill it and start it again, and the waves go on where they were."""
from __future__ import annotations

import argparse
import logging
import time

import kombu.exceptions
import redis

from conductor.commands.common import add_config_args, load_config
from conductor.driver import Driver
from conductor.metrics import Metrics
from conductor.planning import driver_for
from conductor.tokens import free_stale
from h2k_planner.errors import InputError
from h2k_planner.models import Plan
from h2k_tasks.app import configure
from h2k_tasks.settings import redis_url
from h2k_tasks.state import State

log = logging.getLogger("h2k.conductor")


def register(sub) -> None:
    p = sub.add_parser("conductor", help="drive every running wave; serve metrics")
    p.add_argument("--metrics-port", type=int, default=0, metavar="PORT", help="serve /metrics on 127.0.0.1:PORT")
    p.add_argument("--once", action="store_true", help="one pass over the waves, then exit")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if not cfg.broker_url:
        raise InputError(None, "the conductor needs a broker: --broker, broker_url in a config, or H2K_BROKER_URL")
    configure(cfg.worker_settings())
    state = State.from_url(redis_url(cfg.broker_url))
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    logging.getLogger("h2k").setLevel(logging.INFO)
    drivers: dict[str, Driver] = {}
    cursors: dict[str, str] = {}  # each driven wave's state log, read before its pass
    arrived: dict[str, list[dict]] = {}
    while True:
        try:
            reconcile = not drivers  # the tokens, after a full pass or a wave's end, or when idle
            for wave in state.waves():
                if state.wave_status(wave) != "running":
                    drivers.pop(wave, None)
                    cursors.pop(wave, None)
                    continue
                if wave not in drivers:
                    cursors[wave] = state.log_cursor(wave)
                    drivers[wave] = driver_for(cfg, state, Plan.model_validate_json(state.wave(wave)["plan"]))
                    log.info("driving wave %s", wave)
                driver = drivers[wave]
                views = driver.step(arrived.get(wave, []))  # its first pass reads everything
                metrics.observe(wave, views)
                if driver.close_if_done(views):
                    log.info("wave %s finished", wave)
                    reconcile = True
                reconcile = reconcile or driver.last_full
            if reconcile:
                for holder in free_stale(state):
                    log.info("freed the tokens of %s: its lane is not in flight", holder)
            if args.once:
                return 0
            cursors, arrived = state.wait_for_log(cursors, cfg.conductor.poll_interval)
        except (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError) as e:
            log.warning("redis unavailable (%s); retrying", e)
            drivers.clear()  # read everything again: what was cached may not be what Redis holds now
            time.sleep(1)
