"""Source kinds: one module each, all producing the same VM models.

`load_sources()` picks the module for each path the user named; a directory is searched for
every VM in it (see `load_directory`). `allow` lists extra directories (`--allow-path`) that
descriptors and backing files may point into besides the source's own directory. Every disk
read is then checked for damage (`h2k_planner/integrity.py`) before anything is planned.
"""
from __future__ import annotations

import os

from h2k_planner.errors import InputError
from h2k_planner.integrity import check_disk
from h2k_planner.models import VM
from h2k_planner.probe import in_parallel
from h2k_planner.sources.disk import DISK_EXTENSIONS, load_disk_image
from h2k_planner.sources.ova import load_ova
from h2k_planner.sources.ovf_vm import load_ovf
from h2k_planner.sources.vmdk import is_bare_extent
from h2k_planner.sources.vmx import load_vmx

DEFINITIONS = {".vmx": lambda p, a: [load_vmx(p, a)], ".ovf": load_ovf, ".ova": load_ova}
MAX_DIRECTORY_FILES = 10000


def load_source(path: str, allow: tuple[str, ...] = ()) -> list[VM]:
    if not os.path.exists(path):
        raise InputError(path, "no such file or directory")
    if os.path.isdir(path):
        return load_directory(path, allow)
    ext = os.path.splitext(path)[1].lower()
    if ext in DEFINITIONS:
        return DEFINITIONS[ext](path, allow)
    if ext in DISK_EXTENSIONS:
        return [load_disk_image(path, allow)]
    kinds = ", ".join(sorted([*DEFINITIONS, *DISK_EXTENSIONS]))
    raise InputError(path, f"unsupported source kind {ext or '(no extension)'}; supported: {kinds}, or a directory")


def load_directory(path: str, allow: tuple[str, ...] = ()) -> list[VM]:
    """Every VM under a directory: each .vmx/.ovf/.ova, then each disk image that no VM and no
    other image reads (snapshot deltas, extents and backing files belong to their top image)."""
    files = []
    for d, dirs, names in os.walk(path):
        dirs[:] = sorted(n for n in dirs if not n.startswith("."))
        files += [os.path.join(d, n) for n in sorted(names) if not n.startswith(".")]
        if len(files) > MAX_DIRECTORY_FILES:
            raise InputError(path, f"more than {MAX_DIRECTORY_FILES} files: name the sources instead")
    ext = {f: os.path.splitext(f)[1].lower() for f in files}
    vms = [vm for f in files if ext[f] in DEFINITIONS for vm in DEFINITIONS[ext[f]](f, allow)]
    claimed = {os.path.realpath(c) for vm in vms for d in vm.disks for c in d.chain}
    rest = [f for f in files if ext[f] in DISK_EXTENSIONS and os.path.realpath(f) not in claimed]
    extents = [f for f in rest if ext[f] == ".vmdk" and is_bare_extent(f)]
    images = in_parallel(lambda f: load_disk_image(f, allow), [f for f in rest if f not in extents])
    claimed |= {os.path.realpath(c) for vm in images for c in vm.disks[0].chain[1:]}
    vms += [vm for vm in images if os.path.realpath(vm.source) not in claimed]
    unread = [f for f in extents if os.path.realpath(f) not in claimed]
    if unread:
        raise InputError(unread[0], "a VMDK extent that no descriptor names")
    if not vms:
        raise InputError(path, "no VMs found (.vmx, .ovf, .ova or disk images)")
    return vms


def load_sources(paths: list[str], allow: tuple[str, ...] = ()) -> list[VM]:
    for a in allow:
        if not os.path.isdir(a):
            raise InputError(a, "--allow-path must name an existing directory")
    vms = [vm for path in paths for vm in load_source(path, tuple(allow))]
    in_parallel(check_disk, [disk for vm in vms for disk in vm.disks])
    return vms
