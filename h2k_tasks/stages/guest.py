"""guest: one libguestfs session over all of a VM's converted disks: inspect, then fix.

The session runs on qcow2 overlays of the outputs, so every fix lands in the overlays first.
Only when every fixer succeeded are the overlays committed into the outputs (`qemu-img
commit`); a failed fixer leaves the outputs exactly as converted. A marker file spans the
commit: finding it means an earlier commit was interrupted, the outputs are no longer
trustworthy, and they are removed so that the next run converts them again.

In a dry run the overlays sit over the *sources* (opened read-only as backing files) and are
thrown away: the report lists what would change, and nothing is written.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

from h2k_planner.errors import InputError
from h2k_planner.models import VM
from h2k_tasks import atomic, process
from h2k_tasks.accel import Hypervisor
from h2k_tasks.appliance import SESSION_TIMEOUT, LaunchTimeout, open_session
from h2k_tasks.firmware import shipped_vm
from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.linux import fix_linux
from h2k_tasks.fixers.windows import fix_windows
from h2k_tasks.fixers.windows.undo import undo_reg
from h2k_tasks.inspect_linux import inspect_linux
from h2k_tasks.inspect_windows import inspect_windows
from h2k_tasks.machine import choose_boot_disk
from h2k_tasks.process import Interrupted
from h2k_tasks.stages import StageFailed

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"  # GRUB's core.img on a GPT disk booted by BIOS
ESP_MBR_ID = 0xEF
COMMIT_MARKER = ".guest-commit"
OVERLAY_PREFIX = ".guest-g"  # + the attempt's lease generation
QEMU_IMG_TIMEOUT = 300.0  # creating an overlay is instant; a stuck NFS mount is not
NO_OS_NOTE = "no operating system found on the disks"


def detect_boot(g, vm: VM, mountpoints: dict[str, str] | None = None) -> dict:
    """Which disk boots and what: `bootable_disks` (positions in `vm.disks`) hold BIOS boot code or an
    EFI System Partition with a loader; `boot_disk` is the one that boots (h2k_tasks.machine.choose_boot_disk,
    given the disk holding the OS's /boot, else /, by `mountpoints`); `firmware` is 'efi' when it has such
    an ESP and no BIOS boot code, 'bios' for the reverse, None when it shows both or neither."""
    devices = g.list_devices()
    kinds = [_boots(g, dev) for dev in devices]
    bootable = [i for i, (efi, bios) in enumerate(kinds) if efi or bios]
    mp = mountpoints or {}
    boot = choose_boot_disk(vm, bootable, _disk_of(g, mp.get("/boot") or mp.get("/"), devices))
    efi, bios = kinds[boot] if boot is not None else (False, False)
    return {"firmware": None if efi == bios else ("efi" if efi else "bios"), "boot_disk": boot,
            "bootable_disks": bootable}


def _disk_of(g, device: str | None, devices: list[str]) -> int | None:
    """Position of the disk holding partition or disk `device`; None for anything else (an LV, md)."""
    if not device:
        return None
    try:
        return devices.index(g.part_to_dev(device))
    except (RuntimeError, ValueError):
        return devices.index(device) if device in devices else None


def _boots(g, dev: str) -> tuple[bool, bool]:
    """(an EFI System Partition with a loader, BIOS boot code) on disk `dev`."""
    try:
        table = g.part_get_parttype(dev)
        parts = [p["part_num"] for p in g.part_list(dev)]
    except RuntimeError:
        return False, False
    if table == "gpt":
        types = {n: g.part_get_gpt_type(dev, n).upper() for n in parts}
        esps = [n for n in parts if types[n] == ESP_GUID]
        bios = BIOS_BOOT_GUID in types.values() or _boot_code(g, dev)
    else:
        esps = [n for n in parts if n <= 4 and g.part_get_mbr_id(dev, n) == ESP_MBR_ID]
        bios = _boot_code(g, dev)
    return any(_has_efi_loader(g, f"{dev}{n}") for n in esps), bios


def _boot_code(g, dev: str) -> bool:
    """Sector 0's boot code area is not all zero (GRUB's boot.img, a generic MBR loader)."""
    return any(g.pread_device(dev, 440, 0))


def _has_efi_loader(g, part: str) -> bool:
    try:
        g.mount_ro(part, "/")
    except RuntimeError:
        return False
    try:
        return any(p.lower().startswith("efi/") and p.lower().endswith(".efi") for p in g.find("/"))
    finally:
        g.umount("/")


def inspect(g, vm: VM) -> dict:
    roots = g.inspect_os()
    if not roots:
        return {"os_type": "unknown", "roots": []} | detect_boot(g, vm)
    if len(roots) > 1:
        raise StageFailed(f"multi-boot guest: {len(roots)} operating systems found ({', '.join(roots)})")
    root = roots[0]
    return {
        "os_type": g.inspect_get_type(root),
        "distro": g.inspect_get_distro(root),
        "product_name": g.inspect_get_product_name(root),
        "version": f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root)}",
        "arch": g.inspect_get_arch(root),
        "hostname": g.inspect_get_hostname(root),
        "package_format": g.inspect_get_package_format(root),
        "root": root,
        "mountpoints": (mountpoints := dict(sorted(g.inspect_get_mountpoints(root).items()))),
    } | detect_boot(g, vm, mountpoints)


def _mount(g, mountpoints: dict[str, str], readonly: bool) -> None:
    for mp, dev in sorted(mountpoints.items(), key=lambda kv: len(kv[0])):
        (g.mount_ro if readonly else g.mount)(dev, mp)


def _fix(g, info: dict, vm: VM, options: dict) -> tuple[list[Change], list[str], dict]:
    """Mount the guest, run its OS's fixers; returns the changes, notes and OS facts."""
    root = info["root"]
    _mount(g, info["mountpoints"], readonly=False)
    if info["os_type"] == "linux":
        facts = {"linux": inspect_linux(g, root)}
        ctx = FixContext(g=g, root=root, inspection=facts["linux"], vm=vm, options=options)
        return fix_linux(ctx), ctx.log, facts
    if info["os_type"] == "windows":
        facts = {"windows": inspect_windows(g, root)}
        ctx = FixContext(g=g, root=root, inspection=facts, vm=vm, options=options)
        return fix_windows(ctx), ctx.log, facts
    return [], [f"no fixes for a {info['os_type']} guest"], {}


