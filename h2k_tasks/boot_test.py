"""Boot the migrated disks under QEMU, as KVM will, and watch the serial console for proof the OS came up.

The output disks are never written: each gets a throwaway qcow2 overlay. The guest sees virtio-blk
disks (or another bus, to compare), a virtio-net NIC on QEMU user networking (whose DHCP server
hands out 10.0.2.15), its own firmware (SeaBIOS or OVMF), and a serial console written to a file
that is read as it grows. QEMU runs in its own process group and is always killed at the end, and
with a parent-death signal, so a worker killed outright does not leave it running. The overlays
live in a scratch directory under `workdir` (the validate stage gives the VM's output directory);
one that a killed worker left there is removed by the next boot test.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from typing import Callable, Literal

from pydantic import BaseModel

from h2k_planner.errors import InputError
from h2k_tasks import atomic, boot_console, qemu_img
from h2k_tasks.accel import Accel, Hypervisor, host_accel, remember, tcg_instead
from h2k_tasks.process import kill_group

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
POLL_SECONDS = 0.5
SCRATCH_PREFIX = ".h2k-boot-g"  # + the lease generation of the attempt
Bus = Literal["virtio", "sata", "ide"]
_MAX_DISKS = {"sata": 6, "ide": 4}
Cancel = Callable[[], bool] | threading.Event


class BootResult(BaseModel):
    booted: bool
    verdict: str  # login, kernel-panic, initramfs-shell, emergency-shell, bootloader-rescue,
    #               no-boot-device, timeout, qemu-exited, cancelled
    #               (and, under KVM only, no-sign-of-life: nothing on the console, see below)
    reason: str  # one line for the report, with the console evidence
    seconds: float  # from QEMU start to the verdict
    seconds_to_login: float | None = None
    dhcp_address: str | None = None  # the QEMU DHCP address the guest printed, proof its network came up
    console_tail: list[str]  # last 50 console lines
    accel: str
    accel_reason: str


def boot_test(
    disks: list[str],
    firmware: Literal["bios", "efi"] = "bios",
    timeout: float = 600.0,
    cancel: Cancel | None = None,
    *,
    bus: Bus = "virtio",
    mac: str | None = None,
    memory_mib: int = 1024,
    cpus: int = 1,
    console_log: str | None = None,
    accel: Accel | None = None,
    workdir: str | None = None,
    hv: Hypervisor = Hypervisor(),
    gen: int = 0,
) -> BootResult:
    """Boot `disks` (first one boots) on throwaway overlays; return as soon as a verdict is seen.

    `cancel` is an Event or a callable polled twice a second; `console_log`, if given, keeps the
    whole serial console there. The scratch directory, in `workdir` (default: the system's temp
    directory), is named by `gen`, the caller's lease generation: those of older generations there
    (attempts whose lease is gone) are removed.
    `accel` (default: the host's verdict for `hv`) is the accelerator to boot under.

    Under KVM, a QEMU that prints nothing on the console (the firmware always does, at once) within
    `hv.kvm_deadline`, or ends before printing anything, is killed and the boot retried once under
    TCG; when the firmware does speak under TCG, the host's verdict switches to TCG.
    """
    if not disks:
        raise ValueError("boot_test needs at least one disk")
    if len(disks) > _MAX_DISKS.get(bus, len(disks)):
        raise ValueError(f"the {bus} bus takes at most {_MAX_DISKS[bus]} disks")
    accel = accel or host_accel(hv)
    if workdir:
        for dead in atomic.dead_attempts(workdir, SCRATCH_PREFIX, gen):
            shutil.rmtree(dead, ignore_errors=True)

    def boot(accel: Accel) -> BootResult:
        return _boot_once(disks, firmware, timeout, cancel, bus, mac, memory_mib, cpus, console_log, accel,
                          workdir, gen, hv, hv.kvm_deadline if accel.name == "kvm" else None)

    result = boot(accel)
    if result.verdict != "no-sign-of-life":
        return result
    tcg = tcg_instead(f"a boot test {result.reason}")
    retry = boot(tcg)
    if retry.console_tail:  # the firmware ran under TCG: KVM was at fault
        remember(hv, tcg)
    return retry


def _boot_once(disks: list[str], firmware: str, timeout: float, cancel: Cancel | None, bus: Bus, mac: str | None,
               memory_mib: int, cpus: int, console_log: str | None, accel: Accel, workdir: str | None,
               gen: int, hv: Hypervisor, sign_of_life: float | None) -> BootResult:
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{gen}-", dir=workdir) as tmp:
        overlays = [_overlay(disk, os.path.join(tmp, f"disk{i}.qcow2")) for i, disk in enumerate(disks)]
        console = console_log or os.path.join(tmp, "console.log")
        open(console, "wb").close()
        # setpriv: the kernel kills QEMU too if this worker dies without reaching `finally`.
        # q35 with the NIC behind a PCIe root port, as in the libvirt domain we emit, so the guest
        # names its NIC as it will on the target (enp1s0).
        cmd = ["setpriv", "--pdeathsig", "KILL", "--", hv.path(), *accel.qemu_args, "-machine", "q35",
               "-m", str(memory_mib), "-smp", str(cpus),
               "-nodefaults", "-no-user-config", "-display", "none", "-vga", "std", "-no-reboot",
               "-monitor", "none", "-serial", f"file:{console}",
               *_firmware_args(firmware, tmp), *_disk_args(overlays, bus),
               "-netdev", "user,id=net0", "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1",
               "-device", "virtio-net-pci,netdev=net0,bus=rp1" + (f",mac={mac}" if mac else "")]
        errfile = os.path.join(tmp, "qemu.err")
        with open(errfile, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        try:
            return _watch(proc, console, errfile, timeout, cancel, accel, sign_of_life)
        finally:
            kill_group(proc)


def _watch(proc: subprocess.Popen, console: str, errfile: str, timeout: float,
           cancel: Cancel | None, accel: Accel, sign_of_life: float | None) -> BootResult:
    start = time.monotonic()
    raw = bytearray()
    with open(console, "rb") as f:
        while True:
            exited = proc.poll() is not None  # before reading, so its last output is read too
            raw += f.read()
            text = boot_console.clean(raw.decode("utf-8", "replace"))
            elapsed = round(time.monotonic() - start, 1)
            verdict = boot_console.classify(text)

            def result(booted: bool, kind: str, reason: str) -> BootResult:
                return BootResult(
                    booted=booted, verdict=kind, reason=reason, seconds=elapsed,
                    seconds_to_login=elapsed if booted else None,
                    dhcp_address=boot_console.dhcp_address(text),
                    console_tail=boot_console.tail(text), accel=accel.name, accel_reason=accel.reason)

            if verdict is not None:
                reason = (f"reached a login prompt after {elapsed:g} s" if verdict.booted
                          else f"{verdict.kind}: {verdict.evidence}")
                return result(verdict.booted, verdict.kind, reason)
            if sign_of_life is not None and not raw and (exited or elapsed >= sign_of_life):
                how = f"QEMU ended with status {proc.returncode}" if exited else f"{sign_of_life:g} s passed"
                return result(False, "no-sign-of-life", f"showed no console output under KVM ({how}): "
                                                        f"{_last_line(errfile)}")
            if exited:
                return result(False, "qemu-exited",
                              f"QEMU exited with status {proc.returncode} before a verdict: {_last_line(errfile)}")
            if _cancelled(cancel):
                return result(False, "cancelled", "cancelled by the caller")
            if elapsed >= timeout:
                last = next((ln for ln in reversed(boot_console.tail(text)) if ln.strip()), "no console output")
                return result(False, "timeout", f"timeout: no login prompt within {timeout:g} s; last line: {last}")
            time.sleep(POLL_SECONDS)


def _overlay(disk: str, path: str) -> str:
    disk = os.path.abspath(disk)
    if not os.path.isfile(disk):
        raise InputError(disk, "disk to boot does not exist")
    try:
        info = subprocess.run(["qemu-img", "info", "--output=json", disk], capture_output=True, text=True,
                              timeout=qemu_img.INFO_TIMEOUT)
        if info.returncode != 0:
            raise InputError(disk, f"qemu-img cannot read it: {info.stderr.strip()}")
        fmt = json.loads(info.stdout)["format"]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", disk, path],
                       check=True, capture_output=True, timeout=qemu_img.INFO_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise InputError(disk, f"{' '.join(e.cmd[:2])} did not answer within {e.timeout:g}s") from None
    return path


def _firmware_args(firmware: str, tmp: str) -> list[str]:
    if firmware == "bios":
        # SeaBIOS mirrors its own and the boot loader's text output to this serial port.
        port = os.path.join(tmp, "sercon-port")
        with open(port, "wb") as f:
            f.write(struct.pack("<H", 0x3F8))
        return ["-fw_cfg", f"name=etc/sercon-port,file={port}"]
    if firmware == "efi":
        vars_copy = os.path.join(tmp, "OVMF_VARS.fd")
        shutil.copyfile(OVMF_VARS, vars_copy)
        return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    raise ValueError(f"unknown firmware {firmware!r}: expected 'bios' or 'efi'")


def _disk_args(overlays: list[str], bus: Bus) -> list[str]:
    args: list[str] = ["-device", "ahci,id=ahci"] if bus == "sata" else []
    for i, path in enumerate(overlays):
        args += ["-drive", f"if=none,id=disk{i},file={path},format=qcow2,cache=unsafe"]
        if bus == "virtio":
            device = f"virtio-blk-pci,drive=disk{i}"
        elif bus == "sata":
            device = f"ide-hd,drive=disk{i},bus=ahci.{i}"
        elif bus == "ide":
            device = f"ide-hd,drive=disk{i},bus=ide.{i // 2},unit={i % 2}"
        else:
            raise ValueError(f"unknown disk bus {bus!r}")
        args += ["-device", f"{device},bootindex={i}"]
    return args


def _cancelled(cancel: Cancel | None) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def _last_line(path: str) -> str:
    """QEMU's last message that is not a warning (the sercon-port fw_cfg name always draws one)."""
    with open(path, errors="replace") as f:
        lines = [ln.strip() for ln in f if ln.strip() and ": warning: " not in ln]
    return lines[-1] if lines else "no message"
