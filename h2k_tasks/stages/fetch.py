"""fetch: make a disk's source readable on this host. Local files are read in place (never
copied, never opened for writing); each is recorded with its size and mtime so a later change
to the source is noticed."""
from __future__ import annotations

import os

from h2k_planner.models import Disk
from h2k_tasks import atomic
from h2k_tasks.stages import StageFailed


def fetch_local(disk: Disk) -> dict:
    files = []
    for path in disk.chain or [disk.source]:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                f.read(1)
        except OSError as e:
            raise StageFailed(f"{path}: cannot read source: {e.strerror}") from None
        files.append({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {"files": files}


def unchanged(result: dict) -> bool:
    """The recorded source files (and an unpacked copy, if any) are still there, same size and mtime."""
    if "unpacked" in result and not atomic.still_same(result["unpacked"]):
        return False
    for f in result.get("files", []):
        try:
            st = os.stat(f["path"])
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (f["size"], f["mtime_ns"]):
            return False
    return bool(result.get("files"))
