"""virtio (and ahci/nvme) drivers in every installed kernel's initramfs.

The drivers are added to the distro's initramfs configuration (so later kernel updates keep them),
then each image that lacks one of the virtio drivers is regenerated with the guest's own tool
(chrooted by libguestfs), after copying it to `<image>.h2k-orig`. Whether an image has a driver is
read from the image itself (libguestfs lists the cpio archive) or the kernel's modules.builtin.
An image that cannot be listed (e.g. an early-microcode cpio prepended) is regenerated.
"""
from __future__ import annotations

import re

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.guestfiles import find_tool, read, run, write
from h2k_tasks.inspect_linux import kernels

FIXER = "linux.initramfs"
REQUIRED = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"]
MODULES = REQUIRED + ["ahci", "nvme"]  # configured too, but a KVM guest boots without them
DRACUT_CONF = "/etc/dracut.conf.d/90-h2k-virtio.conf"
BACKUP = ".h2k-orig"
TOOLS = [("dracut", "dracut"), ("initramfs-tools", "update-initramfs"), ("mkinitcpio", "mkinitcpio")]


def missing_modules(g, version: str, image: str | None) -> list[str]:
    """Required drivers neither in the image nor built into kernel `version`."""
    builtin = _names((read(g, f"/lib/modules/{version}/modules.builtin") or "").split())
    if image is None:
        return [m for m in REQUIRED if m not in builtin]
    try:
        present = _names(g.initrd_list(image))
    except RuntimeError:
        return list(REQUIRED)
    return [m for m in REQUIRED if m not in builtin and m not in present]


def _names(paths: list[str]) -> set[str]:
    """Module names of .ko files (any compression), with '-' read as '_' as modprobe does."""
    out = set()
    for p in paths:
        m = re.search(r"([^/]+)\.ko(?:\.\w+)?$", p)
        if m:
            out.add(m.group(1).replace("-", "_"))
    return out


def add_to_list_var(text: str, var: str, modules: list[str], open_: str, close: str) -> str:
    """Add missing words to a shell variable `VAR=<open_>words<close>`; add the variable if absent."""
    m = re.search(rf"^({var}={re.escape(open_)})([^{re.escape(close)}\n]*)({re.escape(close)})", text, re.M)
    if not m:
        return text + ("" if text.endswith("\n") or not text else "\n") + f"{var}={open_}{' '.join(modules)}{close}\n"
    words = m.group(2).split()
    words += [mod for mod in modules if mod not in words]
    return text[:m.start(2)] + " ".join(words) + text[m.end(2):]


def configure(ctx: FixContext, tool: str) -> list[Change]:
    g, summary = ctx.g, "include virtio/ahci/nvme drivers in the initramfs"
    changes = []
    if tool == "dracut":
        changes += write(ctx, FIXER, DRACUT_CONF, f'add_drivers+=" {" ".join(MODULES)} "\n', summary)
        text = read(g, "/etc/sysconfig/kernel")
        if text is not None and re.search(r"^INITRD_MODULES=", text, re.M):
            changes += write(ctx, FIXER, "/etc/sysconfig/kernel",
                             add_to_list_var(text, "INITRD_MODULES", MODULES, '"', '"'), summary)
    elif tool == "initramfs-tools":
        text = read(g, "/etc/initramfs-tools/modules") or ""
        have = {line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")}
        extra = "".join(f"{m}\n" for m in MODULES if m not in have)
        new = text + ("\n" if text and not text.endswith("\n") else "") + extra if extra else text
        changes += write(ctx, FIXER, "/etc/initramfs-tools/modules", new, summary)
    elif tool == "mkinitcpio":
        text = read(g, "/etc/mkinitcpio.conf") or ""
        changes += write(ctx, FIXER, "/etc/mkinitcpio.conf", add_to_list_var(text, "MODULES", MODULES, "(", ")"), summary)
    return changes


def regenerate_argv(tool: str, path: str, version: str, image: str) -> list[str]:
    if tool == "dracut":
        return [path, "--force", "--no-hostonly", image, version]
    if tool == "initramfs-tools":
        return [path, "-u", "-k", version]
    return [path, "-k", version, "-g", image]


def fix(ctx: FixContext) -> list[Change]:
    g = ctx.g
    found = [(t, find_tool(g, name)) for t, name in TOOLS]
    tool, path = next(((t, p) for t, p in found if p), (None, None))
    if tool is None:
        ctx.log.append(f"{FIXER}: no initramfs tool in the guest; virtio drivers not added")
        return []
    changes = configure(ctx, tool)
    for k in kernels(g):
        version, image = k["version"], k["initramfs"]
        missing = missing_modules(g, version, image)
        if not missing:
            continue
        if image is None:
            image = {"dracut": f"/boot/initramfs-{version}.img", "initramfs-tools": f"/boot/initrd.img-{version}",
                     "mkinitcpio": f"/boot/initramfs-{version}.img"}[tool]
        elif not g.exists(image + BACKUP):
            g.cp_a(image, image + BACKUP)
            ctx.log.append(f"{FIXER}: kept {image} as {image}{BACKUP}")
        changes += run(ctx, FIXER, regenerate_argv(tool, path, version, image),
                       f"regenerate the initramfs of {version} (missing {', '.join(missing)})")
    return changes
