"""Disk download from the simulator's datastore over HTTPS: byte-identical, resumable after a cut."""
from __future__ import annotations

import os
import subprocess

import pytest

from h2k_planner.errors import InputError
from h2k_tasks.stages.download import Cancelled, descriptor_extents, download_disk, split_datastore_path
from tests.vcsim.cutting_proxy import CuttingProxy

DISK = "[LocalDS_0] download/download.vmdk"
SIZE = 48 << 20


@pytest.fixture(scope="module")
def placed_disk(vcsim, tmp_path_factory):
    """A monolithicFlat VMDK (descriptor + flat extent) of random data, put where the VM's disk lives."""
    folder = vcsim.datastore_dir / "download"
    raw = tmp_path_factory.mktemp("src") / "disk.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(SIZE))
    for name in ("download.vmdk", "download-flat.vmdk"):
        (folder / name).unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat",
                    str(raw), str(folder / "download.vmdk")], check=True)
    return folder / "download.vmdk"


def _identical(a, b) -> bool:
    return subprocess.run(["qemu-img", "compare", str(a), str(b)], capture_output=True).returncode == 0


def _through(endpoint, proxy):
    return endpoint.model_copy(update={"port": proxy.port})


def test_download_is_byte_identical(endpoint, placed_disk, tmp_path):
    seen = []
    files = download_disk(endpoint, DISK, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert [f.name for f in files] == ["download.vmdk", "download-flat.vmdk"]
    assert _identical(placed_disk, files[0])
    assert files[1].read_bytes() == (placed_disk.parent / "download-flat.vmdk").read_bytes()
    total = sum(f.stat().st_size for f in files)
    assert seen[-1] == (total, total)
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert not list(tmp_path.glob("*.part"))


def test_cut_connection_resumes_with_range(endpoint, placed_disk, tmp_path):
    with CuttingProxy((endpoint.host, endpoint.port), cut_after=20 << 20) as proxy:
        files = download_disk(_through(endpoint, proxy), DISK, tmp_path)
    assert proxy.cuts == 1
    assert _identical(placed_disk, files[0])
    # A restart from zero would relay 20 MiB + 48 MiB; a resume relays the file once plus SOAP chatter.
    assert SIZE <= proxy.to_client < SIZE + (2 << 20), proxy.to_client


def test_cancel_keeps_part_and_rerun_fetches_only_the_rest(endpoint, placed_disk, tmp_path):
    def cancel_past_16mib():
        return bool(seen) and seen[-1][0] > (16 << 20)

    seen: list[tuple[int, int]] = []
    with pytest.raises(Cancelled):
        download_disk(endpoint, DISK, tmp_path, progress=lambda d, t: seen.append((d, t)),
                      cancelled=cancel_past_16mib)
    part = tmp_path / "download-flat.vmdk.part"
    kept = part.stat().st_size
    assert (8 << 20) < kept < SIZE
    assert not (tmp_path / "download-flat.vmdk").exists()

    with CuttingProxy((endpoint.host, endpoint.port)) as proxy:
        files = download_disk(_through(endpoint, proxy), DISK, tmp_path)
    assert _identical(placed_disk, files[0])
    assert SIZE - kept <= proxy.to_client < SIZE - kept + (1 << 20), (proxy.to_client, kept)


def test_complete_files_are_not_fetched_again(endpoint, placed_disk, tmp_path):
    download_disk(endpoint, DISK, tmp_path)
    with CuttingProxy((endpoint.host, endpoint.port)) as proxy:
        download_disk(_through(endpoint, proxy), DISK, tmp_path)
    assert proxy.to_client < (1 << 20)


def test_single_file_sparse_disk(endpoint, vcsim, tmp_path):
    src = vcsim.datastore_dir / "clean" / "clean.vmdk"
    (vcsim.datastore_dir / "clean" / "clean-flat.vmdk").unlink(missing_ok=True)
    src.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(src), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1M 2M", str(src)], check=True,
                   capture_output=True)
    files = download_disk(endpoint, "[LocalDS_0] clean/clean.vmdk", tmp_path)
    assert [f.name for f in files] == ["clean.vmdk"]
    assert _identical(src, files[0])


def test_missing_file_is_a_clear_error(endpoint, tmp_path):
    with pytest.raises(InputError, match="no such file on the datastore"):
        download_disk(endpoint, "[LocalDS_0] nowhere/ghost.vmdk", tmp_path)


def test_split_datastore_path():
    assert split_datastore_path("[LocalDS_0] vm one/disk.vmdk") == ("LocalDS_0", "vm one/disk.vmdk")
    with pytest.raises(InputError, match="not a datastore path"):
        split_datastore_path("/vmfs/volumes/disk.vmdk")


def test_descriptor_extents():
    text = ('# Disk DescriptorFile\nversion=1\ncreateType="twoGbMaxExtentSparse"\n'
            'RW 4192256 SPARSE "d-s001.vmdk"\nRW 4192256 SPARSE "d-s002.vmdk"\nRW 2048 ZERO\n'
            'RDONLY 100 FLAT "d-flat.vmdk" 0\n')
    assert descriptor_extents(text) == ["d-s001.vmdk", "d-s002.vmdk", "d-flat.vmdk"]


def test_extent_outside_the_folder_is_refused(endpoint, vcsim, tmp_path):
    folder = vcsim.datastore_dir / "evil"
    folder.mkdir()
    (folder / "evil.vmdk").write_text('# Disk DescriptorFile\nRW 2048 FLAT "../clean/clean.vmdk" 0\n')
    with pytest.raises(InputError, match="not a plain file name"):
        download_disk(endpoint, "[LocalDS_0] evil/evil.vmdk", tmp_path)


def test_expired_session_logs_in_again(endpoint, vcsim, tmp_path):
    """The launcher refuses the first session cookie under expired-once/, as vCenter does once a session ends."""
    folder = vcsim.datastore_dir / "expired-once"
    folder.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(folder / "d.vmdk"), "8M"], check=True)
    files = download_disk(endpoint, "[LocalDS_0] expired-once/d.vmdk", tmp_path)
    assert _identical(folder / "d.vmdk", files[0])


def test_refused_access_is_a_clear_error(endpoint, tmp_path):
    with pytest.raises(InputError, match=r"refused/d.vmdk: the datastore refused access \(HTTP 403\)$"):
        download_disk(endpoint, "[LocalDS_0] refused/d.vmdk", tmp_path)
