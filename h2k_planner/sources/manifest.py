"""OVF manifests (`.mf`): `SHA1(name)= hex` / `SHA256(name)= hex` lines, verified before any
referenced file is used. A mismatch, a missing file, or a referenced file the manifest leaves out
fails the VM."""
from __future__ import annotations

import hashlib
import re
from typing import Callable, Iterable

from h2k_planner.errors import InputError

MAX_MANIFEST = 1024 * 1024
_LINE = re.compile(r"^(?P<algo>SHA1|SHA256|SHA512)\s*\((?P<name>[^)]+)\)\s*=\s*(?P<digest>[0-9a-fA-F]+)\s*$")
_LENGTH = {"SHA1": 40, "SHA256": 64, "SHA512": 128}


def parse_manifest(path: str, data: bytes) -> dict[str, tuple[str, str]]:
    """{file name: (algorithm, hex digest)}."""
    if len(data) > MAX_MANIFEST:
        raise InputError(path, "manifest larger than 1 MiB")
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise InputError(path, "manifest is not UTF-8") from None
    entries: dict[str, tuple[str, str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m or len(m["digest"]) != _LENGTH[m["algo"]]:
            raise InputError(path, f"line {lineno}: not a 'SHA256(file)= digest' line: {line[:60]!r}")
        if m["name"] in entries:
            raise InputError(path, f"line {lineno}: {m['name']} is listed twice")
        entries[m["name"]] = (m["algo"], m["digest"].lower())
    if not entries:
        raise InputError(path, "manifest lists no files")
    return entries


def verify(path: str, entries: dict[str, tuple[str, str]], needed: Iterable[str],
           chunks: Callable[[str], Iterable[bytes]]) -> None:
    """Check every listed file's digest; `needed` names files that must be listed.
    `chunks(name)` yields a file's bytes, raising InputError when it does not exist."""
    for name in needed:
        if name not in entries:
            raise InputError(path, f"{name} is not covered by the manifest")
    for name, (algo, digest) in entries.items():
        h = hashlib.new(algo.lower())
        for chunk in chunks(name):
            h.update(chunk)
        if h.hexdigest() != digest:
            raise InputError(path, f"{algo} of {name} does not match the manifest")
