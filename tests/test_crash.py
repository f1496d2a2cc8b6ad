"""A worker killed with SIGKILL past the middle of a convert: a new worker finishes the wave, no
finished stage runs again, the resumed convert re-copies at most one segment, and the output is
identical to an uninterrupted conversion."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.builders.disks import patterned_raw
from tests.builders.vmware import DiskSpec, build_vm, write_vmx
from tests.support import ROOT, h2k, sha256, suite_settings, wait_for

pytestmark = pytest.mark.slow






def test_sigkill_mid_convert_resumes_without_redoing(tmp_path, redis_server, workers):
    src = str(tmp_path / "src")
    build_vm(src, "crashy", [DiskSpec(size_mib=64)])
    patterned_raw(str(tmp_path / "big.raw"), 3072, 1536)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(tmp_path / "big.raw"),
                    os.path.join(src, "crashy_1.vmdk")], check=True)
    os.unlink(tmp_path / "big.raw")
    vmx = os.path.join(src, "crashy.vmx")
    write_vmx(vmx, "crashy", [("scsi", 0, 0, "crashy.vmdk"), ("scsi", 0, 1, "crashy_1.vmdk")], "00:50:56:00:00:01")
    out = str(tmp_path / "out")
    segment = 128 << 20
    settings = suite_settings(redis_server.url, copy_segment=segment, convert_rate_limit=256 << 20)
    first = workers.start(settings)
    env = {**os.environ, "PYTHONPATH": ROOT}
    conductor = subprocess.Popen(
        [sys.executable, "-m", "conductor", "migrate", vmx, "-o", out, "--format", "raw", "--json", "--no-boot-test",
         "--broker", redis_server.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = redis_server.client()

    def past_half() -> int:
        keys = r.keys("h2k:st:*:crashy:d1:convert")
        done = keys and r.hget(keys[0], "status") == "running" and int(r.hget(keys[0], "bytes") or 0)
        return done if done and done > (1536 << 20) // 2 else 0

    wait_for(past_half, 120, "the big disk's convert to be past half of its data")
    dest = os.path.join(out, "crashy", "crashy-disk1.raw")
    assert glob.glob(os.path.join(out, "crashy", ".crashy-disk1.raw.tmp-*")), "convert wrote no temp file"
    assert not os.path.exists(dest)
    workers.kill(first)
    copied_before_kill = int(r.hget(r.keys("h2k:st:*:crashy:d1:convert")[0], "bytes"))
    done_before_kill = {e["stage"] for e in _log(r) if e["event"] == "succeeded"}
    assert "crashy/d0/convert" in done_before_kill

    workers.start(settings)
    stdout, stderr = conductor.communicate(timeout=600)
    assert conductor.returncode == 0, stderr
    assert json.loads(stdout)["vms"][0]["status"] == "succeeded"

    events = _log(r)
    claims = [e["stage"] for e in events if e["event"] == "claim"]
    for stage in done_before_kill:
        assert claims.count(stage) == 1, f"{stage} ran again after the crash"
    convert = [(e["event"], e["gen"]) for e in events if e.get("stage") == "crashy/d1/convert"]
    assert convert == [("claim", "1"), ("expired", "1"), ("claim", "2"), ("succeeded", "2")]
    assert not glob.glob(os.path.join(out, "crashy", ".*.tmp-*"))

    wave = r.zrange("h2k:waves", 0, -1)[0]
    status = h2k("wave", "status", wave, "--broker", redis_server.url)
    assert status.returncode == 0 and "crashy" in status.stdout and "succeeded" in status.stdout
    report = json.loads(h2k("wave", "report", wave, "--broker", redis_server.url).stdout)
    convert_rows = [s for s in report["vms"][0]["stages"] if (s["lane"], s["stage"]) == ("d1", "convert")]
    assert convert_rows[0]["attempts"] == 2 and report["vms"][0]["status"] == "succeeded"
    resumed = json.loads(r.hget(r.keys("h2k:st:*:crashy:d1:convert")[0], "result"))
    assert resumed["resumed_from"] >= copied_before_kill - segment  # at most one segment copied again
    assert resumed["bytes_read"] <= 1536 * (1 << 20) - resumed["resumed_from"] + (1 << 20)

    reference = str(tmp_path / "reference.raw")
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", os.path.join(src, "crashy_1.vmdk"), reference],
                   check=True)
    assert sha256(dest) == sha256(reference)


def _log(r) -> list[dict]:
    wave = r.zrange("h2k:waves", 0, -1)[0]
    return [fields for _, fields in r.xrange(f"h2k:log:{wave}")]
