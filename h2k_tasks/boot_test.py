"""Boot the machine a migrated VM ships as under QEMU, as KVM will, and watch the serial console for
proof the OS came up.

The machine (h2k_tasks/machine.py) is the one its libvirt domain describes: firmware (SeaBIOS or
OVMF), disks in their boot order on their bus at their PCI addresses, virtio-net NICs with their
MACs (here on QEMU user networking, whose DHCP server hands out 10.0.2.15), the guest-agent port,
RNG, balloon and USB. The output disks are never written: each gets a throwaway qcow2 overlay. The
serial console is written to a file that is read as it grows. The guest may reboot on its way up
(MAX_REBOOTS times), as it would under libvirt (`on_reboot: restart`). QEMU runs in its own process group and is always killed at the end, and
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
from typing import Callable

from pydantic import BaseModel

from h2k_planner.errors import InputError
from h2k_tasks import atomic, boot_console, qemu_img
from h2k_tasks.accel import Accel, Hypervisor, host_accel, remember, tcg_instead
from h2k_tasks.machine import VIDEO_SLOT, Machine, port_address
from h2k_tasks.outputs.libvirt import GUEST_AGENT
from h2k_tasks.process import kill_group

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
POLL_SECONDS = 0.5
SCRATCH_PREFIX = ".h2k-boot-g"  # + the lease generation of the attempt
_MAX_DISKS = {"sata": 6}
# An SELinux relabel, a kdump or cloud-init setup may reboot a guest on its way up; more than this is a loop.
MAX_REBOOTS = 3
Cancel = Callable[[], bool] | threading.Event


class BootResult(BaseModel):
    booted: bool
    verdict: str  # login, kernel-panic, initramfs-shell, emergency-shell, bootloader-rescue,
    #               no-boot-device, reboot-loop, timeout, qemu-exited, cancelled
    #               (and, under KVM only, no-sign-of-life: nothing on the console, see below)
    reason: str  # one line for the report, with the console evidence
    seconds: float  # from QEMU start to the verdict
    seconds_to_login: float | None = None
    reboots: int = 0  # the guest's own resets on its way up (tolerated up to MAX_REBOOTS)
    dhcp_address: str | None = None  # the QEMU DHCP address the guest printed, proof its network came up
    console_tail: list[str]  # last 50 console lines
    accel: str
    accel_reason: str


def boot_test(
    machine: Machine,
    timeout: float = 600.0,
    cancel: Cancel | None = None,
    *,
    console_log: str | None = None,
    accel: Accel | None = None,
    workdir: str | None = None,
    hv: Hypervisor = Hypervisor(),
    gen: int = 0,
) -> BootResult:
    """Boot `machine` (h2k_tasks/machine.py) on throwaway overlays of its disks; return as soon as a
    verdict is seen.

    `cancel` is an Event or a callable polled twice a second; `console_log`, if given, keeps the
    whole serial console there. The scratch directory, in `workdir` (default: the system's temp
    directory), is named by `gen`, the caller's lease generation: those of older generations there
    (attempts whose lease is gone) are removed.
    `accel` (default: the host's verdict for `hv`) is the accelerator to boot under.

    Under KVM, a QEMU that prints nothing on the console (the firmware always does, at once) within
    `hv.kvm_deadline`, or ends before printing anything, is killed and the boot retried once under
    TCG; when the firmware does speak under TCG, the host's verdict switches to TCG.
    """
    if not machine.disks:
        raise ValueError("boot_test needs at least one disk")
    if len(machine.disks) > _MAX_DISKS.get(machine.bus, len(machine.disks)):
        raise ValueError(f"the {machine.bus} bus takes at most {_MAX_DISKS[machine.bus]} disks")
    accel = accel or host_accel(hv)
    if workdir:
        for dead in atomic.dead_attempts(workdir, SCRATCH_PREFIX, gen):
            shutil.rmtree(dead, ignore_errors=True)

    def boot(accel: Accel) -> BootResult:
        return _boot_once(machine, timeout, cancel, console_log, accel, workdir, gen, hv,
                          hv.kvm_deadline if accel.name == "kvm" else None)

    result = boot(accel)
    if result.verdict != "no-sign-of-life":
        return result
    tcg = tcg_instead(f"a boot test {result.reason}")
    retry = boot(tcg)
    if retry.console_tail:  # the firmware ran under TCG: KVM was at fault
        remember(hv, tcg)
    return retry


def qemu_args(m: Machine, overlays: list[str], tmp: str, console: str) -> list[str]:
    """The QEMU command line (after the binary and the accelerator) for machine `m`, its disks read from
    `overlays`: the devices, addresses and boot order of its libvirt domain (h2k_tasks/outputs/libvirt.py),
    with QEMU user networking for the NICs, the serial console written to `console`, the guest-agent
    port on a null backend, no display, and QMP on stdio (for the guest's resets). `tmp` holds the
    firmware's files."""
    args = ["-machine", "q35", "-m", str(m.memory_mib), "-smp", str(m.cpus), "-nodefaults", "-no-user-config",
            "-display", "none", "-qmp", "stdio", "-serial", f"file:{console}",
            *_firmware_args(m.firmware.value, tmp),
            "-device", f"virtio-vga,bus=pcie.0,addr={VIDEO_SLOT:#x}.0x0"]
    if m.windows:
        args += ["-rtc", "base=localtime"]
    for port in range(1, len(m.nics) + len(m.ports) + 1):
        slot, function = port_address(port)
        args += ["-device", f"pcie-root-port,id=pci.{port},bus=pcie.0,chassis={port},addr={slot:#x}.{function:#x}"
                 + (",multifunction=on" if function == 0 else "")]
    if m.bus == "scsi":
        args += ["-device", f"virtio-scsi-pci,id=scsi0,bus=pci.{m.ports['scsi']},addr=0x0"]
    for n, (d, path) in enumerate(zip(m.disks, overlays)):
        args += ["-drive", f"if=none,id=disk{n},file={path},format=qcow2,cache=unsafe"]
        if m.bus == "virtio":
            device = f"virtio-blk-pci,bus=pci.{m.ports[f'disk{n}']},addr=0x0"
        elif m.bus == "sata":
            device = f"ide-hd,bus=ide.{d.unit}"
        else:
            device = f"scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun={d.unit}"
        args += ["-device", f"{device},drive=disk{n},bootindex={d.boot_order}"]
    args += ["-device", f"virtio-serial-pci,id=virtio-serial0,bus=pci.{m.ports['serial']},addr=0x0",
             "-chardev", "null,id=agent",
             "-device", f"virtserialport,bus=virtio-serial0.0,chardev=agent,name={GUEST_AGENT}",
             "-object", "rng-random,id=rng0,filename=/dev/urandom",
             "-device", f"virtio-rng-pci,rng=rng0,bus=pci.{m.ports['rng']},addr=0x0",
             "-device", f"virtio-balloon-pci,bus=pci.{m.ports['balloon']},addr=0x0",
             "-device", f"qemu-xhci,id=usb,bus=pci.{m.ports['usb']},addr=0x0", "-device", "usb-tablet,bus=usb.0"]
    for n, nic in enumerate(m.nics):
        args += ["-netdev", f"user,id=net{n}",
                 "-device", f"virtio-net-pci,netdev=net{n},bus=pci.{nic.port},addr=0x0"
                 + (f",mac={nic.mac}" if nic.mac else "")]
    return args


def _boot_once(m: Machine, timeout: float, cancel: Cancel | None, console_log: str | None, accel: Accel,
               workdir: str | None, gen: int, hv: Hypervisor, sign_of_life: float | None) -> BootResult:
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{gen}-", dir=workdir) as tmp:
        overlays = [_overlay(d.path, d.format, os.path.join(tmp, f"disk{i}.qcow2")) for i, d in enumerate(m.disks)]
        console = console_log or os.path.join(tmp, "console.log")
        open(console, "wb").close()
        # setpriv: the kernel kills QEMU too if this worker dies without reaching `finally`.
        cmd = ["setpriv", "--pdeathsig", "KILL", "--", hv.path(), *accel.qemu_args, *qemu_args(m, overlays, tmp, console)]
        errfile = os.path.join(tmp, "qemu.err")
        with open(errfile, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    start_new_session=True, text=True)
        try:
            resets = _Resets(proc)
            return _watch(proc, console, errfile, timeout, cancel, accel, sign_of_life, resets)
        finally:
            kill_group(proc)


class _Resets:
    """Counts the guest's own reboots from QEMU's QMP RESET events on its stdout. One reboot may show
    as several resets (SeaBIOS answers a reset by resetting the machine once more): resets within
    SAME_REBOOT seconds of the last one counted count with it."""

    SAME_REBOOT = 1.0

    def __init__(self, proc: subprocess.Popen):
        self.count = 0
        self._last = float("-inf")
        proc.stdin.write('{"execute": "qmp_capabilities"}\n')
        proc.stdin.flush()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") != "RESET" or not event.get("data", {}).get("guest"):
                continue
            stamp = event.get("timestamp", {})
            at = stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6
            if at - self._last > self.SAME_REBOOT:
                self.count += 1
                self._last = at


def _watch(proc: subprocess.Popen, console: str, errfile: str, timeout: float,
           cancel: Cancel | None, accel: Accel, sign_of_life: float | None, resets: _Resets) -> BootResult:
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
                    seconds_to_login=elapsed if booted else None, reboots=resets.count,
                    dhcp_address=boot_console.dhcp_address(text),
                    console_tail=boot_console.tail(text), accel=accel.name, accel_reason=accel.reason)

            if verdict is not None:
                reason = (f"reached a login prompt after {elapsed:g} s" if verdict.booted
                          else f"{verdict.kind}: {verdict.evidence}")
                if verdict.booted and resets.count:
                    reason += f" and {resets.count} reboot(s) of its own"
                return result(verdict.booted, verdict.kind, reason)
            if resets.count > MAX_REBOOTS:
                return result(False, "reboot-loop", f"reboot-loop: the guest rebooted {resets.count} times "
                                                    f"without reaching a login prompt")
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


def _overlay(disk: str, fmt: str, path: str) -> str:
    """A qcow2 overlay on `disk`, read as `fmt` (the format its domain declares)."""
    disk = os.path.abspath(disk)
    if not os.path.isfile(disk):
        raise InputError(disk, "disk to boot does not exist")
    try:
        made = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", disk, path],
                              capture_output=True, text=True, timeout=qemu_img.INFO_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise InputError(disk, f"qemu-img create did not answer within {e.timeout:g}s") from None
    if made.returncode != 0:
        raise InputError(disk, f"qemu-img cannot read it as {fmt}: {made.stderr.strip()}")
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
