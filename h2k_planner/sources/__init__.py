"""Source kinds: one module each, all producing the same VM models.

`load_sources()` picks the module for each path the user named.
"""
from __future__ import annotations

import os

from h2k_planner.errors import InputError
from h2k_planner.models import VM
from h2k_planner.sources.vmx import load_vmx

LOADERS = {".vmx": load_vmx}


def load_source(path: str) -> list[VM]:
    if not os.path.exists(path):
        raise InputError(path, "no such file or directory")
    ext = os.path.splitext(path)[1].lower()
    loader = LOADERS.get(ext)
    if loader is None:
        raise InputError(path, f"unsupported source kind {ext or '(no extension)'}; supported: {', '.join(LOADERS)}")
    return [loader(path)]


def load_sources(paths: list[str]) -> list[VM]:
    return [vm for path in paths for vm in load_source(path)]
