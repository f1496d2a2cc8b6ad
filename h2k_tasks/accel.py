"""Placeholder until the accel probe lands: libguestfs always on the direct backend under TCG."""
from __future__ import annotations

import os


def libguestfs_env() -> None:
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
