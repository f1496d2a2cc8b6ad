"""Embedded mode owns its output directory: `h2k migrate` killed mid-convert (SIGKILL, SIGTERM,
SIGHUP) leaves no process it started, and the same command again resumes to outputs identical to
an uninterrupted run; a second `h2k migrate -o OUT` while one runs exits 2; a killed worker is
started again, a killed redis-server fails the run clearly. Off a terminal the run prints a line
per stage, and a failed VM's error is printed under the summary."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from tests.builders.disks import patterned_raw
from tests.builders.vmware import build_demo_vm
from tests.support import ROOT, content_sha256, h2k, sha256, wait_for

pytestmark = pytest.mark.slow

MIB = 2**20
MARK = "H2K_TEST_RUN"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """A 256 MiB qcow2 (128 MiB data), a config that reads it at 16 MiB/s with short leases and no
    guest stage, and the output of one uninterrupted run."""
    d = tmp_path_factory.mktemp("embedded")
    raw = str(d / "big.raw")
    patterned_raw(raw, 256, 128)
    qcow2 = str(d / "src" / "big.qcow2")
    os.makedirs(os.path.dirname(qcow2))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True, timeout=120)
    os.unlink(raw)
    cfg = d / "h2k.yaml"
    cfg.write_text(f"worker:\n  convert_rate_limit: {16 * MIB}\n  lease_ttl: 4\n  retry_backoff: 1\n"
                   "vms:\n  big:\n    guest: false\n")
    out = str(d / "reference")
    res = h2k("migrate", qcow2, "-o", out, *_options(str(cfg)))
    assert res.returncode == 0, res.stderr
    return {"qcow2": qcow2, "config": str(cfg), "reference": sha256(os.path.join(out, "big", "big-disk0.raw"))}


def _options(config: str) -> list[str]:
    return ["--format", "raw", "--no-boot-test", "--config", config]


class Run:
    """A real `h2k migrate` whose every descendant carries a marker in its environment."""

    def __init__(self, source: dict, out: str):
        self.mark = uuid.uuid4().hex
        self.out = out
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conductor", "migrate", source["qcow2"], "-o", out, *_options(source["config"])],
            env={**os.environ, "PYTHONPATH": ROOT, MARK: self.mark}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def printed(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def descendants(self) -> dict[int, str]:
        """Every live process started by this run (pid -> command line), the run itself excluded:
        those with the marker, and those working in the output directory (redis-server's process
        title overwrites its environment)."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.proc.pid:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    marked = f"{MARK}={self.mark}".encode() in f.read().split(b"\0")
                if not marked and not os.readlink(f"/proc/{entry}/cwd").startswith(self.out + "/"):
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
        return {pid: cmd for pid, cmd in found.items() if cmd}  # zombies have no command line

    def mid_convert(self) -> dict[int, str]:
        """Wait until the convert is under way (its NBD servers running); the run's processes then."""
        wait_for(lambda: self.printed("big d0/convert started"), 120, "the convert to start")
        return wait_for(lambda: (procs := self.descendants()) and any("qemu-nbd" in c for c in procs.values())
                        and procs, 60, "the convert's qemu-nbd to run")

    def kill(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=60)

    def all_gone(self, within: float = 30) -> None:
        wait_for(lambda: not self.descendants(), within, "every process of the killed run to exit")

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGKILL)
        self.all_gone()
        if os.path.exists(os.path.join(self.out, ".h2k", "broker.url")):  # left by the kill, for a next run
            shutil.rmtree(_socket_dir(self.out), ignore_errors=True)


