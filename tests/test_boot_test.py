"""Real boots under QEMU: the VMware-like Debian guest fails on virtio and boots on SATA, unfixed."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from h2k_planner.errors import InputError
from h2k_tasks.accel import host_accel
from h2k_tasks.boot_test import MAX_REBOOTS, boot_test
from h2k_tasks.machine import plain
from tests.builders.debian_guest import build_debian_guest
from tests.support import processes_with

BOOT_TIMEOUT = 420
# The first test to use the guest builds it when this machine's cache is cold: about 10 minutes.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def guest():
    return build_debian_guest()


def _fingerprint(path: str) -> tuple[int, int, str]:
    st = os.stat(path)
    with open(path, "rb") as f:
        return st.st_size, st.st_mtime_ns, hashlib.file_digest(f, "sha256").hexdigest()


def _qemu_running_with(console: str) -> bool:
    """Whether a QEMU writing its serial console to `console` is running."""
    return bool(processes_with(f"file:{console}"))


def _boot_sector_disk(path: str, code: bytes) -> str:
    with open(path, "wb") as f:
        f.write(code.ljust(510, b"\0") + b"\x55\xaa" + bytes(1024 * 1024 - 512))
    return path


def test_guest_is_a_vmdk_whose_initramfs_has_no_virtio(guest):
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", guest.vmdk],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == guest.virtual_size
    assert guest.mac.startswith("00:50:56:") and guest.interface == "ens192"
    assert guest.root_device == "/dev/sda1"
    assert {"ahci", "ata_piix", "vmw_pvscsi", "ext4"} <= set(guest.initramfs_modules)
    assert not [m for m in guest.initramfs_modules if "virtio" in m]


@pytest.mark.slow
def test_unfixed_guest_on_virtio_drops_to_the_initramfs_shell(guest, tmp_path):
    before = _fingerprint(guest.vmdk)
    result = boot_test(plain([(guest.vmdk, "vmdk")], mac=guest.mac), BOOT_TIMEOUT, console_log=str(tmp_path / "console"))
    assert not result.booted
    assert result.verdict == "initramfs-shell", result.console_tail
    assert result.reason == "initramfs-shell: ALERT!  /dev/sda1 does not exist.  Dropping to a shell!"
    assert result.seconds_to_login is None and result.seconds < BOOT_TIMEOUT
    assert any("Gave up waiting for root file system device" in ln for ln in result.console_tail)
    assert 0 < len(result.console_tail) <= 50
    assert result.accel == host_accel().name
    assert _fingerprint(guest.vmdk) == before, "the boot test wrote to the disk it validated"


@pytest.mark.slow
def test_unfixed_guest_on_sata_like_vmware_reaches_login_with_dhcp(guest):
    result = boot_test(plain([(guest.vmdk, "vmdk")], bus="sata", mac=guest.mac), BOOT_TIMEOUT)
    assert result.booted, result.reason + "\n" + "\n".join(result.console_tail)
    assert result.verdict == "login" and result.seconds_to_login == result.seconds > 0
    assert result.console_tail[-1].startswith(f"{guest.hostname} login:")
    assert result.dhcp_address == "10.0.2.15"


def test_cancel_stops_the_boot_and_kills_qemu(guest, tmp_path):
    console = str(tmp_path / "cancelled-console")
    cancel = threading.Event()
    threading.Timer(3, cancel.set).start()
    result = boot_test(plain([(guest.vmdk, "vmdk")]), BOOT_TIMEOUT, cancel=cancel, console_log=console)
    assert (result.booted, result.verdict) == (False, "cancelled")
    assert result.seconds < 10
    assert not _qemu_running_with(console)


def test_guest_code_that_never_boots_times_out(tmp_path):
    disk = _boot_sector_disk(str(tmp_path / "spin.img"), bytes([0xEB, 0xFE]))  # jmp $
    result = boot_test(plain([(disk, "raw")]), timeout=4, cancel=lambda: False)
    assert (result.booted, result.verdict) == (False, "timeout")
    assert result.reason.startswith("timeout: no login prompt within 4 s; last line: ")


def test_blank_disk_fails_with_no_boot_device_under_seabios_and_ovmf(tmp_path):
    disk = str(tmp_path / "blank.img")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", disk, "16M"], check=True)
    bios = boot_test(plain([(disk, "raw")]), timeout=60)
    assert bios.verdict == "no-boot-device" and bios.reason == "no-boot-device: No bootable device."
    efi = boot_test(plain([(disk, "raw")], "efi"), timeout=120)
    assert efi.verdict == "no-boot-device", efi.console_tail
    assert any("BdsDxe" in ln for ln in efi.console_tail)


def test_missing_disk_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="disk to boot does not exist"):
        boot_test(plain([(str(tmp_path / "nope.vmdk"), "vmdk")]), timeout=5)


# cli; lidt [0x7c10] (a zero-limit IDT); int3 -> triple fault: the machine resets, again and again.
RESET_CODE = bytes([0xFA, 0x0F, 0x01, 0x1E, 0x10, 0x7C, 0xCC])


def _reboot_once_code() -> bytes:
    """Resets the machine the first time (leaving a mark at 9000:0000, which a reset keeps), then
    prints a login prompt on the serial port: a guest that reboots itself once on its way up."""
    msg = b"\r\nrebooted-once login: \0"
    head = bytes([0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xB8, 0x00, 0x90, 0x8E, 0xC0,  # cli; ds=0; es=0x9000
                  0x26, 0x80, 0x3E, 0x00, 0x00, 0x5A])  # cmp byte [es:0], 0x5a
    reset = bytes([0x26, 0xC6, 0x06, 0x00, 0x00, 0x5A, 0x0F, 0x01, 0x1E, 0, 0, 0xCC])  # mark; lidt [idt]; int3
    body_start = len(head) + 2 + len(reset)
    printer = bytes([0xBE, 0, 0, 0xBA, 0xF8, 0x03,  # mov si, msg; mov dx, 0x3f8
                     0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,  # lodsb; test al,al; jz +3; out dx,al; jmp -8
                     0xF4, 0xEB, 0xFD])  # hlt; jmp -3
    idt = 0x7C00 + body_start + len(printer)
    text = idt + 6
    reset = reset[:9] + idt.to_bytes(2, "little") + reset[11:]
    printer = printer[:1] + text.to_bytes(2, "little") + printer[3:]
    return head + bytes([0x74, len(reset)]) + reset + printer + bytes(6) + msg


def test_guest_that_keeps_resetting_is_a_reboot_loop(tmp_path):
    disk = _boot_sector_disk(str(tmp_path / "reset.img"), RESET_CODE)
    result = boot_test(plain([(disk, "raw")]), timeout=60)
    assert (result.booted, result.verdict) == (False, "reboot-loop"), result
    assert result.reboots == MAX_REBOOTS + 1
    assert result.reason == f"reboot-loop: the guest rebooted {MAX_REBOOTS + 1} times without reaching a login prompt"


def test_guest_that_reboots_itself_once_still_boots(tmp_path):
    disk = _boot_sector_disk(str(tmp_path / "once.img"), _reboot_once_code())
    result = boot_test(plain([(disk, "raw")]), timeout=60)
    assert (result.booted, result.verdict, result.reboots) == (True, "login", 1), result
    assert result.reason.endswith(" and 1 reboot(s) of its own")


def test_qemu_dies_with_a_worker_that_is_killed_outright(guest, tmp_path):
    console = str(tmp_path / "orphan-console")
    script = ("import sys; from h2k_tasks.boot_test import boot_test; from h2k_tasks.machine import plain; "
              "boot_test(plain([(sys.argv[1], 'vmdk')]), 600, console_log=sys.argv[2], workdir=sys.argv[3], gen=1)")
    worker = subprocess.Popen([sys.executable, "-c", script, guest.vmdk, console, str(tmp_path)],
                              env=os.environ | {"TMPDIR": str(tmp_path)})  # what else it leaves stays here
    deadline = time.monotonic() + 30
    while not _qemu_running_with(console):
        assert time.monotonic() < deadline and worker.poll() is None, "QEMU never started"
        time.sleep(0.2)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while _qemu_running_with(console) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _qemu_running_with(console)
    [left] = glob.glob(str(tmp_path / ".h2k-boot-g1-*"))  # the killed worker's overlays (lease generation 1)
    newer = tmp_path / ".h2k-boot-g3-live"  # a later attempt's, whose lease is not gone: kept
    newer.mkdir()
    disk = _boot_sector_disk(str(tmp_path / "reset.img"), RESET_CODE)
    assert boot_test(plain([(disk, "raw")]), timeout=30, workdir=str(tmp_path), gen=2).verdict == "reboot-loop"
    assert not os.path.exists(left) and glob.glob(str(tmp_path / ".h2k-boot-*")) == [str(newer)]