def _qemu_img(*args: str, tick: Callable[[], bool] | None = None) -> None:
    try:
        process.run(["qemu-img", *args], tick=tick, timeout=None if tick else QEMU_IMG_TIMEOUT)
    except process.ProcessFailed as e:
        raise StageFailed(f"qemu-img {args[0]} failed: {e.tail}") from None


def _always() -> bool:
    return True


def guest_stage(vm: VM, disks: list[tuple[str, str]], vm_dir: str | None, options: dict,
                hv: Hypervisor = Hypervisor(), *, gen: int = 0, alive: Callable[[], bool] = _always,
                owns: Callable[[], bool] = _always, timeout: float = SESSION_TIMEOUT) -> dict:
    """`disks`: (path, format) of each disk in boot order: the outputs in `vm_dir`; or, with
    `vm_dir` None, the sources, for a dry run that writes nothing. `hv`: the worker's QEMU.

    `gen` is this attempt's lease generation: its overlays are `.guest-g<gen>-*`, and only those of
    older generations (attempts whose lease is gone) are removed. `alive()` turning False (lease lost,
    cancelled) kills the appliance and raises process.Interrupted; so does `owns()` being False just
    before the commit. The session (launch excluded) may last `timeout` seconds: then the appliance is
    killed and the stage fails with the call that was running and the appliance's last console lines."""
    dry_run = vm_dir is None
    marker = os.path.join(vm_dir, COMMIT_MARKER) if vm_dir else ""
    if marker and os.path.exists(marker):
        for path, _ in disks:
            if os.path.exists(path):
                os.unlink(path)
        os.unlink(marker)
        raise StageFailed("an earlier commit of guest fixes was interrupted; the outputs were removed and "
                          "`h2k wave retry` converts them again")
    if vm_dir:
        for stale in atomic.dead_attempts(vm_dir, OVERLAY_PREFIX, gen):
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{OVERLAY_PREFIX}{gen}-", dir=vm_dir) as tmp:
        overlays = []
        for n, (path, fmt) in enumerate(disks):
            overlays.append(os.path.join(tmp, f"overlay{n}.qcow2"))
            _qemu_img("create", "-q", "-f", "qcow2", "-b", os.path.abspath(path), "-F", fmt, overlays[-1])
        try:
            session = open_session([(overlay, "qcow2") for overlay in overlays], readonly=False, hv=hv, alive=alive)
        except LaunchTimeout as e:
            raise StageFailed(str(e)) from None
        g = session.g
        try:
            with session.watch(timeout, alive) as watch:
                info = inspect(g, vm)
                changes, notes, facts = (_fix(g, info, shipped_vm(vm, info), options) if info["os_type"] != "unknown"
                                         else ([], [NO_OS_NOTE], {}))
                g.umount_all()
                g.shutdown()
        except (InputError, RuntimeError) as e:
            if watch.fired == "stopped" or not alive():
                raise Interrupted("guest session stopped: the stage lost its lease or was cancelled") from None
            if watch.fired == "timeout":
                raise StageFailed(f"guest stage timed out after {timeout:g}s and its appliance was killed; "
                                  f"running then: {e}{session.evidence()}") from None
            if isinstance(e, InputError):
                raise StageFailed(f"guest cannot be converted: {e}") from None
            raise StageFailed(f"a guest fix failed, outputs left as converted: {e}") from None
        finally:
            session.close()
        result = {"inspection": info | facts, "changes": [c.model_dump() for c in changes], "notes": notes,
                  "accel": session.accel.report()}
        if dry_run:
            return result
        if changes:
            if not owns():
                raise Interrupted("lease lost before committing the guest fixes: nothing committed")
            atomic.write_atomic(marker, "committing guest fixes\n")
            for overlay in overlays:
                _qemu_img("commit", "-q", "-f", "qcow2", overlay, tick=alive)
            for path, _ in disks:
                atomic.fsync_path(path)
            os.unlink(marker)
            atomic.fsync_path(vm_dir)
    for hive, text in undo_reg(changes).items():
        atomic.write_atomic(os.path.join(vm_dir, f"undo-{hive}.reg"), text)
    return result | {"outputs": [atomic.identity(path) for path, _ in disks]}
