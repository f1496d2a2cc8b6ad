"""The Celery app, configured for multi-hour stages on a Redis broker.

Late acks and prefetch 1 so a dead worker's stage goes back to the queue, not lost with it; a
visibility timeout longer than the task time limit (checked by Settings) so Redis never hands a
running stage to a second worker; bounded retries with exponential backoff in the stage runner.
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from h2k_tasks.process import die_with_parent
from h2k_tasks.settings import Settings, celery_broker_url

app = Celery("h2k", include=["h2k_tasks.tasks"])


@worker_process_init.connect
def _pool_child_dies_with_worker(**_) -> None:
    """A prefork pool child (and through its own children's parent-death signal, the qemu-img and
    QEMU it runs) must not outlive a killed worker."""
    die_with_parent()


def configure(settings: Settings) -> Celery:
    broker = celery_broker_url(settings.broker_url)
    app.conf.update(
        broker_url=broker,
        result_backend=broker,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_expires=7 * 24 * 3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue=f"h2k.host.{settings.host}",
    )
    app.h2k_settings = settings
    return app
