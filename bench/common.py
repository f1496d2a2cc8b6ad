"""What the benchmarks share: their `--rounds` and `--workdir` options and the scratch directory they
work in (under `--workdir`, else the system's temp directory; each benchmark removes it)."""
from __future__ import annotations

import argparse
import tempfile


def rounds_and_workdir(description: str, rounds: int = 3) -> tuple[argparse.Namespace, str]:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--workdir", default=None, help="where the benchmark's scratch directory is made")
    args = ap.parse_args()
    return args, tempfile.mkdtemp(prefix="h2k-bench-", dir=args.workdir)
