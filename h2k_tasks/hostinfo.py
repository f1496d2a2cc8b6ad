"""A worker host tells the conductor about itself: free space where outputs go, its concurrency,
and when it was last seen. Published at start and every 30 s to `h2k:host:<name>`."""
from __future__ import annotations

import os
import threading
import time

from h2k_tasks.settings import Settings
from h2k_tasks.state import P, State

PERIOD = 30.0


def publish(state: State, settings: Settings) -> None:
    st = os.statvfs(settings.data_dir)
    key = f"{P}:host:{settings.host}"
    state.r.hset(key, mapping={"name": settings.host, "free_bytes": st.f_bavail * st.f_frsize,
                               "concurrency": settings.concurrency, "data_dir": settings.data_dir,
                               "last_seen": time.time()})
    state.r.expire(key, int(PERIOD * 4))


def start_publisher(state: State, settings: Settings) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                publish(state, settings)
            except Exception:  # Redis restarting: try again next period
                pass
            time.sleep(PERIOD)

    t = threading.Thread(target=loop, daemon=True, name="h2k-hostinfo")
    t.start()
    return t
