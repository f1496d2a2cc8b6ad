"""The documented deployment files are accepted by their tools."""
from __future__ import annotations

import os
import shutil
import subprocess

import yaml

from tests.support import ROOT


def test_docker_compose_accepts_compose_yaml(tmp_path):
    shutil.copy(os.path.join(ROOT, "flower.env.example"), tmp_path / "flower.env")
    res = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, "compose.yaml"), "--project-directory",
                          str(tmp_path), "config"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    services = yaml.safe_load(res.stdout)["services"]
    assert {"redis", "conductor", "flower", "worker-kvm1", "worker-kvm2"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "noeviction" in services["redis"]["command"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert any(a.startswith("--task_runtime_metric_buckets=") and "43200" in a for a in services["flower"]["command"])
