"""The copier and the stages built on it (convert, verify), on real images through real qemu-nbd:
one read of the source, a content digest that any one-byte difference changes, a copy that resumes
from its last mark, and no server left running."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from h2k_planner.models import Disk, Output
from h2k_tasks import atomic, copier, nbd
from h2k_tasks.process import Interrupted
from h2k_tasks.stages import StageFailed
from h2k_tasks.stages.convert import convert_disk, local_source, mark_path, take_over
from h2k_tasks.stages.verify import content_sha256, verify_disk
from tests.builders.disks import MIB
from tests.support import content_sha256 as reference_digest, processes_with

SIZE = 100 * MIB + 4096  # not a multiple of the chunk: the last chunk is short
SEGMENT = 2 * copier.GROUP
STEP = copier.GROUP  # a copy marks every half segment


def scattered_raw(path: str, size: int = SIZE) -> list[int]:
    """A sparse raw disk with data at unaligned places, one run at the very end; the data offsets."""
    offsets = [3 * MIB + 512, 9 * MIB, 17 * MIB - 4096, 31 * MIB + 77, size - 6000]
    with open(path, "wb") as f:
        f.truncate(size)
        for n, at in enumerate(offsets):
            f.seek(at)
            f.write(bytes([n + 1]) * min(1500 * 1024, size - at))
    return offsets


def image(tmp_path, fmt: str, name: str = "src") -> str:
    raw = str(tmp_path / f"{name}.raw")
    scattered_raw(raw)
    if fmt == "raw":
        return raw
    out = str(tmp_path / f"{name}.{fmt}")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, raw, out], check=True)
    return out


def disk(path: str, fmt: str) -> Disk:
    return Disk(index=0, source=path, format=fmt, virtual_size=SIZE)


def flip_byte(path: str, offset: int) -> None:
    """Change one byte of a raw image in place, keeping its size and mtime."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([(old[0] ^ 0xFF) if old else 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def convert_local(d, *args, **kw) -> dict:
    with local_source(d) as src:
        return convert_disk(d, src, *args, **kw)


def convert(tmp_path, src: str, fmt: str, out_fmt: str = "qcow2", compress: bool = False, gen: int = 1,
            source: dict | None = None, **kw) -> tuple[str, dict]:
    dest = str(tmp_path / "out" / f"vm-disk0.{out_fmt}")
    result = convert_local(disk(src, fmt), Output(directory=str(tmp_path / "out"), format=out_fmt, compress=compress),
                          dest, gen, source or {"files": [src]}, lambda: True, lambda n: None, lambda: True,
                          lambda: False, segment=SEGMENT, **kw)
    return dest, result


@pytest.mark.parametrize("fmt,out_fmt,compress", [("raw", "qcow2", False), ("vmdk", "raw", False),
                                                  ("qcow2", "qcow2", True), ("vmdk", "qcow2", False)])
def test_the_copy_holds_the_source_content_and_both_digests_agree(tmp_path, fmt, out_fmt, compress):
    src = image(tmp_path, fmt)
    dest, result = convert(tmp_path, src, fmt, out_fmt, compress)
    assert subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", out_fmt, src, dest]).returncode == 0
    digest = reference_digest(src, fmt)
    assert result["content_sha256"] == digest
    assert content_sha256(dest, out_fmt, SIZE, lambda: True) == digest  # verify cuts in other segments
    assert verify_disk(disk(src, fmt), Output(directory=str(tmp_path / "out"), format=out_fmt), dest,
                       {"content_sha256": content_sha256(src, fmt, SIZE, lambda: True)}, lambda: True)["identical"]
    data = 5 * 1500 * 1024
    assert result["bytes_read"] <= data + 5 * 2 * MIB  # only the chunks that hold data were read
    assert result["resumed_from"] == 0
    if compress:
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", dest], capture_output=True).stdout)
        assert info["format-specific"]["data"]["compression-type"] == "zstd"
        assert info["actual-size"] < data / 10  # the runs are one repeated byte each: they compress to little
    assert os.listdir(tmp_path / "out") == [os.path.basename(dest)]  # no temp, no mark
    assert not processes_with("qemu-nbd", str(tmp_path))


