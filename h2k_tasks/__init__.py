"""Tasks: the Celery app and the stages that do the work on a worker host."""
