"""A reference to a secret (a file or an environment variable), resolved only when it is used.

Models, task arguments, logs and Redis carry the reference, never the secret itself.
"""
from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, model_validator

from h2k_planner.errors import InputError


class SecretRef(BaseModel):
    """Exactly one of `file` (a path whose content, less a final newline, is the secret) or `env`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "SecretRef":
        if (self.file is None) == (self.env is None):
            raise ValueError("a secret reference names exactly one of 'file' or 'env'")
        return self

    def resolve(self) -> str:
        """The secret itself; raises InputError when the file or variable is missing or empty."""
        if self.file is not None:
            try:
                with open(self.file, encoding="utf-8") as f:
                    value = f.read()
            except OSError as exc:
                raise InputError(self.file, f"cannot read the password file: {exc.strerror}") from None
            value = value.removesuffix("\n").removesuffix("\r")
            where = self.file
        else:
            value = os.environ.get(self.env, "")
            where = f"${self.env}"
        if not value:
            raise InputError(where, "the password is empty or not set")
        return value
