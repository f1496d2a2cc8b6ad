"""A thin vSphere disk streamed from the simulator's datastore and converted, against a bare `curl`
of the same allocated bytes, in one process.

The disk: a hosted sparse VMDK of 8 GiB virtual size holding 1 GiB of random data (16 runs of 64 MiB
spread over the disk), placed in govmomi's simulator's datastore (tests/vcsim/). The h2k side runs
what the fetch and convert stages run (h2k_tasks/vsphere_stream.py, h2k_tasks/stages/convert.py): a
probe of the disk's files, then nbdkit curl, qemu-nbd and the copier into a qcow2 output, while a
thread samples the free space of the worker's file system. The bare side is `curl` fetching the
VMDK file (its grains and their tables: the allocated bytes) into a file on the same file system.
Prints bytes transferred per allocated byte, the peak extra disk used per output byte and, last,
`ratio: <h2k wall / bare curl wall>`.

    .venv/bin/python bench/vsphere_stream.py [--rounds 3] [--workdir DIR]
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import rounds_and_workdir  # noqa: E402
from h2k_planner.models import Disk, Output  # noqa: E402
from h2k_planner.secret_ref import SecretRef  # noqa: E402
from h2k_planner.sources import vsphere  # noqa: E402
from h2k_planner.sources.vsphere_endpoint import Endpoint  # noqa: E402
from h2k_tasks import vsphere_stream  # noqa: E402
from h2k_tasks.stages.convert import convert_disk  # noqa: E402
from tests import vcsim  # noqa: E402

MIB = 1 << 20
VIRTUAL_MIB, RUNS, RUN_MIB = 8192, 16, 64  # 8 GiB virtual, 1 GiB of data
DISK = "[LocalDS_0] bench-thin/thin.vmdk"


def place(sim) -> str:
    folder = sim.datastore_dir / "bench-thin"
    folder.mkdir()
    path = folder / "thin.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), f"{VIRTUAL_MIB}M"], check=True)
    for run in range(RUNS):
        at = run * (VIRTUAL_MIB // RUNS)
        subprocess.run(["qemu-io", "-f", "vmdk", "-c", f"write -s /dev/stdin {at}M {RUN_MIB}M", str(path)],
                       input=os.urandom(RUN_MIB * MIB), check=True, capture_output=True)
    return str(path)


class PeakUse:
    """The most space the file system holding `path` lost, sampled every 10 ms, while in the block."""

    def __init__(self, path: str):
        self.path, self.peak, self._stop = path, 0, threading.Event()

    def _free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def __enter__(self) -> "PeakUse":
        self._start = self._free()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._start - self._free())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._start - self._free())


def h2k_side(endpoint: dict, work: str) -> tuple[float, int, int, int]:
    """Fetch and convert as the stages do: (seconds, bytes transferred, peak extra disk, output bytes)."""
    out = os.path.join(work, "out", "thin")
    os.makedirs(out)
    dest = os.path.join(out, "thin-disk0.qcow2")
    disk = Disk(source=DISK, format="vmdk", virtual_size=VIRTUAL_MIB * MIB)
    with PeakUse(work) as use:
        start = time.perf_counter()
        fetched = vsphere_stream.probe(endpoint, DISK, [DISK], disk.virtual_size)
        with vsphere_stream.stream(endpoint, fetched, vsphere_stream.scratch_dir(out, "thin-disk0", 1)) as s:
            convert_disk(disk, s.address, Output(directory=os.path.dirname(out)), dest, 1,
                         {"files": fetched["files"]}, lambda: True, lambda n: None, lambda: True, lambda: False)
        subprocess.run(["sync", "-f", dest], check=True)
        elapsed = time.perf_counter() - start
    output = os.stat(dest).st_blocks * 512
    shutil.rmtree(os.path.join(work, "out"))
    return elapsed, s.transferred, use.peak, output


def curl_side(sim, ep: Endpoint, work: str) -> tuple[float, int]:
    """`curl` of the VMDK file, whose bytes are the disk's allocated grains and their tables."""
    ca, headers, dest = (os.path.join(work, n) for n in ("ca.pem", "headers", "curl.vmdk"))
    with open(ca, "w") as f:
        f.write(sim.ca_pem)
    with vsphere.session(ep) as s:
        fd = os.open(headers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"Cookie: {s.cookie}\n")
        url = f"https://{sim.host}:{sim.port}/folder/bench-thin/thin.vmdk?dcPath={sim.datacenter}&dsName=LocalDS_0"
        start = time.perf_counter()
        subprocess.run(["curl", "-sSf", "--cacert", ca, "-H", f"@{headers}", "-o", dest, url], check=True)
        subprocess.run(["sync", "-f", dest], check=True)
        elapsed = time.perf_counter() - start
    size = os.path.getsize(dest)
    os.unlink(dest)
    return elapsed, size


def main() -> None:
    args, work = rounds_and_workdir(__doc__.splitlines()[0])
    password = os.urandom(12).hex()
    sim = vcsim.start("h2k-bench", password, vms=1)
    try:
        source = place(sim)
        pw = os.path.join(work, "vc.pw")
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        ep = Endpoint(host=sim.host, port=sim.port, user="h2k-bench", datacenter=sim.datacenter,
                      password=SecretRef(file=pw), thumbprint=sim.thumbprint)
        allocated = os.path.getsize(source)
        rows = {"bare": [], "h2k": []}
        for n in range(args.rounds):
            rows["bare"].append(curl_side(sim, ep, work))
            t, moved, peak, output = h2k_side(ep.model_dump(), work)
            rows["h2k"].append((t, moved / allocated, peak / output))
            print(f"round {n + 1}: bare curl {rows['bare'][-1][0]:.2f}s  h2k {t:.2f}s, transferred/allocated "
                  f"{moved / allocated:.3f}, peak extra disk/output {peak / output:.3f}", flush=True)
        print(f"allocated bytes of the disk's file: {allocated} ({allocated / MIB:.0f} MiB of "
              f"{VIRTUAL_MIB} MiB virtual)")
        h2k, bare = (statistics.median(r[0] for r in rows[side]) for side in ("h2k", "bare"))
        print(f"{'bare curl of the file':34} median {bare:.2f}s")
        print(f"{'h2k fetch + convert (streamed)':34} median {h2k:.2f}s, "
              f"bytes transferred per allocated byte {statistics.median(r[1] for r in rows['h2k']):.3f}, "
              f"peak extra disk per output byte {statistics.median(r[2] for r in rows['h2k']):.3f}")
        print(f"ratio: {h2k / bare:.3f}")
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
