"""The concurrency caps with a real conductor, redis-server and workers: for each of per_source, per
host and per_wave, the state log shows the cap never exceeded and every stage claimed under its
lane's tokens, while a resume and a cancel + retry send lanes again with older runs still in
flight; when the wave ends no token is held."""
from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict

import pytest

from tests.builders.disks import patterned_raw
from tests.builders.vmware import write_vmx
from tests.support import h2k, wait_for
from tests.test_fleet import Fleet, assert_no_concurrent_writers, assert_outputs_match_sources

pytestmark = pytest.mark.slow
RATE = 3 << 20  # conversions read 3 MiB/s: each 24 MiB disk converts for about 8 s, so lanes overlap


@pytest.fixture(scope="module")
def vmx_files(tmp_path_factory):
    """Four one-disk VMs of 24 MiB of data."""
    base = tmp_path_factory.mktemp("caps-src")
    out = {}
    for n in range(4):
        d = base / f"c{n}"
        d.mkdir()
        patterned_raw(str(d / "disk.raw"), 24, 24)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(d / "disk.raw"), str(d / "disk.vmdk")],
                       check=True)
        os.unlink(d / "disk.raw")
        write_vmx(str(d / f"c{n}.vmx"), f"c{n}", [("scsi", 0, 0, "disk.vmdk")], f"00:50:56:00:03:{n:02x}")
        out[f"c{n}"] = str(d / f"c{n}.vmx")
    return out


def token_history(events: list[dict]) -> tuple[dict[str, int], int]:
    """From the log: the most members each semaphore ever had, and how many acquisitions found
    their holder already in (a lane sent again while its older run was in flight). Asserts that
    every stage claim (finalize aside, it holds no token) happened under its lane's tokens."""
    members: dict[str, set[str]] = defaultdict(set)
    peak: dict[str, int] = defaultdict(int)
    reused = 0
    wave = None
    for e in events:
        if e["event"] == "acquire":
            wave = e["holder"].split("/", 1)[0]
            sems = json.loads(e["sems"])
            reused += all(e["holder"] in members[s] for s in sems)
            for s in sems:
                members[s].add(e["holder"])
                peak[s] = max(peak[s], len(members[s]))
        elif e["event"] == "release":
            for s in members.values():
                s.discard(e["holder"])
        elif e["event"] == "claim" and not e["stage"].endswith("/finalize"):
            vm, lane, _ = e["stage"].rsplit("/", 2)
            holder = f"{wave}/{vm}/{lane}"
            assert any(holder in m for m in members.values()), \
                f"{e['stage']} claimed without its lane's tokens; the lane's log:\n" + "\n".join(
                    str(x) for x in events if holder in x.get("holder", "") or x.get("stage", "").startswith(f"{vm}/"))
    return dict(peak), reused


def cap_wave(tmp_path, redis_server, workers, vmx_files: dict[str, str], hosts: list[str], concurrency: int,
             limits: dict | None, pins: dict[str, str] | None = None) -> tuple[dict[str, int], int]:
    """Run the VMs as a wave through a conductor with `limits`, resuming it while lanes are in
    flight and cancelling and retrying a VM mid-convert; check the outputs, the claims and that no
    token is left held; return token_history's peaks and reuses."""
    fleet = Fleet(tmp_path, redis_server, workers, hosts=hosts, convert_rate_limit=RATE, concurrency=concurrency)
    try:
        fleet.start_conductor(limits=limits)
        wave = fleet.submit("caps", vmx_files, {vm: {"guest": False, **({"host": pins[vm]} if pins else {})}
                                                for vm in vmx_files})
        url = fleet.redis.url

        def converting() -> list[str]:
            return [vm for vm in vmx_files if int(fleet.r.hget(f"h2k:st:{wave}:{vm}:d0:convert", "bytes") or 0) > 0
                    and fleet.r.hget(f"h2k:st:{wave}:{vm}:d0:convert", "status") == "running"]

        wait_for(converting, 120, "a conversion to be under way")
        res = h2k("wave", "resume", wave, "--broker", url)  # new runs of every VM, older lanes still in flight
        assert res.returncode == 0, res.stderr
        victim = wait_for(converting, 120, "a conversion after the resume")[0]
        assert h2k("wave", "cancel", wave, victim, "--broker", url).returncode == 0
        wait_for(lambda: fleet.r.hget(f"h2k:st:{wave}:{victim}:vm:finalize", "status") == "succeeded", 60,
                 "the cancelled VM's report")
        res = h2k("wave", "retry", wave, "--broker", url)
        assert res.returncode == 0 and f"retrying: {victim}" in res.stdout, res.stdout + res.stderr
        reports = fleet.wait_wave(wave)
        assert fleet.r.smembers("h2k:sems") == set() and not list(fleet.r.scan_iter("h2k:sem:*")), \
            {k: fleet.r.smembers(k) for k in fleet.r.scan_iter("h2k:sem:*")}
        assert_outputs_match_sources(reports)
        events = fleet.log(wave)
        assert_no_concurrent_writers(events)
        return token_history(events)
    finally:
        fleet.stop()


def test_per_source_cap(tmp_path, redis_server, workers, vmx_files):
    peak, reused = cap_wave(tmp_path, redis_server, workers, vmx_files, ["hosta"], 4, {"per_source": 1})
    [source] = [s for s in peak if s.startswith("source:")]  # every VM reads one file system
    assert peak[source] == 1 and reused > 0, (peak, reused)
    assert peak["host:hosta"] > 1  # the host's cap (4) let other lanes run meanwhile


def test_per_host_cap(tmp_path, redis_server, workers, vmx_files):
    pins = {vm: ["hosta", "hostb"][n % 2] for n, vm in enumerate(vmx_files)}
    peak, reused = cap_wave(tmp_path, redis_server, workers, vmx_files, ["hosta", "hostb"], 1, None, pins)
    assert peak["host:hosta"] == 1 and peak["host:hostb"] == 1 and reused > 0, (peak, reused)
    [wave_sem] = [s for s in peak if s.startswith("wave:")]
    assert peak[wave_sem] == 2  # one lane per host at once, two in the wave


def test_per_wave_cap(tmp_path, redis_server, workers, vmx_files):
    peak, reused = cap_wave(tmp_path, redis_server, workers, vmx_files, ["hosta"], 4, {"per_wave": 2})
    [wave_sem] = [s for s in peak if s.startswith("wave:")]
    assert peak[wave_sem] == 2 and reused > 0, (peak, reused)