@pytest.fixture
def runs():
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def _socket_dir(out: str) -> str:
    with open(os.path.join(out, ".h2k", "broker.url")) as f:
        return os.path.dirname(f.read().strip().removeprefix("unix://"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_killed_mid_convert_leaves_nothing_running_and_resumes(source, runs, tmp_path, sig):
    out = str(tmp_path / "out")
    run = Run(source, out)
    runs.append(run)
    procs = run.mid_convert()
    assert any(c.startswith("redis-server") for c in procs.values()), procs
    assert any("conductor worker" in c for c in procs.values()), procs
    sock_dir = _socket_dir(out)
    run.kill(sig)
    run.all_gone(30)

    again = h2k("migrate", source["qcow2"], "-o", out, *_options(source["config"]))
    assert again.returncode == 0, again.stdout + again.stderr
    assert sha256(os.path.join(out, "big", "big-disk0.raw")) == source["reference"]
    assert not glob.glob(os.path.join(out, "big", ".*tmp-*"))
    assert not os.path.exists(sock_dir)  # the killed run's socket directory, removed by the next run
    assert not os.path.exists(os.path.join(out, ".h2k", "broker.url"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_killed_mid_guest_leaves_no_appliance_and_resumes(tmp_path, sig):
    """Killed while the guest stage's libguestfs appliance runs: the appliance dies with the run too,
    and the same command again finishes the VM with its fixes committed once."""
    vmx = build_demo_vm(str(tmp_path / "src"))
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text("worker:\n  lease_ttl: 4\n  retry_backoff: 1\n")
    out = str(tmp_path / "out")
    run = Run({"qcow2": vmx, "config": str(cfg)}, out)
    try:
        wait_for(lambda: any("qemu-system" in c and "/.guest-g" in c for c in run.descendants().values()), 600,
                 "the guest stage's appliance to run")
        run.kill(sig)
        run.all_gone(30)
    finally:
        run.stop()
    again = h2k("migrate", vmx, "-o", out, *_options(str(cfg)), "--json", timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    report = json.load(open(os.path.join(out, "demo-debian12", "report.json")))
    assert report["status"] == "succeeded" and report["changes"]
    disk = os.path.join(out, "demo-debian12", "demo-debian12-disk0.raw")
    assert report["outputs"][0]["content_sha256"] == content_sha256(disk, "raw")  # as validated after the fixes
    assert not glob.glob(os.path.join(out, "demo-debian12", ".guest-*"))


def test_second_migrate_into_the_same_directory_exits_2(source, runs, tmp_path):
    out = str(tmp_path / "out")
    run = Run(source, out)
    runs.append(run)
    run.mid_convert()
    second = h2k("migrate", source["qcow2"], "-o", out, *_options(source["config"]), timeout=120)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"h2k: error: {out}: ") and f"pid {run.proc.pid}" in lines[0], lines
    assert run.proc.poll() is None and run.descendants()  # the first run goes on
    code, err = run.finish()
    assert code == 0, err


def test_killed_worker_is_started_again_and_the_run_completes(source, runs, tmp_path):
    out = str(tmp_path / "out")
    run = Run(source, out)
    runs.append(run)
    procs = run.mid_convert()
    supervisor = [pid for pid, cmd in procs.items() if "conductor worker --host" in cmd]
    assert len(supervisor) == 1, procs
    os.kill(supervisor[0], signal.SIGKILL)
    code, err = run.finish()
    assert code == 0, err
    assert "the worker exited with code -9; starting it again" in err
    assert sha256(os.path.join(out, "big", "big-disk0.raw")) == source["reference"]
    assert not set(procs) & set(run.descendants())  # the first worker's tree is gone


def test_killed_redis_fails_the_run_with_one_line(source, runs, tmp_path):
    out = str(tmp_path / "out")
    run = Run(source, out)
    runs.append(run)
    procs = run.mid_convert()
    [redis_pid] = [pid for pid, cmd in procs.items() if cmd.startswith("redis-server")]
    os.kill(redis_pid, signal.SIGKILL)
    code, err = run.finish(timeout=120)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("h2k: error: the private redis-server exited with code -9; see "), err
    run.all_gone(30)


def test_plain_progress_lines_off_a_terminal(source, tmp_path):
    res = h2k("migrate", source["qcow2"], "-o", str(tmp_path / "out"), *_options(source["config"]))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for stage in ("d0/fetch", "d0/convert", "d0/verify", "vm/validate", "vm/finalize"):
        assert f"big {stage} started" in lines, res.stdout
    [convert] = [ln for ln in lines if ln.startswith("big d0/convert succeeded")]
    assert convert.startswith("big d0/convert succeeded 256.0 MiB in ") and convert.endswith(" MiB/s)"), convert
    assert lines.index("big d0/convert started") < lines.index(convert) < lines.index("big d0/verify started")


def test_failed_vm_error_is_printed_under_the_summary(tmp_path):
    """A compressed qcow2 whose compressed data is damaged: its metadata checks clean, so it is
    planned, and its convert fails; the reason is printed under the summary table."""
    raw = str(tmp_path / "text.raw")
    with open(raw, "wb") as f:
        f.truncate(16 * MIB)
        f.write((b"hyper2kvm compressible line\n" * 40000)[:MIB] * 4)
    src = str(tmp_path / "src" / "damaged.qcow2")
    os.makedirs(os.path.dirname(src))
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, src], check=True, timeout=60)
    with open(src, "r+b") as f:
        f.seek(os.path.getsize(src) - 8192)
        f.write(os.urandom(4096))
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text("worker:\n  lease_ttl: 4\n  retry_backoff: 1\n  max_retries: 0\nvms:\n  damaged:\n    guest: false\n")
    res = h2k("migrate", src, "-o", str(tmp_path / "out"), "--no-boot-test", "--config", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    table_end = max(i for i, ln in enumerate(lines) if ln.startswith("└"))
    below = lines[table_end + 1:]
    assert len(below) == 1, res.stdout
    assert below[0].startswith(f"damaged: d0/convert: {src}: cannot read the source at offset "), below
    assert below[0].endswith("Input/output error"), below
