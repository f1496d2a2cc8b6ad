"""The user's virtio-win drivers (a directory or an ISO) and the choice of driver builds for a guest.

Layout read: `<Driver>/<os>/<arch>/<files>` with `<os>` one of w7 … w11, 2k8R2 … 2k25 (any case) and
`<arch>` amd64 or x86. Nothing is ever downloaded. For each driver the build for the guest's own OS is
taken, else the nearest older OS of the same family.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from h2k_planner.errors import InputError

ISOINFO_TIMEOUT = 120.0  # lists or extracts from a local image
CLIENT = ["w11", "w10", "w8.1", "w8", "w7"]
SERVER = ["2k25", "2k22", "2k19", "2k16", "2k12r2", "2k12", "2k8r2"]
ARCH = {"x86_64": "amd64", "i386": "x86"}
BOOT_DRIVERS = ("viostor", "vioscsi")


def os_candidates(generation: str) -> list[str]:
    """The OS directories to try for `generation`, best first (lower case)."""
    for family in (CLIENT, SERVER):
        if generation.lower() in family:
            return family[family.index(generation.lower()):]
    return []


@dataclass(frozen=True)
class DriverChoice:
    driver: str  # top directory as spelled in the source, e.g. "NetKVM"
    os_dir: str  # as spelled in the source, e.g. "2k19"
    arch: str  # "amd64" or "x86"
    wanted: str  # the guest's own OS directory name
    files: tuple[str, ...]  # paths relative to the source root

    @property
    def fallback(self) -> bool:
        return self.os_dir.lower() != self.wanted

    def describe(self) -> str:
        note = f" (no {self.wanted} build: nearest older)" if self.fallback else ""
        return f"{self.driver} from {self.driver}/{self.os_dir}/{self.arch}{note}"


class VirtioWin:
    """Read-only access to a virtio-win directory or ISO image."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted(
                str(p.relative_to(self.path)).replace(os.sep, "/") for p in self.path.rglob("*") if p.is_file()
            )
            self._iso_flag = None
        elif self.path.is_file():
            self._iso_flag, self.files = self._iso_listing()
        else:
            raise InputError(self.path, "virtio-win not found: give a virtio-win directory or ISO image")

    def _isoinfo(self, *args: str) -> bytes:
        try:
            return subprocess.run(["isoinfo", "-i", str(self.path), *args], check=True,
                                  capture_output=True, timeout=ISOINFO_TIMEOUT).stdout
        except FileNotFoundError as e:
            raise InputError(self.path, "reading an ISO needs isoinfo (Debian package genisoimage)") from e
        except subprocess.CalledProcessError as e:
            raise InputError(self.path, f"not a readable ISO image: {e.stderr.decode(errors='replace')}") from e
        except subprocess.TimeoutExpired:
            raise InputError(self.path, f"isoinfo did not answer within {ISOINFO_TIMEOUT:g}s") from None

    def _iso_listing(self) -> tuple[str, list[str]]:
        for flag in ("-R", "-J"):
            names = [n for n in self._isoinfo(flag, "-f").decode(errors="replace").splitlines() if n]
            if any(n.lower().endswith(".sys") for n in names):
                names = [n.lstrip("/") for n in names]
                # directories are listed too: keep the entries nothing else lives under
                dirs = {n.rsplit("/", 1)[0] for n in names if "/" in n}
                return flag, sorted(n for n in names if n not in dirs)
        raise InputError(self.path, "no driver (.sys) found in this ISO's Rock Ridge or Joliet names")

    def read(self, rel: str) -> bytes:
        if self._iso_flag is None:
            return (self.path / rel).read_bytes()
        return self._isoinfo(self._iso_flag, "-x", "/" + rel)

    def choose(self, generation: str, arch: str) -> list[DriverChoice]:
        """One build per driver for this Windows generation (e.g. "w10", "2k19") and arch ("x86_64"/"i386")."""
        candidates = os_candidates(generation)
        want_arch = ARCH.get(arch, arch)
        builds: dict[str, dict[str, list[str]]] = {}
        spelled: dict[tuple[str, str], str] = {}
        for rel in self.files:
            parts = rel.split("/")
            if len(parts) != 4 or parts[2].lower() != want_arch or parts[1].lower() not in candidates:
                continue
            builds.setdefault(parts[0], {}).setdefault(parts[1].lower(), []).append(rel)
            spelled[(parts[0], parts[1].lower())] = parts[1]
        choices = []
        for driver in sorted(builds, key=str.lower):
            best = next(c for c in candidates if c in builds[driver])
            choices.append(DriverChoice(driver, spelled[(driver, best)], want_arch, generation.lower(),
                                        tuple(sorted(builds[driver][best]))))
        return choices


def boot_choices(choices: list[DriverChoice]) -> dict[str, DriverChoice]:
    """{"viostor": choice, "vioscsi": choice} for the boot storage drivers present in `choices`."""
    found = {}
    for c in choices:
        for name in BOOT_DRIVERS:
            if any(f.lower().endswith(f"/{name}.sys") for f in c.files):
                found[name] = c
    return found
