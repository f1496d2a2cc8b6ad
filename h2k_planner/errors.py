"""The one error type for bad input: it names the file and the problem, and the CLI exits 2 on it."""
from __future__ import annotations

import os


class InputError(Exception):
    """Bad input found while reading a source, a config or a plan.

    `str()` is the one line the user sees: `<file>: <problem>`.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = os.fspath(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
