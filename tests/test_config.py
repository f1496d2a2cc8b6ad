"""YAML config: deep merge, later wins, unknown keys named by path, consistent Celery timeouts."""
from __future__ import annotations

import pytest

from conductor.config import deep_merge, load
from h2k_planner.errors import InputError


def test_deep_merge_later_wins():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}, "e": 4}) == {"a": {"b": 1, "c": 3}, "d": 1, "e": 4}


def test_files_merge_in_order_then_overrides(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("output:\n  format: raw\nworker:\n  concurrency: 3\n  lease_ttl: 10\n")
    two = tmp_path / "two.yaml"
    two.write_text("worker:\n  concurrency: 5\n")
    cfg = load([str(one), str(two)], {"output": {"compress": False}})
    assert (cfg.output.format, cfg.worker.concurrency, cfg.worker.lease_ttl) == ("raw", 5, 10)


@pytest.mark.parametrize("text,problem", [
    ("outptu:\n  format: raw\n", "unknown key outptu"),
    ("worker:\n  host: a\n  colour: red\n", "unknown key worker.colour"),
    ("output: raw\n", "output must be a mapping"),
    ("output:\n  format: vhd\n", "output.format: Input should be 'qcow2' or 'raw'"),
    ("worker:\n  task_time_limit: 7200\n  visibility_timeout: 3600\n", "visibility_timeout (3600s) must be longer"),
    ("worker:\n  broker_url: redis://x\n", "set broker_url at the top level"),
    ("a: [\n", "not valid YAML at line"),
])
def test_errors_name_file_and_key(tmp_path, text, problem):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        load([str(f)])
    assert str(f) in str(e.value) and problem in str(e.value)


def test_per_vm_overrides_are_checked_too(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("name: w1\nsources: [/a.vmx]\nvms:\n  web01:\n    host: kvm2\n    guest: false\n")
    cfg = load([str(f)])
    assert cfg.vms["web01"].host == "kvm2" and cfg.vms["web01"].guest is False and cfg.sources == ["/a.vmx"]
    f.write_text("vms:\n  web01:\n    hots: kvm2\n")
    with pytest.raises(InputError, match="unknown key vms.web01.hots"):
        load([str(f)])
