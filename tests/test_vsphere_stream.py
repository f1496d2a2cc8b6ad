"""vSphere disks read in place from the simulator's datastore over HTTPS (h2k_tasks/vsphere_stream.py):
a sparse disk moves its allocated bytes only, a flat one its whole file, a cut transfer is taken
up again where it stopped, and the output equals the file placed on the datastore. What cannot be
streamed (snapshot deltas, several extents, an extent outside the disk's folder, a server that
ignores Range, a file changed since fetch) is refused naming the file and why. The session cookie
is never an argument, and nothing of the stream stays behind."""
from __future__ import annotations

import os
import subprocess

import pytest

from h2k_planner.errors import InputError
from h2k_planner.models import Disk, Output
from h2k_tasks.datastore import split_datastore_path
from h2k_tasks.stages import StageFailed
from h2k_tasks.stages.convert import convert_disk
from h2k_tasks.vsphere_stream import descriptor_extents, probe, scratch_dir, stream, unchanged
from tests.builders.disks import MIB
from tests.support import processes_with
from tests.vcsim.cutting_proxy import CuttingProxy

pytestmark = pytest.mark.slow
VIRTUAL = 512 * MIB
WRITTEN = [(0, 1), (100, 8), (300, 3), (511, 1)]  # (MiB offset, MiB) of random data in the sparse disk
FLAT = 48 * MIB


def _qemu_io_writes(path, fmt: str, writes) -> None:
    for mib, length in writes:
        data = os.urandom(length * MIB)
        subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -s /dev/stdin {mib}M {length}M", str(path)],
                       input=data, check=True, capture_output=True)


def _place(vcsim, folder: str, name: str, subformat: str, size: int, writes) -> tuple[str, object]:
    d = vcsim.datastore_dir / folder
    d.mkdir(exist_ok=True)
    for old in d.glob("*.vmdk"):
        old.unlink()
    path = d / name
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(path), str(size)],
                   check=True)
    _qemu_io_writes(path, "vmdk", writes)
    return f"[LocalDS_0] {folder}/{name}", path


@pytest.fixture(scope="module")
def sparse(vcsim):
    return _place(vcsim, "stream-sparse", "thin.vmdk", "monolithicSparse", VIRTUAL, WRITTEN)


