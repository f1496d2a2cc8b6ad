"""`h2k schema [NAME]`: JSON Schema of the models and of the config file."""
from __future__ import annotations

import argparse
import json

from conductor.config import Config
from h2k_planner import models

MODELS = {"vm": models.VM, "disk": models.Disk, "nic": models.Nic, "concern": models.Concern,
          "plan": models.Plan, "wave": models.Wave, "config": Config}


def register(sub) -> None:
    p = sub.add_parser("schema", help="print JSON Schema of the models")
    p.add_argument("name", nargs="?", choices=sorted(MODELS), help="one model (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else sorted(MODELS)
    schemas = {n: MODELS[n].model_json_schema() for n in names}
    print(json.dumps(schemas[args.name] if args.name else schemas, indent=2))
    return 0
