"""`h2k worker --host NAME`: a Celery worker named h2k@NAME consuming the queue h2k.host.NAME.

The command supervises the Celery worker in a child process and starts it again when it dies
(Celery's Redis transport can end a worker with an "unrecoverable error" when the broker restarts);
SIGTERM and SIGINT are passed on for a warm shutdown; the Celery worker dies with the supervisor
however the supervisor dies (parent-death signal).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from conductor.commands.common import add_config_args, load_config
from h2k_planner.errors import InputError
from h2k_tasks.app import configure
from h2k_tasks.hostinfo import start_publisher
from h2k_tasks.process import child_of_this_process
from h2k_tasks.settings import Settings, redis_url
from h2k_tasks.state import State


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
        raise InputError(None, "a worker needs a broker: --broker, broker_url in a config, or H2K_BROKER_URL")
    settings = cfg.worker_settings()
    if os.environ.get(SUPERVISED) != "1":
        return supervise(settings)
    app = configure(settings)
    logging.getLogger("h2k").setLevel(logging.INFO)
    start_publisher(State.from_url(redis_url(settings.broker_url)), settings)
    app.worker_main([
        "worker", "-Q", f"h2k.host.{settings.host}", "-n", f"h2k@{settings.host}",
        "-c", str(settings.concurrency), "-E", "--loglevel=INFO", "--without-gossip", "--without-mingle",
    ])
    return 0


SUPERVISED = "H2K_WORKER_SUPERVISED"
log = logging.getLogger("h2k.worker")


def supervise(settings: Settings) -> int:
    env = {**os.environ, **settings.to_env(), SUPERVISED: "1"}
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "conductor", "worker"], env=env,
                                 preexec_fn=child_of_this_process())
        code = child.wait()
        if stopping:
            return 0
        if time.monotonic() - started > 60:
            delay = 1.0
        log.warning("worker h2k@%s exited with %s; starting it again in %.0fs", settings.host, code, delay)
        time.sleep(delay)
        delay = min(delay * 2, 30)