@pytest.fixture(scope="module")
def flat(vcsim):
    return _place(vcsim, "stream-flat", "flat.vmdk", "monolithicFlat", FLAT, [(0, FLAT // MIB)])


def _copy(endpoint, fetched: dict, tmp_path, size: int, gen: int = 1) -> tuple[str, dict, int]:
    """Stream the disk `fetched` describes into a raw output, as convert does; (output, result, bytes
    taken from the datastore)."""
    out = tmp_path / "vm"
    dest = str(out / "vm-disk0.raw")
    disk = Disk(source="[LocalDS_0] x.vmdk", format="vmdk", virtual_size=size)
    os.makedirs(out, exist_ok=True)
    with stream(endpoint.model_dump(), fetched, scratch_dir(str(out), "vm-disk0", gen)) as s:
        result = convert_disk(disk, s.address, Output(directory=str(out), format="raw"), dest, gen,
                              {"files": fetched["files"]}, lambda: True, lambda n: None, lambda: True,
                              lambda: False, segment=64 * MIB)
    return dest, result, s.transferred


def _same(a, fmt: str, b) -> bool:
    return subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", "raw", str(a), str(b)],
                          capture_output=True).returncode == 0


def test_a_sparse_disk_moves_its_allocated_bytes_only(endpoint, sparse, tmp_path):
    path, local = sparse
    fetched = probe(endpoint.model_dump(), path, [path], VIRTUAL)
    assert fetched["stream"] == {"path": path, "format": "vmdk"}
    assert [f["path"] for f in fetched["files"]] == [path]
    dest, result, transferred = _copy(endpoint, fetched, tmp_path, VIRTUAL)
    assert _same(local, "vmdk", dest)
    written = sum(length for _, length in WRITTEN) * MIB
    # The file holds the grains written and their tables; qemu also reads the file's first MiB once,
    # looking for the descriptor.
    assert written <= transferred <= os.path.getsize(local) + MIB, (transferred, os.path.getsize(local))
    assert result["bytes_read"] < VIRTUAL / 10  # the copier was told where the holes are
    assert os.listdir(tmp_path / "vm") == ["vm-disk0.raw"]  # no copy of the source, no scratch


def test_a_flat_disk_moves_its_extent(endpoint, flat, tmp_path):
    path, local = flat
    fetched = probe(endpoint.model_dump(), path, [path], FLAT)
    assert fetched["stream"] == {"path": path.replace("flat.vmdk", "flat-flat.vmdk"), "format": "raw"}
    assert len(fetched["files"]) == 2  # the descriptor and its extent, both watched for changes
    dest, _, transferred = _copy(endpoint, fetched, tmp_path, FLAT)
    assert _same(local, "vmdk", dest)
    assert transferred == FLAT


def test_a_cut_transfer_goes_on_from_where_it_stopped(endpoint, flat, tmp_path):
    path, local = flat
    with CuttingProxy((endpoint.host, endpoint.port), cut_after=8 * MIB) as proxy:
        through = endpoint.model_copy(update={"port": proxy.port})
        fetched = probe(through.model_dump(), path, [path], FLAT)
        dest, _, transferred = _copy(through, fetched, tmp_path, FLAT)
    assert proxy.cuts == 1
    assert _same(local, "vmdk", dest)
    # Starting over would relay 8 MiB more than the file; a ranged retry of the cut read relays at
    # most that one read again, plus the SOAP and HEAD chatter.
    assert FLAT <= proxy.to_client < FLAT + 8 * MIB, proxy.to_client


def test_a_disk_changed_since_fetch_is_refused_and_noticed(endpoint, sparse, tmp_path):
    path, local = sparse
    fetched = probe(endpoint.model_dump(), path, [path], VIRTUAL)
    assert unchanged(endpoint.model_dump(), fetched)
    st = os.stat(local)
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    try:
        assert not unchanged(endpoint.model_dump(), fetched)
        with pytest.raises(StageFailed, match=r"thin\.vmdk: changed on the datastore since fetch"):
            _copy(endpoint, fetched, tmp_path, VIRTUAL)
    finally:
        os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.listdir(tmp_path / "vm") == []


def test_the_session_cookie_is_never_an_argument_and_nothing_stays(endpoint, sparse, tmp_path):
    path, _ = sparse
    fetched = probe(endpoint.model_dump(), path, [path], VIRTUAL)
    scratch = scratch_dir(str(tmp_path), "vm-disk0", 1)
    seen = {}
    with stream(endpoint.model_dump(), fetched, scratch) as s:
        seen["servers"] = processes_with("nbdkit", "curl") + processes_with("qemu-nbd", s.address)
        seen["scratch"] = sorted(os.listdir(scratch))
        seen["mode"] = os.stat(scratch).st_mode & 0o777
    assert seen["servers"] and all("cookie=+" in c or "qemu-nbd" in c for c in seen["servers"])
    assert not any("vmware_soap_session" in c for c in seen["servers"])
    assert "cookie" not in seen["scratch"] and seen["mode"] == 0o700  # nbdkit read it, then it went
    assert not os.path.exists(scratch) and not processes_with("nbdkit", "curl", str(tmp_path))


def test_a_dead_attempts_scratch_is_removed(tmp_path):
    old = scratch_dir(str(tmp_path), "vm-disk0", 1)
    os.makedirs(old)
    assert scratch_dir(str(tmp_path), "vm-disk0", 2).endswith("g2") and not os.path.exists(old)


def _descriptor(vcsim, folder: str, text: str) -> str:
    d = vcsim.datastore_dir / folder
    d.mkdir(exist_ok=True)
    (d / "d.vmdk").write_text(text)
    return f"[LocalDS_0] {folder}/d.vmdk"


@pytest.mark.parametrize("folder,text,why", [
    ("delta", '# Disk DescriptorFile\nCID=1\nparentCID=2a7b3c4d\nparentFileNameHint="base.vmdk"\n'
              'RW 2048 SPARSE "d-delta.vmdk"\n', "a snapshot delta"),
    ("split", '# Disk DescriptorFile\nparentCID=ffffffff\nRW 4192256 SPARSE "d-s001.vmdk"\n'
              'RW 4192256 SPARSE "d-s002.vmdk"\n', "2 extents: only single-extent disks are streamed"),
    ("evil", '# Disk DescriptorFile\nRW 2048 FLAT "../stream-flat/flat-flat.vmdk" 0\n', "not a plain file name"),
    ("offset", '# Disk DescriptorFile\nRW 2048 FLAT "d.vmdk" 512\n', "a FLAT extent at offset 512 is not streamed"),
    ("notvmdk", "MZ this is no disk\n", "neither a VMDK descriptor nor a hosted sparse VMDK"),
])
def test_what_cannot_be_streamed_is_refused_naming_the_file(endpoint, vcsim, folder, text, why):
    path = _descriptor(vcsim, folder, text)
    with pytest.raises(StageFailed, match=rf"{folder}/d\.vmdk: .*{why}"):
        probe(endpoint.model_dump(), path, [path], 1 * MIB)


def test_a_snapshot_chain_is_refused(endpoint, sparse):
    path, _ = sparse
    with pytest.raises(StageFailed, match="a snapshot chain of 2 files"):
        probe(endpoint.model_dump(), path, [path, path.replace("thin", "thin-000001")], VIRTUAL)


def test_a_server_that_ignores_range_is_refused(endpoint, vcsim, sparse):
    """The launcher serves files under norange/ whole whatever Range asks, as some proxies do."""
    _, local = sparse
    d = vcsim.datastore_dir / "norange"
    d.mkdir(exist_ok=True)
    if not (d / "thin.vmdk").exists():
        os.link(local, d / "thin.vmdk")
    path = "[LocalDS_0] norange/thin.vmdk"
    with pytest.raises(StageFailed, match=r"norange/thin\.vmdk: the datastore server ignores HTTP Range"):
        probe(endpoint.model_dump(), path, [path], VIRTUAL)


def test_a_missing_file_and_a_refused_one_are_clear_errors(endpoint):
    with pytest.raises(StageFailed, match=r"nowhere/ghost\.vmdk: no such file on the datastore"):
        probe(endpoint.model_dump(), "[LocalDS_0] nowhere/ghost.vmdk", [], 1 * MIB)
    with pytest.raises(StageFailed, match=r"refused/d\.vmdk: the datastore refused access \(HTTP 403\)$"):
        probe(endpoint.model_dump(), "[LocalDS_0] refused/d.vmdk", [], 1 * MIB)


def test_an_expired_session_logs_in_again(endpoint, vcsim, tmp_path):
    """The launcher refuses the first session cookie under expired-once/, as vCenter does once a session ends."""
    path, local = _place(vcsim, "expired-once", "d.vmdk", "monolithicSparse", 8 * MIB, [(1, 2)])
    fetched = probe(endpoint.model_dump(), path, [path], 8 * MIB)
    dest, _, _ = _copy(endpoint, fetched, tmp_path, 8 * MIB)
    assert _same(local, "vmdk", dest)


def test_split_datastore_path_and_descriptor_extents():
    assert split_datastore_path("[LocalDS_0] vm one/disk.vmdk") == ("LocalDS_0", "vm one/disk.vmdk")
    with pytest.raises(InputError, match="not a datastore path"):
        split_datastore_path("/vmfs/volumes/disk.vmdk")
    text = ('# Disk DescriptorFile\nversion=1\ncreateType="twoGbMaxExtentSparse"\n'
            'RW 4192256 SPARSE "d-s001.vmdk"\nRW 2048 ZERO\nRDONLY 100 FLAT "d-flat.vmdk" 0\n')
    assert descriptor_extents(text) == [("SPARSE", "d-s001.vmdk", 0), ("ZERO", None, 0), ("FLAT", "d-flat.vmdk", 0)]
