"""The accelerator probe really runs guest code under QEMU, falls back to TCG with a reason, and its
verdict is kept per host until the host, the QEMU binary or /dev/kvm changes."""
from __future__ import annotations

import json

import pytest

from h2k_tasks import accel
from h2k_tasks.accel import CANDIDATES, Accel, Hypervisor, host_accel, host_kernel, probe_kernel, probe_sector

QEMU = Hypervisor().path()


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_tcg_runs_the_probe_sector():
    assert probe_sector(QEMU, CANDIDATES["tcg"]) is None


def test_probe_reports_a_qemu_that_fails_to_start():
    problem = probe_sector(QEMU, ("-accel", "no-such-accel"))
    assert problem is not None and problem.startswith("exit status 1:")


def test_probe_reports_guest_code_that_never_exits(monkeypatch):
    # jmp $ forever: the CPU runs, but never reaches the exit port.
    monkeypatch.setattr(accel, "_BOOT_SECTOR", bytes([0xEB, 0xFE]).ljust(510, b"\0") + b"\x55\xaa")
    problem = probe_sector(QEMU, CANDIDATES["tcg"], timeout=2)
    assert problem is not None and "hung" in problem


def test_the_host_kernel_reaches_its_root_mount_panic_under_tcg():
    kernel = host_kernel()
    assert kernel is not None, "linux-image-amd64 is installed with libguestfs: its kernel is the appliance's"
    assert probe_kernel(QEMU, CANDIDATES["tcg"], kernel, timeout=300) is None


def test_a_kernel_that_does_not_get_there_in_time_is_reported_as_hung():
    problem = probe_kernel(QEMU, CANDIDATES["tcg"], host_kernel(), timeout=0.5)
    assert problem is not None and "did not reach its root-mount panic within 0.5s (hung" in problem


def test_verdict_is_probed_once_and_kept_per_host(own_cache, monkeypatch):
    chosen = host_accel()
    assert chosen.qemu_args == CANDIDATES[chosen.name] == ("-accel", chosen.name, "-cpu", "max,la57=off")
    # On the development machine KVM aborts or hangs: TCG, with what KVM did.
    assert chosen.reason.startswith("KVM booted vmlinuz-" if chosen.name == "kvm" else "KVM unusable, using TCG: ")
    stored = json.loads(open(accel.cache_file(QEMU)).read())
    assert stored["name"] == chosen.name and stored["key"]["qemu"] == QEMU

    def no_probe(*args):
        raise AssertionError("probed again although the verdict holds")

    monkeypatch.setattr(accel, "_probe", no_probe)
    assert host_accel() == chosen


def test_a_verdict_from_another_boot_is_probed_again(own_cache, monkeypatch):
    fresh = Accel("tcg", CANDIDATES["tcg"], "probed now")
    monkeypatch.setattr(accel, "_probe", lambda hv, path: fresh)
    path = accel.cache_file(QEMU)
    key = accel._host_key(QEMU)
    accel._store(path, {**key, "boot_id": "an-earlier-boot"}, Accel("kvm", CANDIDATES["kvm"], "long ago"))
    assert host_accel() == fresh
    assert json.loads(open(path).read())["key"] == key


def test_remember_switches_the_host_verdict(own_cache, monkeypatch):
    monkeypatch.setattr(accel, "_probe", lambda hv, path: Accel("kvm", CANDIDATES["kvm"], "probe passed"))
    assert host_accel().name == "kvm"
    fallback = accel.tcg_instead("a launch hung")
    accel.remember(Hypervisor(), fallback)
    assert host_accel() == fallback
    assert fallback.reason == "KVM passed the probe, then a launch hung: fell back to TCG"


def test_a_missing_qemu_is_a_clear_error():
    with pytest.raises(accel.NoAcceleratorError, match="no-such-qemu not found"):
        host_accel(Hypervisor("no-such-qemu"))
