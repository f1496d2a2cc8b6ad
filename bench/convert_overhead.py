"""Overhead of the pipeline's convert stage against bare `qemu-img convert`, in one process.

Builds a sparse 8 GiB VMDK holding 1 GiB of data in scattered 16 MiB runs, then alternates:
bare `qemu-img convert -f vmdk -O qcow2` (the baseline) and `h2k migrate` of a VM with that disk
(embedded broker, one local worker), taking the convert stage's time from the report. Prints the
medians and, last, `ratio: <h2k convert / bare convert>`.

    .venv/bin/python bench/convert_overhead.py [--rounds 3] [--workdir DIR]
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import rounds_and_workdir  # noqa: E402
from tests.builders.vmware import write_vmx  # noqa: E402

MIB = 1 << 20


def build_source(directory: str) -> str:
    raw = os.path.join(directory, "bench.raw")
    block = os.urandom(MIB)
    with open(raw, "wb") as f:
        f.truncate(8192 * MIB)
        for run in range(64):  # 64 runs of 16 MiB spread over the 8 GiB
            f.seek(run * 128 * MIB)
            for n in range(16):
                f.write(run.to_bytes(4, "little") + n.to_bytes(4, "little") + block[8:])
    vmdk = os.path.join(directory, "bench.vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", raw, vmdk], check=True)
    os.unlink(raw)
    write_vmx(os.path.join(directory, "bench.vmx"), "bench", [("scsi", 0, 0, "bench.vmdk")], "00:50:56:00:00:99")
    return os.path.join(directory, "bench.vmx")


def bare(vmdk: str, out: str) -> float:
    start = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", vmdk, out], check=True)
    elapsed = time.perf_counter() - start
    os.unlink(out)
    return elapsed


def pipeline(vmx: str, out_dir: str) -> float:
    config = os.path.join(os.path.dirname(vmx), "data-only.yaml")  # the disk holds data, no OS
    with open(config, "w") as f:
        json.dump({"vms": {"bench": {"guest": False}}}, f)
    subprocess.run([sys.executable, "-m", "conductor", "migrate", vmx, "-o", out_dir, "--json", "--config", config],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ROOT})
    report = json.load(open(os.path.join(out_dir, "bench", "report.json")))
    stage = next(s for s in report["stages"] if s["stage"] == "convert")
    shutil.rmtree(out_dir)
    return stage["seconds"]


def main() -> None:
    args, work = rounds_and_workdir(__doc__.splitlines()[0])
    try:
        vmx = build_source(work)
        vmdk = os.path.join(work, "bench.vmdk")
        bare(vmdk, os.path.join(work, "warm.qcow2"))  # page cache warm for both sides
        base, ours = [], []
        for n in range(args.rounds):
            base.append(bare(vmdk, os.path.join(work, f"bare{n}.qcow2")))
            ours.append(pipeline(vmx, os.path.join(work, f"out{n}")))
            print(f"round {n + 1}: bare {base[-1]:.2f}s  h2k convert stage {ours[-1]:.2f}s", flush=True)
        print(f"bare qemu-img convert median: {statistics.median(base):.2f}s")
        print(f"h2k convert stage median:    {statistics.median(ours):.2f}s")
        print(f"ratio: {statistics.median(ours) / statistics.median(base):.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
