"""`h2k worker --host NAME`: a Celery worker named h2k@NAME consuming the queue h2k.host.NAME."""
from __future__ import annotations

import argparse
import logging

from conductor.commands.common import add_config_args, load_config
from h2k_tasks.settings import Settings


def register(sub) -> None:
    p = sub.add_parser("worker", help="run a worker for one host's queue")
    p.add_argument("--host", help="this host's name (its queue is h2k.host.NAME)")
    p.add_argument("--concurrency", type=int, help="stages run at once")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    env = Settings.from_env()  # the embedded mode and systemd units pass settings as H2K_*
    cfg = load_config(args, worker={**env.model_dump(exclude={"broker_url"}, exclude_unset=True),
                                    **({"host": args.host} if args.host else {}),
                                    **({"concurrency": args.concurrency} if args.concurrency else {})},
                      broker_url=env.broker_url or None)
    if not cfg.broker_url:
        from h2k_planner.errors import InputError

        raise InputError(None, "a worker needs a broker: --broker, broker_url in a config, or H2K_BROKER_URL")
    settings = cfg.worker_settings()
    from h2k_tasks.app import configure

    app = configure(settings)
    logging.getLogger("h2k").setLevel(logging.INFO)
    app.worker_main([
        "worker", "-Q", f"h2k.host.{settings.host}", "-n", f"h2k@{settings.host}",
        "-c", str(settings.concurrency), "-E", "--loglevel=INFO", "--without-gossip", "--without-mingle",
    ])
    return 0
