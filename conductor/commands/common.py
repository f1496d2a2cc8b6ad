"""Options and set-up shared by the sub-commands."""
from __future__ import annotations

import argparse
import os

from conductor import config as configuration
from h2k_planner.errors import InputError


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML config; repeatable, deep-merged, later files win")
    p.add_argument("--broker", metavar="URL",
                   help="redis://HOST:PORT/DB or unix:///PATH (default: config, H2K_BROKER_URL, "
                        "or a private redis-server for this run)")


def add_planning_args(p: argparse.ArgumentParser) -> None:
    """Options that change what the planner reads and concludes (`h2k plan` and `h2k migrate`)."""
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--virtio-win", metavar="PATH", help="virtio-win ISO or directory, for Windows guests")
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="let descriptors and backing files point into DIR too (repeatable)")
    p.add_argument("--inspect", action="store_true",
                   help="look into each guest now (read-only, one libguestfs launch per VM) for its concerns")
    add_config_args(p)


def _given(values: dict) -> dict:
    """Only the options the user gave: None means not given, at any depth."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _given(value)
        if value is not None and value != {}:
            out[key] = value
    return out


def load_config(args: argparse.Namespace, **overrides) -> configuration.Config:
    over = _given(overrides)
    if args.broker:
        over["broker_url"] = args.broker
    return configuration.load(args.config, over)


def state_dir(output: str) -> str:
    """Where embedded mode keeps Redis's data for a migration into `output`."""
    return os.path.join(output, ".h2k")


def require_output_dir(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(path, "output exists and is not a directory")
    return path
