"""Read a guest's serial console and decide whether its OS came up: pure text, no QEMU here."""
from __future__ import annotations

import dataclasses
import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\x1b[=>c]")



def _line(start: str) -> re.Pattern[str]:
    """A message line, matched only once complete, so the evidence is never a half-read line."""
    return re.compile(start + r"[^\n]*(?=\n)", re.M)


def _prompt(start: str) -> re.Pattern[str]:
    """A shell prompt: the last, unterminated line."""
    return re.compile(r"^" + start + r"[^\n]*", re.M)


# Failures first: a guest that panics or drops to a rescue shell never shows a real login.
# Within a kind, the first pattern that matches gives the evidence (the most telling line first).
_FAILURES: list[tuple[str, list[re.Pattern[str]]]] = [
    ("kernel-panic", [_line(r"Kernel panic - not syncing")]),
    ("initramfs-shell", [_line(r"^ALERT!"), _prompt(r"\(initramfs\)"), _prompt(r"dracut:/#")]),
    ("emergency-shell", [_line(r"You are in (?:emergency|rescue) mode"),
                         _line(r"Give root password for maintenance"),
                         _line(r"Cannot open access to console, the root account is locked")]),
    ("bootloader-rescue", [_prompt(r"grub rescue>")]),
    ("no-boot-device", [_line(r"No bootable device"),
                        _line(r"BdsDxe: No bootable option or device was found"),
                        _line(r"BdsDxe: starting Boot\w+ \"EFI Internal Shell\"")]),
]
_LOGIN = re.compile(r"^[\w.-]+ login:", re.M)
# QEMU user networking hands out 10.0.2.15 (and up) from its DHCP server.
_SLIRP_ADDRESS = re.compile(r"\b10\.0\.2\.(?:1[5-9]|[2-9]\d|1\d\d|2[0-4]\d)\b")


@dataclasses.dataclass(frozen=True)
class Verdict:
    booted: bool
    kind: str  # "login" or one of the failure kinds above
    evidence: str  # the console line that decided it


def clean(raw: str) -> str:
    """Console text without terminal escapes and carriage returns."""
    return _ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")


def classify(text: str) -> Verdict | None:
    """The verdict that `text` (cleaned console output so far) proves, or None if undecided."""
    for kind, patterns in _FAILURES:
        for pattern in patterns:
            m = pattern.search(text)
            if m:
                return Verdict(False, kind, m.group(0).strip())
    m = _LOGIN.search(text)
    if m:
        return Verdict(True, "login", m.group(0).strip())
    return None


def dhcp_address(text: str) -> str | None:
    """The QEMU user-network DHCP address the guest printed (e.g. via /etc/issue's \\4), if any."""
    m = _SLIRP_ADDRESS.search(text)
    return m.group(0) if m else None


def tail(text: str, lines: int = 50) -> list[str]:
    return text.splitlines()[-lines:]
