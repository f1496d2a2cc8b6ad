"""An SELinux relabel on first boot when the guest enforces SELinux and files were changed offline.

Files written through libguestfs may carry no or wrong labels; `/.autorelabel` makes the guest
relabel once at boot (and reboot), which an enforcing guest needs to come up.
"""
from __future__ import annotations

from collections.abc import Sequence

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.inspect_linux import selinux_mode

FIXER = "linux.selinux"
MARK = "/.autorelabel"


def fix(ctx: FixContext, earlier: Sequence[Change] = ()) -> list[Change]:
    """`earlier` are the changes the other fixers made in this run; none means nothing to relabel."""
    g = ctx.g
    touched = [c for c in earlier if c.kind in ("file", "file-removed", "command", "package")]
    if not touched or selinux_mode(g) != "enforcing" or g.exists(MARK):
        return []
    g.touch(MARK)
    return [Change(fixer=FIXER, kind="file", path=MARK, summary="relabel SELinux contexts on first boot",
                   diff=f"{len(touched)} change(s) made offline")]