@pytest.mark.parametrize("where", ["data", "zero", "last"])
def test_one_byte_of_difference_changes_the_digest_and_fails_verify(tmp_path, where):
    src = image(tmp_path, "raw")
    dest, result = convert(tmp_path, src, "raw", "raw")
    flip_byte(dest, {"data": 9 * MIB + 100, "zero": 60 * MIB + 3, "last": SIZE - 1}[where])
    assert atomic.still_same(result)  # same size and mtime: only the content tells
    with pytest.raises(StageFailed, match="content differs from the source.*output content digest"):
        verify_disk(disk(src, "raw"), Output(directory=str(tmp_path / "out"), format="raw"), dest,
                    {"content_sha256": content_sha256(src, "raw", SIZE, lambda: True)}, lambda: True)


class Died(Exception):
    """The attempt stops dead right after a mark, as a killed worker would."""


def die_after(done: int):
    def progress(n: int) -> None:
        if n >= done:
            raise Died(n)
    return progress


def test_a_copy_from_another_source_does_not_resume(tmp_path):
    src = image(tmp_path, "raw")
    dest = str(tmp_path / "out" / "vm-disk0.qcow2")
    with pytest.raises(Died):
        convert_local(disk(src, "raw"), Output(directory=str(tmp_path / "out")), dest, 1, {"files": [src]},
                     lambda: True, die_after(2 * STEP), lambda: True, lambda: False, segment=SEGMENT)
    assert not os.path.exists(dest) and os.path.exists(mark_path(atomic.temp_path(dest, "g1")))
    _, mark = take_over(dest, 2, {"files": ["other"]}, "qcow2")
    assert mark is None and os.listdir(tmp_path / "out") == []  # the dead attempt's files are gone


@pytest.mark.parametrize("fmt,out_fmt", [("raw", "qcow2"), ("vmdk", "raw")])
def test_a_new_generation_takes_over_the_dead_attempts_copy(tmp_path, fmt, out_fmt):
    src = image(tmp_path, fmt)
    dest = str(tmp_path / "out" / f"vm-disk0.{out_fmt}")
    output = Output(directory=str(tmp_path / "out"), format=out_fmt)
    with pytest.raises(Died):
        convert_local(disk(src, fmt), output, dest, 1, {"files": [src]}, lambda: True, die_after(3 * STEP),
                     lambda: True, lambda: False, segment=SEGMENT)
    done = json.load(open(mark_path(atomic.temp_path(dest, "g1"))))["mark"]["done"]
    assert done == 3 * STEP
    if out_fmt == "raw":
        with open(atomic.temp_path(dest, "g1"), "r+b") as f:  # what a dead attempt wrote past its mark
            f.seek(done + MIB)
            f.write(b"stale" * 1000)
    result = convert_local(disk(src, fmt), output, dest, 3, {"files": [src]}, lambda: True, lambda n: None,
                          lambda: True, lambda: False, segment=SEGMENT)
    assert result["resumed_from"] == done
    assert result["bytes_read"] <= SIZE - done
    assert result["content_sha256"] == reference_digest(src, fmt)
    assert subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", out_fmt, src, dest]).returncode == 0
    assert os.listdir(tmp_path / "out") == [os.path.basename(dest)]


def test_a_copy_that_died_after_its_last_mark_is_taken_over_whole(tmp_path):
    """The attempt died after copying everything but before publishing: the next one copies nothing."""
    src = image(tmp_path, "raw")
    dest = str(tmp_path / "out" / "vm-disk0.qcow2")
    output = Output(directory=str(tmp_path / "out"))
    with pytest.raises(Died):
        convert_local(disk(src, "raw"), output, dest, 1, {"files": [src]}, lambda: True, die_after(SIZE),
                     lambda: True, lambda: False, segment=SEGMENT)
    result = convert_local(disk(src, "raw"), output, dest, 2, {"files": [src]}, lambda: True, lambda n: None,
                          lambda: True, lambda: False, segment=SEGMENT)
    assert result["resumed_from"] == SIZE and result["bytes_read"] == 0
    assert result["content_sha256"] == reference_digest(src, "raw")
    assert subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, dest]).returncode == 0


