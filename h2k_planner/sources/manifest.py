"""OVF manifests (`.mf`): `SHA1(name)= hex` / `SHA256(name)= hex` / `SHA512(name)= hex` lines.

Every digest a manifest gives is checked before any referenced file is used; a mismatch, a digest
of the wrong length or a listed file that does not exist fails the VM. A line that is not a digest
line is skipped with a warning, as virt-v2v does; files no manifest covers are a warning too."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Callable

from h2k_planner.errors import InputError
from h2k_planner.models import Concern, Severity

MAX_MANIFEST = 1024 * 1024
_LINE = re.compile(r"^(?P<algo>SHA1|SHA256|SHA512)\s*\((?P<name>[^)]+)\)\s*=\s*(?P<digest>[0-9a-fA-F]+)\s*$")
LENGTH = {"sha1": 40, "sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class Entry:
    manifest: str  # the manifest as errors name it
    name: str  # the listed file, as its container names it (relative to the manifest's folder)
    algo: str  # hashlib name: sha1, sha256, sha512
    digest: str


def parse_manifest(path: str, data: bytes, folder: str = "") -> tuple[list[Entry], list[Concern]]:
    """The digest lines of the manifest `path` (its bytes given), names joined to `folder`, and a
    concern for each line that is not one."""
    if len(data) > MAX_MANIFEST:
        raise InputError(path, "manifest larger than 1 MiB")
    try:
        text = data.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise InputError(path, "manifest is not UTF-8") from None
    entries, skipped = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m:
            skipped.append(lineno)
            continue
        algo, digest = m["algo"].lower(), m["digest"].lower()
        if len(digest) != LENGTH[algo]:
            raise InputError(path, f"line {lineno}: the {m['algo']} digest of {m['name']} has {len(digest)} "
                                   f"hex digits, not {LENGTH[algo]}")
        name = m["name"].strip()
        joined = posixpath.normpath(posixpath.join(folder, name))
        if name.startswith("/") or joined == ".." or joined.startswith("../"):
            raise InputError(path, f"line {lineno}: {name} lies outside the manifest's folder tree")
        entries.append(Entry(path, joined, algo, digest))
    concerns = [Concern(
        id="manifest-line-skipped", severity=Severity.warning,
        message=f"{path}: line{'s' if len(skipped) > 1 else ''} {', '.join(map(str, skipped))} "
                "not 'SHA1(file)= digest' or 'SHA256(file)= digest' (or SHA512): skipped",
        remedy="check the manifest; the files it does list were verified")] if skipped else []
    return entries, concerns


def verify(entries: list[Entry], exists: Callable[[str], bool],
           digests: Callable[[str, set[str]], dict[str, str]]) -> None:
    """Check every entry: the file must exist, and `digests(name, algos)` ({algo: hex}) match."""
    wanted: dict[str, set[str]] = {}
    for e in entries:
        if e.name not in wanted and not exists(e.name):
            raise InputError(e.manifest, f"lists {e.name}, which does not exist")
        wanted.setdefault(e.name, set()).add(e.algo)
    found = {name: digests(name, algos) for name, algos in wanted.items()}
    for e in entries:
        if found[e.name][e.algo] != e.digest:
            raise InputError(e.manifest, f"{e.algo.upper()} of {e.name} does not match the manifest")


def unverified(entries: list[Entry], names: list[str]) -> Concern | None:
    """The warning for files among `names` that no manifest lists, or None."""
    covered = {e.name for e in entries}
    left = [n for n in dict.fromkeys(names) if n not in covered]
    if not left:
        return None
    return Concern(id="unverified-files", severity=Severity.warning,
                   message=f"no manifest covers {', '.join(left)}: their integrity is not verified",
                   remedy="export with a manifest that lists the .ovf and every disk")
