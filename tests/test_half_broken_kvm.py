"""A KVM that passes the accelerator probe and then hangs every real guest: the stages still finish, under TCG.

The half-broken KVM is a wrapper around the real QEMU, given to the product as its QEMU binary (the
worker setting `qemu`). A run that asks for KVM gets TCG underneath, so the outcome does not depend
on this host's own KVM: the probe's run (QEMU's `-name h2k-accel-probe`) really boots its kernel and
passes; every other one is started with `-S`, so its virtual CPUs never run: a QEMU process that is
alive and does nothing, as a stalled KVM looks.
Each test keeps its verdict in its own cache directory, so the real host verdict is never touched.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

from h2k_tasks import accel
from h2k_tasks.accel import Hypervisor, host_accel
from h2k_tasks.boot_test import boot_test
from h2k_tasks.machine import plain
from tests.builders.vmware import build_demo_vm
from tests.support import h2k, processes_with

pytestmark = pytest.mark.slow

# Long enough for the probe kernel to reach its panic under TCG on a loaded 2-core machine.
KVM_DEADLINE = 60.0

WRAPPER = """#!{python}
import os, shutil, sys
qemu = shutil.which("qemu-system-x86_64")
args = sys.argv[1:]
kvm = any(a == "kvm" or "accel=kvm" in a for a in args)
boots = any(a in ("-kernel", "-drive") for a in args)  # not libguestfs' feature queries
if kvm and boots:
    # TCG underneath whatever this host's KVM does, so that the outcome is the same everywhere.
    args = ["tcg" if a == "kvm" else a.replace("accel=kvm", "accel=tcg") for a in args]
    if "h2k-accel-probe" not in args:
        args = ["-S"] + args  # the virtual CPUs never start: alive, silent, stuck
os.execv(qemu, [qemu] + args)
"""


@pytest.fixture
def half_broken_kvm(tmp_path, monkeypatch) -> Hypervisor:
    wrapper = tmp_path / "qemu-half-broken-kvm"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return Hypervisor(str(wrapper), KVM_DEADLINE)


def _verdict(hv: Hypervisor) -> dict:
    with open(accel.cache_file(hv.path())) as f:
        return json.load(f)


def test_boot_test_falls_back_to_tcg_when_kvm_hangs_after_the_probe(half_broken_kvm, tmp_path):
    assert host_accel(half_broken_kvm).name == "kvm"  # the probe is fooled, as on a half-broken host
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\0" * 2**20)  # SeaBIOS says "No bootable device." on its console
    result = boot_test(plain([(str(blank), "raw")]), timeout=120, hv=half_broken_kvm, workdir=str(tmp_path))
    assert result.verdict == "no-boot-device", result
    assert result.accel == "tcg"
    assert result.accel_reason.startswith("KVM passed the probe, then a boot test showed no console output "
                                          f"under KVM ({KVM_DEADLINE:g} s passed)"), result.accel_reason
    verdict = _verdict(half_broken_kvm)
    assert verdict["name"] == "tcg" and verdict["reason"] == result.accel_reason
    # The host is on TCG now: the next boot does not wait for KVM again.
    again = boot_test(plain([(str(blank), "raw")]), timeout=120, hv=half_broken_kvm, workdir=str(tmp_path))
    assert again.verdict == "no-boot-device" and again.accel == "tcg" and again.seconds < KVM_DEADLINE
    assert not processes_with(str(tmp_path), "qemu")


def test_guest_stage_completes_under_tcg_when_the_appliance_hangs_under_kvm(half_broken_kvm, tmp_path):
    assert host_accel(half_broken_kvm).name == "kvm"
    vmx = build_demo_vm(str(tmp_path / "src"))
    config = tmp_path / "worker.yaml"
    config.write_text(json.dumps({"worker": {"qemu": half_broken_kvm.qemu, "kvm_deadline": KVM_DEADLINE}}))
    out = tmp_path / "out"
    res = h2k("migrate", vmx, "-o", str(out), "--no-boot-test", "--config", str(config),
              env={"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}, timeout=900)
    report = json.load(open(out / "demo-debian12" / "report.json"))
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:], report.get("errors"))
    used = report["accelerators"]["guest"]
    assert used["name"] == "tcg", used
    assert used["reason"].startswith(f"KVM passed the probe, then the libguestfs appliance did not come up "
                                     f"within {KVM_DEADLINE:g}s under KVM and was killed"), used
    assert report["inspection"]["distro"] == "debian" and report["changes"]
    assert _verdict(half_broken_kvm)["name"] == "tcg"
    assert not processes_with(str(tmp_path), "qemu")
