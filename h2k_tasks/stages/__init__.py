"""Stages: plain functions, one module each, called by the thin Celery tasks in h2k_tasks/tasks.py.

A stage raises StageFailed for a failure that retrying cannot fix (bad data, a guest that cannot
be converted); anything else is treated as transient and retried with backoff.
"""
from __future__ import annotations

import os

from h2k_planner.models import Disk, Output, VM


class StageFailed(Exception):
    """A permanent failure, with a message meant for the report and, optionally, the evidence."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details


def vm_dir(output: Output, vm: VM) -> str:
    return os.path.join(output.directory, vm.slug)


def output_path(output: Output, vm: VM, disk: Disk) -> str:
    return os.path.join(vm_dir(output, vm), f"{vm.slug}-disk{disk.index}.{output.format}")