def test_each_mark_describes_what_the_image_file_already_holds(tmp_path):
    """The output's server writes no sync of its own (nbd.qemu_nbd_output): a mark is handed over
    only after a flush put qemu's metadata in the file, so another reader of the file sees the
    marked content while the writer still runs."""
    src = image(tmp_path, "qcow2")
    out = str(tmp_path / "out.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", out, str(SIZE)], check=True)
    seen: list[int] = []

    def on_mark(m: copier.Mark) -> None:
        cmp = subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", src, out],
                             capture_output=True, text=True)  # -U: beside the writer's lock
        first_difference = re.search(r"mismatch at offset (\d+)", cmp.stdout)
        assert cmp.returncode == 0 or (first_difference and int(first_difference[1]) >= m.done), cmp.stdout
        seen.append(m.done)

    with nbd.serve(nbd.qemu_nbd(src, "qcow2")) as s, nbd.serve(nbd.qemu_nbd_output(out, "qcow2", False)) as d:
        copied = copier.copy(s, d, SIZE, segment=SEGMENT, on_mark=on_mark)
    assert seen == list(range(STEP, SIZE, STEP)) + [SIZE]  # in order, every half segment
    assert copied.content_sha256 == reference_digest(src, "qcow2")


@pytest.mark.parametrize("cancelled", [True, False])
def test_a_cancelled_copy_leaves_nothing_and_a_superseded_one_leaves_its_mark(tmp_path, cancelled):
    src = image(tmp_path, "raw")
    dest = str(tmp_path / "out" / "vm-disk0.qcow2")
    temp = atomic.temp_path(dest, "g1")
    with pytest.raises(Interrupted):  # stopped at the first tick after the first mark
        convert_local(disk(src, "raw"), Output(directory=str(tmp_path / "out")), dest, 1, {"files": [src]},
                     lambda: not os.path.exists(mark_path(temp)), lambda n: None, lambda: True,
                     lambda: cancelled, segment=SEGMENT, rate_limit=2 * MIB)
    assert os.path.exists(temp) == os.path.exists(mark_path(temp)) == (not cancelled)
    assert not os.path.exists(dest)
    assert not processes_with("qemu-nbd", str(tmp_path))


def test_the_rate_limit_caps_the_read_rate(tmp_path):
    src = image(tmp_path, "raw")
    start = time.monotonic()
    _, result = convert(tmp_path, src, "raw", rate_limit=2 * MIB)
    assert time.monotonic() - start >= result["bytes_read"] / (2 * MIB) - 1


def test_a_source_qemu_cannot_open_fails_the_stage_naming_it(tmp_path):
    src = str(tmp_path / "broken.qcow2")
    with open(src, "wb") as f:
        f.write(b"QFI\xfb" + bytes(500))
    with pytest.raises(StageFailed, match=f"{src}: cannot read the source"):
        convert(tmp_path, src, "qcow2")
    assert not os.path.exists(tmp_path / "out")  # refused before an output was made


def test_a_server_that_cannot_start_says_why():
    with pytest.raises(nbd.ServerFailed, match="No such file"):
        with nbd.serve(nbd.qemu_nbd("/nonexistent/disk.raw", "raw")):
            pass


def test_the_digest_does_not_depend_on_allocation(tmp_path):
    """Zeroes written as data and zeroes left as a hole give the same digest."""
    sparse = str(tmp_path / "sparse.raw")
    with open(sparse, "wb") as f:
        f.truncate(SIZE)
    full = str(tmp_path / "full.raw")
    with open(full, "wb") as f:
        f.write(bytes(SIZE))
    digests = {content_sha256(p, "raw", SIZE, lambda: True) for p in (sparse, full)}
    assert len(digests) == 1
    with nbd.serve(nbd.qemu_nbd(full, "raw")) as export:
        assert copier.copy(export, None, SIZE, segment=SEGMENT).bytes_read == SIZE  # read, found zero
