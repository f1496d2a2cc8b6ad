"""`make demo` is one of the two commands the project promises: it builds the sample VMware VM and
migrates it for real (the set-up it does first is a no-op on a machine that ran `make test`)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_make_demo_migrates_the_sample_vm(tmp_path):
    demo = tmp_path / "demo"
    res = subprocess.run(["make", "-s", "demo", f"DEMO_DIR={demo}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.load(open(demo / "out" / "demo-debian12" / "report.json"))
    assert report["status"] == "succeeded"
    assert report["inspection"]["distro"] == "debian"
    assert {c["path"] for c in report["changes"]} >= {"/etc/fstab"}
    assert all(o["identical_to_source"] for o in report["outputs"])
    assert '"status": "succeeded"' in res.stdout  # the demo ends by printing the report
