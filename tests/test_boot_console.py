"""The console classifier on transcripts: pure text, no QEMU."""
from __future__ import annotations

from h2k_tasks.boot_console import classify, clean, dhcp_address, tail

SYSTEMD_START = "[  OK  ] Started systemd-journald.service - Journal Service.\n"

PANIC = """\
[    2.104512] VFS: Cannot open root device "sda1" or unknown-block(0,0): error -6
[    2.105001] Please append a correct "root=" boot option; here are the available partitions:
[    2.106220] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)
[    2.107013] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-50-amd64 #1  Debian 6.1.153-1
"""

INITRAMFS = """\
Gave up waiting for root file system device.  Common problems:
 - Boot args (cat /proc/cmdline)
ALERT!  /dev/sda1 does not exist.  Dropping to a shell!


BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) built-in shell (ash)
Enter 'help' for a list of built-in commands.

(initramfs) """

EMERGENCY = SYSTEMD_START + """\
You are in emergency mode. After logging in, type "journalctl -xb" to view
system logs, "systemctl reboot" to reboot, "systemctl default" or "exit"
to boot into default mode.
Give root password for maintenance
(or press Control-D to continue): """

LOGIN = SYSTEMD_START + """\
Debian GNU/Linux 12 h2k-deb12 ttyS0
IPv4: 10.0.2.15

h2k-deb12 login: """


def test_kernel_panic_transcript_fails_with_the_panic_line():
    v = classify(PANIC)
    assert (v.booted, v.kind) == (False, "kernel-panic")
    assert v.evidence == "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"


def test_initramfs_shell_fails_with_the_alert_line():
    v = classify(INITRAMFS)
    assert (v.booted, v.kind) == (False, "initramfs-shell")
    assert v.evidence == "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!"


def test_a_half_read_failure_line_waits_for_its_end():
    half = INITRAMFS[:INITRAMFS.index("Dropping")]
    assert classify(half) is None  # "Gave up waiting" alone: the ALERT line is on its way
    assert classify(half + "Dropping to a shell!\n").evidence == "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!"
    assert classify(PANIC[:PANIC.index("fs on")]) is None


def test_bare_busybox_prompt_is_an_initramfs_shell():
    assert classify("Begin: Loading essential drivers ... done.\n(initramfs) ").kind == "initramfs-shell"


def test_emergency_mode_fails_even_though_it_asks_for_a_password():
    v = classify(EMERGENCY)
    assert (v.booted, v.kind) == (False, "emergency-shell")
    assert v.evidence.startswith("You are in emergency mode.")


def test_locked_root_emergency_mode_fails():
    text = SYSTEMD_START + "Cannot open access to console, the root account is locked.\n"
    assert classify(text).kind == "emergency-shell"


def test_login_prompt_boots_and_shows_the_dhcp_address():
    v = classify(LOGIN)
    assert (v.booted, v.kind, v.evidence) == (True, "login", "h2k-deb12 login:")
    assert dhcp_address(LOGIN) == "10.0.2.15"


def test_loopback_or_hostname_address_is_not_a_dhcp_lease():
    assert dhcp_address("IPv4: 127.0.1.1\n") is None
    assert dhcp_address("IPv4: 10.0.2.2\n") is None  # QEMU's gateway, not the guest


def test_boot_in_progress_is_undecided():
    assert classify(SYSTEMD_START + "         Starting networking.service - Raise network interfaces...\n") is None
    assert classify("") is None


def test_firmware_without_a_bootable_disk_fails():
    assert classify("Booting from Hard Disk...\nBoot failed: not a bootable disk\n\nNo bootable device.\n").kind \
        == "no-boot-device"
    ovmf = 'BdsDxe: starting Boot0002 "EFI Internal Shell" from Fv(7CB8BDC9)\nShell> '
    assert classify(ovmf).kind == "no-boot-device"
    assert classify("error: no such device: 1234.\ngrub rescue> ").kind == "bootloader-rescue"


def test_clean_strips_terminal_escapes_and_carriage_returns():
    raw = "\x1bc\x1b[?7l\x1b[2J\x1b[0;32m  OK  \x1b[0m] Started\r\n\x1b[=3hBdsDxe: x\r\n"
    assert clean(raw) == "  OK  ] Started\nBdsDxe: x\n"
    assert tail("\n".join(str(i) for i in range(80)), 50)[0] == "30"
