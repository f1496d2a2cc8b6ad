"""Fixtures giving each test real redis-server and worker processes (see tests/support.py)."""
from __future__ import annotations

import tempfile

import pytest

from tests.support import RedisServer, Workers

pytest_plugins = ["tests.conftest_vsphere"]  # the vSphere simulator's fixtures, started once per session


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
