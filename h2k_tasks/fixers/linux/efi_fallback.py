"""The UEFI fallback loader: `EFI/BOOT/BOOTX64.EFI` on the ESP, copied from the distro's own loader.

A VMware UEFI VM boots from an NVRAM entry naming `\\EFI\\<vendor>\\shimx64.efi`; KVM's fresh OVMF
variables have no such entry and try only the removable-media path `\\EFI\\BOOT\\BOOTX64.EFI`. So a
guest that ships UEFI (the firmware the guest stage found, see h2k_tasks/firmware.py) and has no
fallback loader gets the vendor's `shimx64.efi` (else `grubx64.efi`) there; with shim, its
`grubx64.efi` goes beside it, since shim loads GRUB from its own directory.
"""
from __future__ import annotations

from h2k_planner.models import Firmware
from h2k_tasks.fixers import Change, FixContext

FIXER = "linux.efi_fallback"
ESP_MOUNTS = ["/boot/efi", "/efi", "/boot"]  # where distros mount the ESP, most common first


def _esp_efi_dir(g) -> str | None:
    for mount in ESP_MOUNTS:
        if g.is_dir(f"{mount}/EFI"):
            return g.case_sensitive_path(f"{mount}/EFI")
    return None


def fix(ctx: FixContext) -> list[Change]:
    g = ctx.g
    esp = _esp_efi_dir(g) if getattr(ctx.vm, "firmware", None) == Firmware.efi else None
    if esp is None:
        return []
    names = {n.lower(): n for n in g.ls(esp)}
    boot = f"{esp}/{names.get('boot', 'BOOT')}"
    if g.is_dir(boot) and any(n.lower() == "bootx64.efi" for n in g.ls(boot)):
        return []
    for vendor in sorted(set(names) - {"boot"}):
        if not g.is_dir(f"{esp}/{names[vendor]}"):
            continue
        files = {n.lower(): n for n in g.ls(f"{esp}/{names[vendor]}")}
        loader = files.get("shimx64.efi") or files.get("grubx64.efi")
        if loader:
            break
    else:
        ctx.log.append(f"{FIXER}: UEFI guest has no shimx64.efi or grubx64.efi on {esp} to use as the fallback loader")
        return []
    src = f"{esp}/{names[vendor]}"
    g.mkdir_p(boot)
    copies = [(loader, "BOOTX64.EFI")] + ([(files["grubx64.efi"], "grubx64.efi")]
                                          if loader.lower() == "shimx64.efi" and "grubx64.efi" in files else [])
    for name, target in copies:
        g.cp(f"{src}/{name}", f"{boot}/{target}")
    return [Change(fixer=FIXER, kind="file", path=f"{boot}/{target}", summary="UEFI fallback boot loader",
                   diff=f"copied from {src}/{name}") for name, target in copies]
