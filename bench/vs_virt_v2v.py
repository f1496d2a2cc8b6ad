"""`h2k migrate` against `virt-v2v` on the same real guests, on the same machine, in one process.

For each real test guest (tests/builders: the BIOS Debian 12 VMware guest; the UEFI one with LVM+XFS
and a static address; the SELinux-enforcing one on two disks; the netplan one with a VLAN), alternately:
- `virt-v2v -i vmx <vmx> -o local -os DIR -of qcow2` (the baseline: conversion and fixes, no boot), and
- `h2k migrate <vmx> -o DIR` with its defaults (conversion, fixes and a boot test), and
  `h2k migrate --no-boot-test`, for the like-for-like figure.
Prints each median and, last, `ratio: <h2k with boot test / virt-v2v>` over the guests virt-v2v converts
(a guest it refuses is reported with its error, and h2k's times alone).
virt-v2v comes from Debian (`make bench` installs it, with the nbdkit and nbdcopy it copies through);
both use the same libguestfs backend and the accelerator the product chose for this host (virt-v2v is
given `force_tcg` where KVM is broken).

    .venv/bin/python bench/vs_virt_v2v.py [--rounds 1] [--workdir DIR] [--guests bios,uefi,selinux,netplan]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from h2k_tasks.accel import host_accel  # noqa: E402
from tests.builders.debian_guest import build_debian_guest  # noqa: E402
from tests.builders.debian_netplan_guest import build_netplan_guest  # noqa: E402
from tests.builders.debian_selinux_guest import HDD_ORDER, build_selinux_guest  # noqa: E402
from tests.builders.debian_uefi_guest import build_uefi_guest  # noqa: E402
from tests.support import vmx_of_disks  # noqa: E402

GUESTS = {"bios": build_debian_guest, "uefi": build_uefi_guest, "selinux": build_selinux_guest,
          "netplan": build_netplan_guest}


def source(name: str, work: str) -> str:
    guest = GUESTS[name]()
    vmdks = guest.vmdks if name == "selinux" else [guest.vmdk]
    return vmx_of_disks(os.path.join(work, f"src-{name}"), name, vmdks, guest.mac, firmware=guest.firmware,
                        hdd_order=HDD_ORDER if name == "selinux" else None)


class Refused(Exception):
    """The command exited non-zero: its exit status and last two error lines."""


def timed(cmd: list[str], out: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})
    elapsed = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] or proc.stderr.splitlines()[-1:]
        raise Refused(f"{os.path.basename(cmd[0])} exit status {proc.returncode}: {' / '.join(errors[-2:])}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--workdir")
    ap.add_argument("--guests", default=",".join(GUESTS))
    args = ap.parse_args()
    if not shutil.which("virt-v2v"):
        sys.exit("virt-v2v is not installed: `make bench` installs it and what it copies through")
    work = args.workdir or tempfile.mkdtemp(prefix="h2k-bench-v2v-")
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    accel = host_accel()
    os.environ["LIBGUESTFS_BACKEND_SETTINGS"] = f"force_{accel.name}"
    print(f"accelerator: {accel.name} ({accel.reason})", flush=True)
    h2k_all, v2v_all = [], []
    try:
        for name in args.guests.split(","):
            vmx = source(name, work)
            out = os.path.join(work, "out")
            v2v, h2k, h2k_nb, refused = [], [], [], None
            for _ in range(args.rounds):
                try:
                    v2v.append(timed(["virt-v2v", "-q", "-i", "vmx", vmx, "-o", "local", "-os", out, "-of", "qcow2"],
                                     out))
                except Refused as e:
                    refused = str(e)
                h2k.append(timed([sys.executable, "-m", "conductor", "migrate", vmx, "-o", out], out))
                h2k_nb.append(timed([sys.executable, "-m", "conductor", "migrate", vmx, "-o", out, "--no-boot-test"],
                                    out))
            m = {k: statistics.median(v) for k, v in (("h2k", h2k), ("h2k_nb", h2k_nb))}
            ours = f"h2k migrate {m['h2k']:.1f} s with its boot test, {m['h2k_nb']:.1f} s without"
            if refused:  # not in the ratio: there is nothing to compare with
                print(f"{name}: virt-v2v cannot convert it ({refused}); {ours}", flush=True)
                continue
            v2v_m = statistics.median(v2v)
            print(f"{name}: virt-v2v {v2v_m:.1f} s; {ours}; h2k / virt-v2v {m['h2k'] / v2v_m:.2f} "
                  f"({m['h2k_nb'] / v2v_m:.2f} without the boot test)", flush=True)
            h2k_all.append(m["h2k"])
            v2v_all.append(v2v_m)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if not v2v_all:
        sys.exit("virt-v2v converted none of the guests: no ratio")
    print(f"ratio: {sum(h2k_all) / sum(v2v_all):.3f} (over the {len(v2v_all)} guests virt-v2v converts)")


if __name__ == "__main__":
    main()
