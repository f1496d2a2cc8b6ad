"""The whole pipeline against bare `qemu-img convert`, from a cold page cache, in one process.

A VM whose 16 GiB sparse VMDK holds 4 GiB of random data (in 64 runs of 64 MiB) is migrated with
`h2k migrate --no-boot-test` (a data-only VM: no guest stage; embedded broker, one local worker),
and the same disk is converted by bare `qemu-img convert -f vmdk -O qcow2`. Before each side the
page cache is dropped (`echo 3 > /proc/sys/vm/drop_caches`, as root), so every read comes from the
disk. For each side the block device's counters (/proc/diskstats) give the bytes read per source
data byte and the bytes written per output byte. Prints the medians and, last,
`ratio: <h2k wall / bare convert wall>`.

    .venv/bin/python bench/pipeline_overhead.py [--rounds 3] [--workdir DIR]
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
SIZE_MIB, RUNS, RUN_MIB = 16384, 64, 64  # 16 GiB virtual, 4 GiB of data
SECTOR = 512


def build_source(directory: str) -> str:
    raw = os.path.join(directory, "bench.raw")
    with open(raw, "wb") as f:
        f.truncate(SIZE_MIB * MIB)
        for run in range(RUNS):
            f.seek(run * (SIZE_MIB // RUNS) * MIB)
            f.write(os.urandom(RUN_MIB * MIB))
    vmdk = os.path.join(directory, "bench.vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", raw, vmdk], check=True)
    os.unlink(raw)
    write_vmx(os.path.join(directory, "bench.vmx"), "bench", [("scsi", 0, 0, "bench.vmdk")], "00:50:56:00:00:98")
    with open(os.path.join(directory, "data-only.yaml"), "w") as f:
        json.dump({"vms": {"bench": {"guest": False}}}, f)
    return os.path.join(directory, "bench.vmx")


def _device(path: str) -> str:
    """The /proc/diskstats name of the whole disk holding `path`."""
    dev = os.stat(path).st_dev
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
    parent = os.path.realpath(f"/sys/class/block/{name}/..")
    return os.path.basename(parent) if os.path.exists(os.path.join(parent, "dev")) else name


def _io(device: str) -> tuple[int, int]:
    """Bytes read and written so far on `device`."""
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == device:
                return int(fields[5]) * SECTOR, int(fields[9]) * SECTOR
    raise SystemExit(f"{device}: not in /proc/diskstats")


def cold() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def measured(device: str, run) -> tuple[float, int, int]:
    cold()
    r0, w0 = _io(device)
    start = time.perf_counter()
    run()
    subprocess.run(["sync"], check=True)  # both sides' writes reach the disk inside the timing
    elapsed = time.perf_counter() - start
    r1, w1 = _io(device)
    return elapsed, r1 - r0, w1 - w0


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * SECTOR


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/pipeline_overhead.py drops the page cache: run it as root")
    args, work = rounds_and_workdir(__doc__.splitlines()[0])
    device = _device(work)
    data = RUNS * RUN_MIB * MIB
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        vmx = build_source(work)
        vmdk = os.path.join(work, "bench.vmdk")
        rows = {"bare": [], "h2k": []}
        for n in range(args.rounds):
            bare_out = os.path.join(work, "bare.qcow2")
            t, r, w = measured(device, lambda: subprocess.run(
                ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", vmdk, bare_out], check=True))
            rows["bare"].append((t, r / data, w / allocated(bare_out)))
            os.unlink(bare_out)
            out_dir = os.path.join(work, "out")
            t, r, w = measured(device, lambda: subprocess.run(
                [sys.executable, "-m", "conductor", "migrate", vmx, "-o", out_dir, "--json", "--no-boot-test",
                 "--config", os.path.join(work, "data-only.yaml")], check=True, stdout=subprocess.DEVNULL, env=env))
            rows["h2k"].append((t, r / data, w / allocated(os.path.join(out_dir, "bench", "bench-disk0.qcow2"))))
            shutil.rmtree(out_dir)
            print(f"round {n + 1}: " + "  ".join(f"{k} {v[-1][0]:.2f}s read/src {v[-1][1]:.2f} written/out "
                                                 f"{v[-1][2]:.2f}" for k, v in rows.items()), flush=True)
        for side, label in (("bare", "bare qemu-img convert"), ("h2k", "h2k migrate --no-boot-test")):
            t, r, w = (statistics.median(x[i] for x in rows[side]) for i in range(3))
            print(f"{label:28} median {t:.2f}s, bytes read per source byte {r:.2f}, "
                  f"bytes written per output byte {w:.2f}")
        print(f"ratio: {statistics.median(x[0] for x in rows['h2k']) / statistics.median(x[0] for x in rows['bare']):.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
