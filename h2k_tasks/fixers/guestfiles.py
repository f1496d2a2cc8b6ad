"""Reading, writing and removing guest files through libguestfs, each write recorded as a Change."""
from __future__ import annotations

import difflib

from h2k_tasks.fixers import Change, FixContext

BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def read(g, path: str) -> str | None:
    """The text of a regular guest file, or None when there is none."""
    data, chunk = b"", 1 << 20
    try:  # pread travels in the reply message: far quicker than read_file's file transfer
        while True:
            part = g.pread(path, chunk, len(data))
            data += part
            if len(part) < chunk:
                return data.decode("utf-8", "surrogateescape")
    except RuntimeError:  # absent, a directory, or a dangling link
        return None


def unified(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a{path}", f"b{path}"))


def write(ctx: FixContext, fixer: str, path: str, new: str, summary: str) -> list[Change]:
    """Write `new` to `path` when it differs from what is there; return the Change (or [])."""
    old = read(ctx.g, path)
    if old == new:
        return []
    if old is None:
        ctx.g.mkdir_p(path.rsplit("/", 1)[0] or "/")
    # write() keeps an existing file's inode, so owner, mode and SELinux label stay.
    ctx.g.write(path, new.encode("utf-8", "surrogateescape"))
    return [Change(fixer=fixer, kind="file", path=path, summary=summary, diff=unified(path, old or "", new))]


def remove(ctx: FixContext, fixer: str, path: str, summary: str) -> list[Change]:
    """Remove a guest file (or symlink), recording its old text."""
    g = ctx.g
    if not (g.is_file(path) or g.is_symlink(path)):
        return []
    old = "" if g.is_symlink(path) else read(g, path) or ""
    g.rm(path)
    return [Change(fixer=fixer, kind="file-removed", path=path, summary=summary, diff=unified(path, old, ""))]


def rename(ctx: FixContext, fixer: str, old: str, new: str, summary: str) -> list[Change]:
    ctx.g.mv(old, new)
    return [Change(fixer=fixer, kind="file", path=new, summary=summary, diff=f"{old} -> {new}")]


def find_tool(g, *names: str) -> str | None:
    """The guest path of the first of `names` found in the usual binary directories."""
    for name in names:
        for d in BIN_DIRS:
            path = f"{d}/{name}"
            if g.is_file(path, followsymlinks=True):
                return path
    return None


def run(ctx: FixContext, fixer: str, argv: list[str], summary: str, kind: str = "command") -> list[Change]:
    """Run a command inside the guest (its own tools, chrooted by libguestfs); record it."""
    output = ctx.g.command(argv)
    ctx.log.append(f"{fixer}: ran {' '.join(argv)}")
    return [Change(fixer=fixer, kind=kind, path=argv[0], summary=summary, diff=" ".join(argv) + "\n" + output)]


def listdir(g, directory: str, suffix: str = "", prefix: str = "") -> list[str]:
    """Full paths of the entries of a guest directory matching prefix/suffix, sorted; [] if absent."""
    if not g.is_dir(directory, followsymlinks=True):
        return []
    return [f"{directory}/{n}" for n in sorted(g.ls(directory)) if n.endswith(suffix) and n.startswith(prefix)]
