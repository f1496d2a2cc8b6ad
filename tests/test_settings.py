"""Celery settings for multi-hour stages: an inconsistent configuration is refused at start-up."""
from __future__ import annotations

from h2k_tasks.app import configure
from h2k_tasks.settings import Settings
from tests.support import h2k


def test_worker_refuses_visibility_shorter_than_time_limit():
    res = h2k("worker", "--host", "a", env={"H2K_BROKER_URL": "redis://127.0.0.1:1/0",
                                            "H2K_TASK_TIME_LIMIT": "7200", "H2K_VISIBILITY_TIMEOUT": "3600"})
    assert res.returncode == 2
    assert "h2k: error: environment: " in res.stderr and "visibility_timeout (3600s) must be longer" in res.stderr


def test_celery_conf_for_long_tasks():
    app = configure(Settings(broker_url="unix:///tmp/r.sock", host="kvm1", task_time_limit=600, visibility_timeout=900))
    c = app.conf
    assert c.broker_url == "redis+socket:///tmp/r.sock"
    assert c.task_acks_late and c.worker_prefetch_multiplier == 1 and c.task_time_limit == 600
    assert c.broker_transport_options["visibility_timeout"] == 900
    assert c.task_default_queue == "h2k.host.kvm1"


def test_settings_travel_through_the_environment():
    s = Settings(broker_url="redis://h:1/0", host="kvm2", concurrency=7, lease_ttl=9)
    assert Settings.from_env(s.to_env()) == s
