"""The accelerator probe really runs guest code under QEMU, and falls back to TCG with a reason."""
from __future__ import annotations

import os

from h2k_tasks import accel
from h2k_tasks.accel import Accel, libguestfs_env, probe_accel, run_probe


def test_tcg_runs_the_probe_sector():
    assert run_probe(accel.CANDIDATES["tcg"]) is None


def test_probe_reports_a_qemu_that_fails_to_start():
    problem = run_probe(["-accel", "no-such-accel"])
    assert problem is not None and problem.startswith("exit status 1:")


def test_probe_reports_guest_code_that_never_exits(monkeypatch):
    # jmp $ forever: the CPU runs, but never reaches the exit port.
    monkeypatch.setattr(accel, "_BOOT_SECTOR", bytes([0xEB, 0xFE]).ljust(510, b"\0") + b"\x55\xaa")
    problem = run_probe(accel.CANDIDATES["tcg"], timeout=2)
    assert problem is not None and "hung" in problem


def test_probe_accel_agrees_with_a_direct_kvm_run_and_is_cached():
    chosen = probe_accel()
    assert probe_accel() is chosen
    kvm_works = os.access("/dev/kvm", os.R_OK | os.W_OK) and run_probe(accel.CANDIDATES["kvm"]) is None
    if kvm_works:
        assert chosen.name == "kvm" and chosen.qemu_args == ("-accel", "kvm", "-cpu", "host")
    else:
        # This is the case on the development machine: /dev/kvm exists but -cpu host aborts.
        assert chosen.name == "tcg" and chosen.qemu_args == ("-accel", "tcg", "-cpu", "max")
        assert chosen.reason.startswith("KVM unusable, using TCG: ")


def test_libguestfs_env_forces_tcg_only_when_kvm_is_unusable():
    tcg = Accel("tcg", ("-accel", "tcg", "-cpu", "max"), "KVM unusable")
    kvm = Accel("kvm", ("-accel", "kvm", "-cpu", "host"), "ok")
    assert libguestfs_env(tcg) == {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    assert libguestfs_env(kvm) == {"LIBGUESTFS_BACKEND": "direct"}
