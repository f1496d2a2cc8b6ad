"""The suite's cache of built guests and tools, shared by concurrent test processes.

`$H2K_TEST_CACHE` (default ~/.cache/h2k-tests). A builder holds `locked(name)` while it checks for and
builds its images, so two test processes (pytest-xdist workers, or two runs) never build the same thing
at once or remove each other's results; the one that waited finds the images built.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    d = Path(os.environ.get("H2K_TEST_CACHE", Path.home() / ".cache" / "h2k-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def locked(name: str, directory: Path | None = None):
    with open((directory or cache_dir()) / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
