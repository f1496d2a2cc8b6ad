"""Real parts for the suite: redis-server and `h2k worker` processes, and the `h2k` command line."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import redis

from h2k_tasks import boot_console
from h2k_tasks.accel import host_accel
from h2k_tasks.boot_test import OVMF_CODE, OVMF_VARS
from h2k_tasks.process import child_of_this_process, kill_group
from h2k_tasks.settings import Settings
from tests.builders.vmware import write_vmx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class RedisServer:
    directory: str
    aof: bool = True
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.directory, "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> "RedisServer":
        cmd = ["redis-server", "--port", "0", "--unixsocket", self.socket, "--dir", self.directory,
               "--save", "", "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
               "--logfile", os.path.join(self.directory, "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=child_of_this_process())
        client = self.client()
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                return self
            except (redis.ConnectionError, FileNotFoundError):
                assert time.time() < deadline and self.proc.poll() is None, "redis-server did not start"
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, decode_responses=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def suite_settings(broker_url: str, host: str = "local", **changes) -> Settings:
    """Settings for the suite: short leases and backoff so crash tests run in seconds."""
    base = dict(broker_url=broker_url, host=host, concurrency=2, lease_ttl=4, retry_backoff=1,
                task_time_limit=3600, visibility_timeout=7200)
    return Settings(**(base | changes))


@dataclass
class Workers:
    log_dir: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, settings: Settings, wrap: tuple[str, ...] = ()) -> subprocess.Popen:
        """`wrap`: a command the worker is exec'd from (it must exec, so the worker keeps its pid)."""
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": ROOT}
        log = open(os.path.join(self.log_dir, f"worker-{settings.host}-{len(self.procs)}.log"), "ab")
        proc = subprocess.Popen([*wrap, sys.executable, "-m", "conductor", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_of_this_process())
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Kill the worker and everything it started (its process group), as a host crash would."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(proc)


def h2k(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `h2k` command line."""
    return subprocess.run([sys.executable, "-m", "conductor", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` until it returns something true; fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def processes_with(*needles: str) -> list[str]:
    """The command lines of live processes that hold every one of `needles`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            found.append(f"{pid}: {cmdline}")
    return found


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(path: str, fmt: str, chunk: int = 1 << 20, group: int = 16 << 20) -> str:
    """The guest-visible content digest of an image, computed apart from the product: the image
    converted to raw by qemu-img, every chunk of it hashed (zeroes too), chunk digests into group
    digests into the content digest (the definition in h2k_tasks/copier.py)."""
    with tempfile.TemporaryDirectory() as d:
        raw = os.path.join(d, "content.raw")
        subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", path, raw], check=True)
        groups, h = [], hashlib.sha256()
        with open(raw, "rb") as f:
            offset = 0
            while block := f.read(chunk):
                h.update(hashlib.sha256(block).digest())
                offset += len(block)
                if offset % group == 0:
                    groups.append(h.digest())
                    h = hashlib.sha256()
            if offset % group:
                groups.append(h.digest())
    return hashlib.sha256(b"".join(groups)).hexdigest()


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def vmx_of_disks(src: str, name: str, vmdks: list[str], mac: str, **vmx) -> str:
    """`src/<name>.vmx` (write_vmx with `vmx`, 1 GiB of memory) for the disk files `vmdks` on scsi0:0,
    scsi0:1, ..., each linked (or copied) into `src` as <name>.vmdk, <name>_1.vmdk, ...; its path."""
    os.makedirs(src, exist_ok=True)
    entries = []
    for unit, vmdk in enumerate(vmdks):
        disk = f"{name}_{unit}.vmdk" if unit else f"{name}.vmdk"
        if not os.path.exists(os.path.join(src, disk)):
            link_or_copy(vmdk, os.path.join(src, disk))
        entries.append(("scsi", 0, unit, disk))
    path = os.path.join(src, f"{name}.vmx")
    write_vmx(path, name, entries, mac, memsize=1024, **vmx)
    return path


def migrate_vmx(tmp, name: str, vmdks: list[str], mac: str, **vmx) -> dict:
    """`h2k migrate` with its defaults of the VM vmx_of_disks() makes in `tmp/src`, into `tmp/out`; its
    report, once the command succeeded."""
    vmx_path = vmx_of_disks(str(tmp / "src"), name, vmdks, mac, **vmx)
    res = h2k("migrate", vmx_path, "-o", str(tmp / "out"), "--json", timeout=2400)
    report = json.load(open(tmp / "out" / name / "report.json"))
    assert res.returncode == 0, (res.stderr, report["errors"])
    return report


def boot_on_qemu_defaults(disks: list[str], work, timeout: float, firmware: str = "bios", boot: int = 0) -> str:
    """Boot qcow2 `disks` (on overlays in new directory `work`) the way a plain QEMU command line would
    place them: the `pc` machine, the disks (`disks[boot]` with bootindex 1) and a virtio NIC with a new
    MAC in QEMU's default PCI slots (the NIC after the disks); the serial console's text once it shows a
    verdict (or at `timeout`)."""
    work.mkdir()
    console = work / "console.log"
    drives = []
    for n, disk in enumerate(disks):
        overlay = work / f"overlay{n}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, str(overlay)],
                       check=True)
        drives += ["-drive", f"file={overlay},format=qcow2,if=none,id=d{n}",
                   "-device", f"virtio-blk-pci,drive=d{n}" + (",bootindex=1" if n == boot else "")]
    pflash = []
    if firmware == "efi":
        shutil.copyfile(OVMF_VARS, work / "vars.fd")
        pflash = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                  "-drive", f"if=pflash,format=raw,unit=1,file={work / 'vars.fd'}"]
    proc = subprocess.Popen(["qemu-system-x86_64", *host_accel().qemu_args, "-machine", "pc", "-m", "1024",
                             "-nodefaults", "-display", "none", "-serial", f"file:{console}", *pflash,
                             *drives, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:4b:32:01"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=child_of_this_process())
    text = ""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            text = boot_console.clean(console.read_bytes().decode("utf-8", "replace")) if console.exists() else ""
            if boot_console.classify(text):
                return text
            time.sleep(1)
        return text
    finally:
        kill_group(proc)


def assert_ships_what_booted(report: dict) -> None:
    """The shipped domain XML has the firmware, disks (file, bus, boot order) and NICs (MAC) of the
    machine the validate stage booted."""
    m = report["validation"]["boot"]["machine"]
    dom = ET.parse(report["domain_xml"]).getroot()
    assert (dom.find("os").get("firmware") or "bios") == m["firmware"], ET.tostring(dom.find("os"))
    shipped = sorted((d.find("source").get("file"), d.find("target").get("bus"), int(d.find("boot").get("order")))
                     for d in dom.findall("devices/disk[@device='disk']"))
    assert shipped == sorted((d["path"], m["bus"], d["boot_order"]) for d in m["disks"]), (shipped, m["disks"])
    nics = [i.find("mac").get("address") if i.find("mac") is not None else None for i in dom.findall("devices/interface")]
    assert nics == [n["mac"] for n in m["nics"]], (nics, m["nics"])
