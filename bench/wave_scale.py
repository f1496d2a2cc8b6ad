"""A wave of 1,000 small VMs through 4 workers on 4 host queues, on this machine.

Starts a redis-server (AOF), 4 `h2k worker` processes (hosts h1..h4) and `h2k conductor`, submits
one wave of N one-disk VMs (bare raw disks, guest stage off: this measures the control plane), and
prints: plan time, makespan, tasks per second, conductor CPU per VM, Redis memory per VM, and the
makespan against the ideal (the sum of all stage times / worker slots), last as `ratio: <number>`.

    .venv/bin/python bench/wave_scale.py [--vms 1000] [--workers 4] [--concurrency 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import redis
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="h2k-scale-", dir="/tmp")
    procs: list[subprocess.Popen] = []
    try:
        sock = os.path.join(work, "redis.sock")
        procs.append(subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--dir", work,
                                       "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL,
                                      start_new_session=True))
        r = redis.Redis(unix_socket_path=sock, decode_responses=True)
        while True:
            try:
                r.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.05)
        url = f"unix://{sock}"
        src = os.path.join(work, "src")
        os.makedirs(src)
        for n in range(args.vms):
            with open(os.path.join(src, f"vm{n:03d}.raw"), "wb") as f:
                f.truncate(8 << 20)
                f.write(os.urandom(64 << 10))
        mem_before = int(r.info("memory")["used_memory"])
        logs = open(os.path.join(work, "processes.log"), "ab")
        for h in range(1, args.workers + 1):
            env = {**ENV, "H2K_BROKER_URL": url, "H2K_HOST": f"h{h}", "H2K_CONCURRENCY": str(args.concurrency),
                   "H2K_DATA_DIR": work}
            procs.append(subprocess.Popen([sys.executable, "-m", "conductor", "worker"], env=env, stdout=logs,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        while len(r.keys("h2k:host:*")) < args.workers:
            time.sleep(0.2)
        conductor = subprocess.Popen([sys.executable, "-m", "conductor", "conductor", "--broker", url], env=ENV,
                                     stdout=logs, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(conductor)
        spec = {"name": "scale", "sources": [src], "output": {"directory": os.path.join(work, "out"), "format": "raw"},
                "vms": {f"vm{n:03d}": {"guest": False} for n in range(args.vms)}}
        wave_file = os.path.join(work, "wave.yaml")
        with open(wave_file, "w") as f:
            yaml.safe_dump(spec, f)
        started = time.time()
        out = subprocess.run([sys.executable, "-m", "conductor", "wave", "submit", wave_file, "--broker", url],
                             env=ENV, capture_output=True, text=True, check=True)
        submitted = json.loads(out.stdout)
        wave = submitted["wave"]
        cpu0 = cpu_seconds(conductor.pid)
        while r.hget(f"h2k:wave:{wave}", "status") != "finished":
            time.sleep(0.5)
        makespan = time.time() - started
        cpu = cpu_seconds(conductor.pid) - cpu0
        stage_secs, tasks = 0.0, 0
        for key in r.scan_iter(f"h2k:st:{wave}:*"):
            rec = r.hgetall(key)
            if rec.get("started") and rec.get("ended"):
                stage_secs += float(rec["ended"]) - float(rec["started"])
                tasks += 1
        statuses = [json.loads(r.hget(f"h2k:st:{wave}:vm{n:03d}:vm:finalize", "result") or "{}").get("status")
                    for n in range(args.vms)]
        mem_per_vm = (int(r.info("memory")["used_memory"]) - mem_before) / args.vms
        ideal = stage_secs / (args.workers * args.concurrency)
        print(f"VMs: {args.vms} ({statuses.count('succeeded')} succeeded) on {args.workers} hosts "
              f"x {args.concurrency} slots; hosts used: {', '.join(submitted['hosts'])}")
        print(f"plan + submit: {submitted['plan_seconds']:.2f}s")
        print(f"makespan: {makespan:.1f}s for {tasks} stage runs: {tasks / makespan:.1f} tasks/s")
        print(f"conductor CPU: {cpu:.1f}s, {1000 * cpu / args.vms:.1f} ms per VM")
        print(f"redis memory: {mem_per_vm / 1024:.1f} KiB per VM")
        print(f"ideal makespan (stage time / slots): {ideal:.1f}s")
        print(f"ratio: {makespan / ideal:.2f}")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
