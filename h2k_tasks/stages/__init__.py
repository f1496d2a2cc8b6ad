"""Stage logic as plain functions, testable without Celery."""
