"""VMware Tools / open-vm-tools, Hyper-V daemons and VirtualBox additions: removed or disabled.

Packages are removed through the guest's own package database when the guest has one (dpkg's
status file is read directly; rpm is asked with `rpm -qa`), by the guest's dpkg/rpm run inside it.
Whatever is left (tarball installs, removal failures, packages the database doesn't know) is
disabled: its systemd enablement links and SysV rc links are removed.
"""
from __future__ import annotations

import re

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.guestfiles import find_tool, listdir, read, remove, run

FIXER = "linux.tools"
PACKAGES = [
    "open-vm-tools-desktop", "open-vm-tools-sdmp", "open-vm-tools-containerinfo", "open-vm-tools-salt-minion",
    "open-vm-tools", "vmware-tools", "vmware-tools-core", "vmware-tools-esx-nox",
    "hyperv-daemons", "hyperv-daemons-license", "hypervkvpd", "hypervvssd", "hypervfcopyd", "hyperv-tools",
    "virtualbox-guest-x11", "virtualbox-guest-utils", "virtualbox-guest-dkms", "virtualbox-guest-additions-iso",
    "VirtualBox-guest-additions",
]
SERVICES = [
    "vmtoolsd", "open-vm-tools", "vgauthd", "vgauth", "vmware-tools", "vmware-tools-thinprint", "vmware-vmblock-fuse",
    "run-vmblock\\x2dfuse.mount", "hv-kvp-daemon", "hv-vss-daemon", "hv-fcopy-daemon", "hypervkvpd", "hypervvssd",
    "hypervfcopyd", "vboxadd", "vboxadd-service", "vboxadd-x11", "virtualbox-guest-utils",
]
WANTS_DIRS = ["/etc/systemd/system"]


def installed_dpkg(status: str) -> list[str]:
    """Packages of PACKAGES that dpkg's status file says are installed."""
    have = set()
    for stanza in status.split("\n\n"):
        name = re.search(r"^Package:\s*(\S+)", stanza, re.M)
        state = re.search(r"^Status:\s*(.*)$", stanza, re.M)
        if name and state and state.group(1).split()[-1] in ("installed", "half-configured", "unpacked"):
            have.add(name.group(1))
    return [p for p in PACKAGES if p in have]


def _remove_packages(ctx: FixContext) -> list[Change]:
    g = ctx.g
    status = read(g, "/var/lib/dpkg/status")
    dpkg, rpm = find_tool(g, "dpkg"), find_tool(g, "rpm")
    if status is not None and dpkg:
        pkgs = installed_dpkg(status)
        argv = [dpkg, "--purge", *pkgs]
    elif rpm:
        names = set(g.command([rpm, "-qa", "--qf", "%{NAME}\\n"]).split())
        pkgs = [p for p in PACKAGES if p in names]
        argv = [rpm, "-e", "--nodeps", *pkgs]
    else:
        return []
    if not pkgs:
        return []
    try:
        return run(ctx, FIXER, argv, f"remove hypervisor guest tools: {', '.join(pkgs)}", "package")
    except RuntimeError as e:
        ctx.log.append(f"{FIXER}: removing {', '.join(pkgs)} failed ({e}); disabling their services instead")
        return []


def _service_links(g) -> list[str]:
    units = {s + suffix for s in SERVICES for suffix in (".service", ".mount", ".socket")}
    links = []
    for d in WANTS_DIRS:
        for sub in listdir(g, d, ".wants"):
            links += [p for p in listdir(g, sub) if p.rsplit("/", 1)[1] in units]
    sysv = re.compile(r"^[SK]\d\d(" + "|".join(re.escape(s) for s in SERVICES) + r")$")
    for rc in [f"/etc/rc{n}.d" for n in "0123456S"] + [f"/etc/rc.d/rc{n}.d" for n in "0123456"]:
        links += [p for p in listdir(g, rc) if sysv.match(p.rsplit("/", 1)[1])]
    return links


def fix(ctx: FixContext) -> list[Change]:
    changes = _remove_packages(ctx)
    for link in _service_links(ctx.g):
        changes += remove(ctx, FIXER, link, "disable a VMware/Hyper-V/VirtualBox guest service")
    return changes
