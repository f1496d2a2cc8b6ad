"""Free space as each worker host reports it for the directory it writes, with real workers whose
data directories differ: one on a 48 MiB tmpfs mounted in its own mount namespace (as another
host's disk would be: the test machine sees plenty of space at that path), one writing elsewhere."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.builders.disks import patterned_raw
from tests.builders.vmware import write_vmx
from tests.support import h2k, suite_settings, wait_for

pytestmark = pytest.mark.slow
MIB = 1 << 20


def _vm(base, name: str, mib: int) -> str:
    d = base / name
    d.mkdir()
    patterned_raw(str(d / "d.raw"), mib, 4)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(d / "d.raw"), str(d / "d.vmdk")], check=True)
    os.unlink(d / "d.raw")
    write_vmx(str(d / f"{name}.vmx"), name, [("scsi", 0, 0, "d.vmdk")], "00:50:56:00:04:01")
    return str(d / f"{name}.vmx")


def test_placement_and_space_check_use_each_worker_hosts_own_report(tmp_path, redis_server, workers):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    url = redis_server.url
    small = workers.start(suite_settings(url, host="small", data_dir=str(data)), wrap=(
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f'mount -t tmpfs -o size=48m h2k-test "{data}" && exec "$@"', "h2k-worker"))
    workers.start(suite_settings(url, host="big", data_dir=str(other)))
    r = redis_server.client()
    wait_for(lambda: r.exists("h2k:host:small") and r.exists("h2k:host:big"), 60, "both workers to report")
    assert int(r.hget("h2k:host:small", "free_bytes")) <= 48 * MIB < int(r.hget("h2k:host:big", "free_bytes"))
    assert r.hget("h2k:host:small", "data_dir") == str(data)

    fits, huge = _vm(tmp_path, "fits", 16), _vm(tmp_path, "huge", 64)
    out = data / "out"
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text(yaml.safe_dump({"vms": {"fits": {"guest": False}}}))
    args = ["-o", str(out), "--format", "raw", "--config", str(cfg), "--broker", url, "--no-boot-test"]

    # only "small" writes under data/: the VM goes there, although "big" reports far more room
    res = h2k("migrate", fits, *args, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    [row] = json.loads(res.stdout)["vms"]
    assert row["status"] == "succeeded", row
    written = f"{out}/fits/fits-disk0.raw"
    assert os.path.getsize(f"/proc/{small.pid}/root{written}") == 16 * MIB  # in small's tmpfs ...
    assert not os.path.exists(written)  # ... not on this machine's disk at that path

    # 64 MiB does not fit in what "small" reports, whatever this machine has free at that path
    assert int(subprocess.run(["df", "--output=avail", "-B1", str(data)], capture_output=True, text=True)
               .stdout.split()[-1]) > 64 * MIB
    cfg.write_text(yaml.safe_dump({"vms": {"huge": {"guest": False}}}))
    res = h2k("migrate", huge, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "critical concern insufficient-space" in res.stderr and "host small has" in res.stderr
    assert f"in {data} (as its worker reported" in res.stderr

    # a host whose worker writes elsewhere is refused for this output directory
    cfg.write_text(yaml.safe_dump({"vms": {"fits": {"guest": False, "host": "big"}}}))
    res = h2k("migrate", fits, *args)
    assert res.returncode == 2 and f"host 'big' (for fits) writes under its data_dir {other}" in res.stderr, res.stderr
