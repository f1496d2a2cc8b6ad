"""Serial console on the kernel command line, root by UUID for the guest's own GRUB runs, and a
regenerated GRUB config.

- `console=tty0 console=ttyS0,115200` is added (unless options say `serial_console: false` or a
  ttyS console is already there) to GRUB_CMDLINE_LINUX, BLS entries and /etc/kernel/cmdline.
- `GRUB_DISABLE_LINUX_UUID=true` becomes `false`: with it, grub-mkconfig writes `root=` as the device
  name it sees, which here is the libguestfs appliance's, and after migration whatever the disk bus
  makes it; the first kernel update on KVM would undo blockdev.py's `root=UUID=`.
- grub.cfg is regenerated with the guest's own tool (update-grub, grub2-mkconfig, grub-mkconfig)
  when this fixer changed its inputs or when a `linux` line lacks GRUB_CMDLINE_LINUX's arguments;
  a guest without such a tool gets the arguments added to grub.cfg's `linux` lines directly.
"""
from __future__ import annotations

import re
import shlex

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.guestfiles import find_tool, listdir, read, run, write
from h2k_tasks.inspect_linux import bootloader_facts

FIXER = "linux.bootloader"
SERIAL = ["console=tty0", "console=ttyS0,115200"]
GRUB_VAR = re.compile(r'^(GRUB_CMDLINE_LINUX=)(["\']?)(.*?)\2[ \t]*$', re.M)
LINUX_LINE = re.compile(r"^(\s*linux(?:efi|16)?\s+\S+)(.*)$", re.M)


def with_serial(args: str) -> str:
    """Kernel arguments with the serial console added, unless a ttyS console is already there."""
    if re.search(r"(^|\s)console=ttyS", args):
        return args
    return " ".join([*args.split(), *SERIAL])


def grub_default_with_serial(text: str) -> str:
    if re.search(r"^GRUB_CMDLINE_LINUX(_DEFAULT)?=.*\bconsole=ttyS", text, re.M):
        return text
    m = GRUB_VAR.search(text)
    if not m:
        return text + ("" if text.endswith("\n") or not text else "\n") + f'GRUB_CMDLINE_LINUX="{" ".join(SERIAL)}"\n'
    args = with_serial(m.group(3))
    if args == m.group(3):
        return text
    return text[:m.start(2)] + f'"{args}"' + text[m.end(3) + len(m.group(2)):]


def grub_args(default_grub: str) -> list[str]:
    m = GRUB_VAR.search(default_grub)
    return shlex.split(m.group(3)) if m else []


def cfg_is_stale(cfg: str, args: list[str]) -> bool:
    """True when some `linux` line of grub.cfg lacks one of GRUB_CMDLINE_LINUX's arguments."""
    return any(set(args) - set(m.group(2).split()) for m in LINUX_LINE.finditer(cfg))


def add_to_linux_lines(cfg: str) -> str:
    def sub(m: re.Match) -> str:
        args = with_serial(m.group(2))
        return m.group(0) if args == m.group(2) else f"{m.group(1)} {args}"
    return LINUX_LINE.sub(sub, cfg)


def _serial(ctx: FixContext) -> list[Change]:
    g, summary = ctx.g, "serial console on the kernel command line"
    changes = []
    text = read(g, "/etc/default/grub")
    if text is not None:
        changes += write(ctx, FIXER, "/etc/default/grub", grub_default_with_serial(text), summary)
    text = read(g, "/etc/kernel/cmdline")
    if text is not None:
        changes += write(ctx, FIXER, "/etc/kernel/cmdline", with_serial(text.strip()) + "\n", summary)
    for path in listdir(g, "/boot/loader/entries", ".conf"):
        entry = read(g, path)
        new = re.sub(r"^(options\s+)(.*)$", lambda m: m.group(1) + with_serial(m.group(2)), entry, flags=re.M)
        changes += write(ctx, FIXER, path, new, summary)
    return changes


DISABLE_UUID = re.compile(r"^([ \t]*GRUB_DISABLE_LINUX_UUID=)([\"']?)true\2[ \t]*$", re.M)


def grub_default_with_uuid(text: str) -> str:
    return DISABLE_UUID.sub(r"\1false", text)


def _root_by_uuid(ctx: FixContext) -> list[Change]:
    text = read(ctx.g, "/etc/default/grub")
    if text is None:
        return []
    return write(ctx, FIXER, "/etc/default/grub", grub_default_with_uuid(text),
                 "root= by UUID when GRUB regenerates its config (device names change on KVM)")


def _regenerate(ctx: FixContext, serial: bool, changed: bool) -> list[Change]:
    g = ctx.g
    cfg_path = bootloader_facts(g)["grub_cfg"]
    if cfg_path is None:
        return []
    cfg = read(g, cfg_path)
    default = read(g, "/etc/default/grub") or ""
    tool = find_tool(g, "update-grub", "grub2-mkconfig", "grub-mkconfig")
    if tool is None:
        if serial:
            return write(ctx, FIXER, cfg_path, add_to_linux_lines(cfg), "serial console (no grub-mkconfig in the guest)")
        return []
    if not (changed or cfg_is_stale(cfg, grub_args(default))):
        return []
    argv = [tool] if tool.endswith("update-grub") else [tool, "-o", cfg_path]
    return run(ctx, FIXER, argv, f"regenerate {cfg_path}")


def fix(ctx: FixContext) -> list[Change]:
    serial = ctx.options.get("serial_console", True)
    changes = _root_by_uuid(ctx) + (_serial(ctx) if serial else [])
    return changes + _regenerate(ctx, serial, bool(changes))
