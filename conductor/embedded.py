"""Embedded mode: with no broker configured, `h2k migrate` runs a private redis-server on a unix
socket and one local worker, and stops both at the end.

Redis keeps its append-only file in `<output>/.h2k/redis`, so re-running the same command after
a crash resumes the wave from where it stopped.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import redis

from h2k_tasks.settings import Settings


class Embedded:
    def __init__(self, state_dir: str, settings: Settings, log_dir: str):
        self.state_dir = state_dir
        self.settings = settings
        self.log_dir = log_dir
        self.sock_dir = tempfile.mkdtemp(prefix="h2k-")  # unix socket paths must stay short
        self.socket = os.path.join(self.sock_dir, "redis.sock")
        self.redis: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def url_file(self) -> str:
        return os.path.join(os.path.dirname(self.state_dir), "broker.url")

    def start(self) -> "Embedded":
        self.start_redis()
        self.worker = start_worker(self.settings, os.path.join(self.log_dir, "worker.log"))
        return self

    def start_redis(self) -> "Embedded":
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        self.redis = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", self.state_dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--maxmemory-policy", "noeviction", "--logfile", os.path.join(self.log_dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )
        client = redis.Redis(unix_socket_path=self.socket)
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if self.redis.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.log_dir}/redis.log") from None
                time.sleep(0.05)
        self.settings = self.settings.model_copy(update={"broker_url": self.url})
        with open(self.url_file, "w") as f:  # for `make flower OUT=...` while the run lasts
            f.write(self.url + "\n")
        return self

    def stop(self) -> None:
        for proc in (self.worker, self.redis):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        if os.path.exists(self.url_file):
            os.unlink(self.url_file)


def start_worker(settings: Settings, log_file: str) -> subprocess.Popen:
    """A worker process for `settings.host`, in its own session so it can be killed as a group."""
    env = {**os.environ, **settings.to_env()}
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "conductor", "worker", "--host", settings.host],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
