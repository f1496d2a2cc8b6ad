"""SELinux labels for the files the other fixers wrote, set offline, so the guest needs no relabel at boot.

Files written through libguestfs carry no or wrong labels; an enforcing guest then fails to come up
(and a permissive one would the day it is switched to enforcing). As virt-v2v does, the whole
filesystem is relabelled offline with the guest's own policy (`/etc/selinux/<SELINUXTYPE>/contexts/
files/file_contexts`): by libguestfs's `selinux_relabel` when its appliance has setfiles, else by the
guest's own `setfiles` run chrooted. A pending `/.autorelabel` is then removed: the guest would
otherwise relabel again and reboot on its first boot. Only when neither can run (no policy spec, no
setfiles, or setfiles fails) is `/.autorelabel` left for the guest to relabel itself at first boot,
with a reboot that the boot test tolerates (h2k_tasks/boot_test.py, MAX_REBOOTS).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.guestfiles import find_tool, read, remove, run
from h2k_tasks.inspect_linux import selinux_mode

FIXER = "linux.selinux"
MARK = "/.autorelabel"
EXCLUDED = ["/proc", "/sys", "/dev", "/run"]


def policy_spec(g) -> str:
    m = re.search(r"^\s*SELINUXTYPE\s*=\s*(\S+)", read(g, "/etc/selinux/config") or "", re.M)
    return f"/etc/selinux/{m.group(1) if m else 'targeted'}/contexts/files/file_contexts"


def fix(ctx: FixContext, earlier: Sequence[Change] = ()) -> list[Change]:
    """`earlier` are the changes the other fixers made in this run; none means nothing to relabel."""
    g = ctx.g
    touched = [c for c in earlier if c.kind in ("file", "file-removed", "command", "package")]
    if not touched or selinux_mode(g) not in ("enforcing", "permissive"):
        return []
    spec = policy_spec(g)
    relabelled = _relabel(ctx, spec, len(touched)) if g.is_file(spec) else None
    if relabelled is not None:
        return relabelled + remove(ctx, FIXER, MARK, "relabelled offline: no relabel (and reboot) at first boot")
    if g.exists(MARK):
        return []
    ctx.log.append(f"{FIXER}: could not relabel offline ({spec} or setfiles missing, or it failed): "
                   "the guest relabels itself and reboots once at first boot")
    g.touch(MARK)
    return [Change(fixer=FIXER, kind="file", path=MARK, summary="relabel SELinux contexts on first boot",
                   diff=f"{len(touched)} change(s) made offline")]


def _relabel(ctx: FixContext, spec: str, touched: int) -> list[Change] | None:
    g = ctx.g
    summary = f"relabel SELinux contexts offline with {spec} ({touched} change(s) made offline)"
    if g.feature_available(["selinuxrelabel"]):
        g.selinux_relabel(spec, "/", force=True)
        ctx.log.append(f"{FIXER}: relabelled / with {spec} (libguestfs)")
        return [Change(fixer=FIXER, kind="command", path="selinux_relabel", summary=summary, diff=f"{spec} /\n")]
    setfiles = find_tool(g, "setfiles")
    if not setfiles:
        return None
    argv = [setfiles, "-F", *[a for d in EXCLUDED for a in ("-e", d)], spec, "/"]
    try:
        return run(ctx, FIXER, argv, summary)
    except RuntimeError as e:
        ctx.log.append(f"{FIXER}: {' '.join(argv)} failed: {e}")
        return None
