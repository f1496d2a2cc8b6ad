"""Embedded mode: with no broker configured, `h2k migrate` runs a private redis-server on a unix
socket and one local worker, and stops both at the end.

Redis keeps its append-only file in `<output>/.h2k/redis`, so re-running the same command after
a crash resumes the wave from where it stopped. The run owns `<output>/.h2k` (an exclusive lock,
conductor/dir_lock.py), and everything it starts dies with it, however it dies: see docs/fleet.md.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import redis

from conductor import dir_lock
from h2k_tasks.process import child_of_this_process
from h2k_tasks.settings import Settings

MAX_WORKER_RESTARTS = 3
log = logging.getLogger("h2k.embedded")


class EmbeddedFailed(Exception):
    """A child of the embedded mode died and was not replaced; the message says which and where its log is."""


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Embedded:
    def __init__(self, state_dir: str, settings: Settings, log_dir: str):
        self.state_dir = state_dir
        self.settings = settings
        self.log_dir = log_dir
        self.sock_dir = ""
        self.lock: int | None = None
        self.redis: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_restarts = 0

    @property
    def socket(self) -> str:
        return os.path.join(self.sock_dir, "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def h2k_dir(self) -> str:
        return os.path.dirname(self.state_dir)

    @property
    def url_file(self) -> str:
        return os.path.join(self.h2k_dir, "broker.url")

    @property
    def worker_log(self) -> str:
        return os.path.join(self.log_dir, "worker.log")

    def start(self) -> "Embedded":
        self.start_redis()
        self.worker = start_worker(self.settings, self.worker_log)
        return self

    def start_redis(self) -> "Embedded":
        """Lock the state directory, remove what a killed run left, start redis-server. From here
        on SIGTERM and SIGHUP raise KeyboardInterrupt, so the caller's clean-up runs."""
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.lock = dir_lock.hold(self.h2k_dir, os.path.dirname(self.h2k_dir))
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupted)
        self._remove_leftovers()
        os.makedirs(self.state_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        self.sock_dir = tempfile.mkdtemp(prefix="h2k-")  # unix socket paths must stay short
        self.redis = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", self.state_dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--maxmemory-policy", "noeviction", "--logfile", os.path.join(self.log_dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=child_of_this_process(),
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

    def _remove_leftovers(self) -> None:
        """A killed run's socket directory (named in its broker.url) and that file; its processes
        died with it, and its temp outputs are removed by the stages' next claims."""
        try:
            with open(self.url_file) as f:
                url = f.read().strip()
        except FileNotFoundError:
            return
        sock_dir = os.path.dirname(url.removeprefix("unix://"))
        if os.path.dirname(sock_dir) == tempfile.gettempdir() and os.path.basename(sock_dir).startswith("h2k-"):
            shutil.rmtree(sock_dir, ignore_errors=True)
        os.unlink(self.url_file)

    def check(self) -> None:
        """Called while a wave runs: start the worker again if it exited (a few times), fail if
        redis-server exited or the worker keeps dying."""
        if self.redis and self.redis.poll() is not None:
            raise EmbeddedFailed(f"the private redis-server exited with code {self.redis.returncode}; "
                                 f"see {self.log_dir}/redis.log")
        if self.worker and self.worker.poll() is not None:
            if self.worker_restarts >= MAX_WORKER_RESTARTS:
                raise EmbeddedFailed(f"the worker exited {self.worker_restarts + 1} times (last code "
                                     f"{self.worker.returncode}); see {self.worker_log}")
            self.worker_restarts += 1
            log.warning("the worker exited with code %s; starting it again", self.worker.returncode)
            self.worker = start_worker(self.settings, self.worker_log)

    def stop(self, graceful: bool = True) -> None:
        """Stop the worker (warm shutdown when `graceful`, else killed at once with its stages,
        as a crash would) and redis-server, then give up the directory. Nothing to do unless
        this run got the directory's lock."""
        if self.lock is None:
            return
        if self.worker and self.worker.poll() is None and not graceful:
            os.killpg(self.worker.pid, signal.SIGKILL)
        for proc in (self.worker, self.redis):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            if proc:
                proc.wait()
        if self.sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
        if os.path.exists(self.url_file):
            os.unlink(self.url_file)
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


def start_worker(settings: Settings, log_file: str) -> subprocess.Popen:
    """A worker process for `settings.host`, in its own session so it can be killed as a group,
    and dying with this process."""
    env = {**os.environ, **settings.to_env()}
    with open(log_file, "ab") as log_fd:
        return subprocess.Popen(
            [sys.executable, "-m", "conductor", "worker", "--host", settings.host],
            env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=child_of_this_process(),
        )
