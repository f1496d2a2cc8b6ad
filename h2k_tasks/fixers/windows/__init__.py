"""Make a Windows guest boot on virtio: offline driver injection through its SYSTEM and SOFTWARE hives.

`fix_windows(ctx)` runs, in order: boot_storage (viostor/vioscsi at boot), driver_staging (whole driver
set + DevicePath), crash_control (AutoReboot=0), firstboot (runner service and its scripts).
`undo_reg(changes)` returns the `.reg` texts that revert the registry part (it writes nothing).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from h2k_planner.errors import InputError
from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.windows import boot_storage, crash_control, driver_staging, firstboot
from h2k_tasks.fixers.windows.session import Session
from h2k_tasks.fixers.windows.undo import undo_reg
from h2k_tasks.windows.virtio_win import VirtioWin, boot_choices
from h2k_tasks.inspect_windows import inspect_windows, open_hive

MODULES = (boot_storage, driver_staging, crash_control, firstboot)

__all__ = ["fix_windows", "undo_reg"]


def fix_windows(ctx: FixContext) -> list[Change]:
    """Apply every Windows fix to the guest mounted read-write in `ctx.g`; returns the changes made.

    Facts come from `ctx.inspection["windows"]` (what `inspect_windows` returned) or are read anew.
    Options: `virtio_win` (directory or ISO, required), `firstboot_service_exe` (optional path).
    Raises InputError when the guest cannot be fixed (hibernated, BitLocker on the system volume,
    unsupported version, no usable virtio-win).
    """
    facts = ctx.inspection.get("windows") or inspect_windows(ctx.g, ctx.root)
    if facts["hibernation"]:
        raise InputError(ctx.root, "Windows is hibernated (or Fast Startup is on): changing its disk is unsafe")
    if ctx.root in facts["bitlocker_volumes"]:
        raise InputError(ctx.root, "the Windows system volume is BitLocker-encrypted")
    if facts["generation"] is None:
        raise InputError(ctx.root, f"unsupported Windows version {facts['major']}.{facts['minor']}")
    if not ctx.options.get("virtio_win"):
        raise InputError(None, "option virtio_win (a virtio-win directory or ISO) is required for Windows guests")
    source = VirtioWin(ctx.options["virtio_win"])
    choices = source.choose(facts["generation"], facts["arch"])
    if not boot_choices(choices):
        raise InputError(source.path, f"no viostor or vioscsi build for {facts['generation']} {facts['arch']}")
    with tempfile.TemporaryDirectory(prefix="h2k-windows-") as tmp:
        work = Path(tmp)
        s = Session(
            g=ctx.g, facts=facts, source=source, choices=choices,
            system=open_hive(ctx.g, facts["systemroot"], "SYSTEM", work),
            software=open_hive(ctx.g, facts["systemroot"], "SOFTWARE", work),
            options=ctx.options, vm=ctx.vm, work=work,
        )
        for module in MODULES:
            module.fix(s)
        s.system.save()
        s.software.save()
    ctx.log.extend(s.log)
    return s.changes
