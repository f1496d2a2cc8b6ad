"""Offline fixes that make a Linux guest from VMware/Hyper-V boot on KVM with virtio.

`fix_linux(ctx)` runs them in order: block device names first (the initramfs and GRUB config are
generated from fstab and /etc/default/grub), then hypervisor tools (their removal may trigger
an initramfs rebuild hook we then supersede), the initramfs drivers, the bootloader, the UEFI
fallback loader, the network, and last the SELinux relabel mark, which depends on whether anything else changed.
"""
from __future__ import annotations

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.linux import blockdev, bootloader, efi_fallback, initramfs, network, selinux, tools

ORDER = [blockdev, tools, initramfs, bootloader, efi_fallback, network]


def fix_linux(ctx: FixContext) -> list[Change]:
    """Run every Linux fixer on the mounted guest; return all changes (a second run returns [])."""
    changes: list[Change] = []
    for fixer in ORDER:
        changes += fixer.fix(ctx)
    return changes + selinux.fix(ctx, changes)
