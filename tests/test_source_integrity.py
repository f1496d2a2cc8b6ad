"""Damaged sources (truncated, a bit flipped in their metadata, zero-length) in each format with
metadata: `h2k migrate` refuses each at plan time with exit 2 and one line naming the file, within
seconds, and writes nothing."""
from __future__ import annotations

import os
import struct
import subprocess
import time
import uuid

import pytest

from tests.builders.disks import patterned_raw
from tests.support import h2k

FORMATS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhdx": "vhdx", "vdi": "vdi"}
_VHDX_BAT = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")


def listing(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in files + dirs}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """A good image per format: 64 MiB, the first 8 MiB data."""
    d = tmp_path_factory.mktemp("good")
    raw = str(d / "disk.raw")
    patterned_raw(raw, 64, 8)
    out = {}
    for ext, fmt in FORMATS.items():
        out[ext] = str(d / f"disk.{ext}")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, raw, out[ext]], check=True, timeout=120)
    return out


def _metadata_offset(path: str, ext: str) -> int:
    """A byte inside the first entry of the table mapping guest blocks to file offsets."""
    with open(path, "rb") as f:
        head = f.read(256 * 1024)
    if ext == "qcow2":
        return struct.unpack_from(">Q", head, 40)[0] + 5  # L1 table, entry 0
    if ext == "vmdk":
        gd = struct.unpack_from("<Q", head, 56)[0] * 512  # grain directory -> first grain table
        return struct.unpack_from("<I", head, gd)[0] * 512 + 2
    if ext == "vdi":
        return struct.unpack_from("<I", head, 0x154)[0] + 1  # block map, entry 0
    region = 192 * 1024  # VHDX region table -> BAT, entry 0's file offset
    for i in range(struct.unpack_from("<I", head, region + 8)[0]):
        entry = region + 16 + i * 32
        if uuid.UUID(bytes_le=head[entry:entry + 16]) == _VHDX_BAT:
            return struct.unpack_from("<Q", head, entry + 16)[0] + 6
    raise AssertionError("no BAT region in the VHDX")


def truncated(path: str, ext: str) -> None:
    os.truncate(path, os.path.getsize(path) // 3)


def bit_flipped(path: str, ext: str) -> None:
    offset = _metadata_offset(path, ext)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def zero_length(path: str, ext: str) -> None:
    os.truncate(path, 0)


DAMAGE = [truncated, bit_flipped, zero_length]


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_damaged_source_is_refused_at_plan_time(images, damage, ext, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = str(src / f"disk.{ext}")
    with open(images[ext], "rb") as a, open(path, "wb") as b:
        b.write(a.read())
    damage(path, ext)
    before = listing(tmp_path)
    started = time.monotonic()
    res = h2k("migrate", path, "-o", str(tmp_path / "out"), "--no-boot-test", timeout=60)
    assert time.monotonic() - started < 30
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"h2k: error: {path}: "), lines[0]
    assert listing(tmp_path) == before  # no output directory, nothing else written


def test_undamaged_sources_pass_the_check(images, tmp_path):
    for ext, path in images.items():
        res = h2k("plan", path, "-o", str(tmp_path / "out"), "--json", timeout=60)
        assert res.returncode == 0, res.stderr
