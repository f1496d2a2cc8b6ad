"""`h2k`: the command line. Each sub-command is a module in conductor/commands/.

Exit codes: 0 success, 1 a VM failed or the embedded broker or worker died, 2 bad usage or bad input (one line naming the file and
the problem on stderr).
"""
from __future__ import annotations

import argparse
import logging
import sys

from conductor.commands import inventory, migrate, plan, schema, serve, wave, worker
from conductor.embedded import EmbeddedFailed
from h2k_planner.errors import InputError

COMMANDS = [migrate, plan, inventory, worker, serve, wave, schema]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too; keep its one-line form
        self.print_usage(sys.stderr)
        print(f"h2k: error: {message}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="h2k", description="Migrate VMs from VMware, Hyper-V and disk images to KVM.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for cmd in COMMANDS:
        cmd.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except InputError as e:
        print(f"h2k: error: {e}", file=sys.stderr)
        return 2
    except EmbeddedFailed as e:
        print(f"h2k: error: {e}; run the same command again to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("h2k: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
