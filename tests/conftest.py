"""Fixtures giving each test real redis-server and worker processes (see tests/support.py)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.support import RedisServer, Workers

pytest_plugins = ["tests.conftest_vsphere"]  # the vSphere simulator's fixtures, started once per session

# A full run peaks near 5 GiB of disk images in the temp directory (measured on 308 tests); building the
# guest caches the first time takes a few more. Below this, every image-building test would error.
NEEDED_FREE_GIB = 10
_CHILD_TMP = pytest.StashKey[str]()


def pytest_sessionstart(session):
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    if free < NEEDED_FREE_GIB:
        pytest.exit(f"{tmp}: {free:.1f} GiB free, the suite needs {NEEDED_FREE_GIB} GiB for its disk images; "
                    "free some space first", returncode=1)
    # The processes the tests start (workers, h2k, libguestfs, their Celery pools) keep their temp files
    # in a directory of this session's, removed at its end: a process a test kills leaves nothing in /tmp.
    session.config.stash[_CHILD_TMP] = os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="h2k-suite-", dir=tmp)


def pytest_sessionfinish(session):
    child_tmp = session.config.stash.get(_CHILD_TMP, None)
    if child_tmp:
        shutil.rmtree(child_tmp, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """Modules booting real guests first, then those holding slow tests (stable otherwise): with the
    suite spread over processes by module (`make test`), the long ones start early and the processes
    finish together."""
    def rank(marker: str) -> set[str]:
        return {item.module.__name__ for item in items if item.get_closest_marker(marker)}
    real, slow = rank("real_guest"), rank("slow")
    items.sort(key=lambda item: (item.module.__name__ not in real, item.module.__name__ not in slow))


@pytest.fixture
def redis_server():
    with tempfile.TemporaryDirectory(prefix="h2k-redis-", dir="/tmp") as d:  # short socket path
        server = RedisServer(d).start()
        yield server
        server.stop()


@pytest.fixture
def workers(tmp_path):
    w = Workers(str(tmp_path))
    yield w
    w.stop_all()
