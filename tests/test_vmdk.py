"""VMDK descriptors and chains, built with qemu-img."""
from __future__ import annotations

import os
import subprocess

import pytest

from h2k_planner.errors import InputError
from h2k_planner.probe import detect_format
from h2k_planner.sources.vmdk import parse_descriptor, read_chain, vmdk_disk


def qemu_img(*args, cwd=None):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, cwd=cwd)


def test_embedded_descriptor_and_snapshot_chain(tmp_path):
    qemu_img("create", "-q", "-f", "vmdk", "base.vmdk", "16M", cwd=tmp_path)
    qemu_img("create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "snap.vmdk", cwd=tmp_path)
    chain = read_chain(str(tmp_path / "snap.vmdk"))
    assert [os.path.basename(d.path) for d in chain] == ["snap.vmdk", "base.vmdk"]
    assert chain[0].parent_cid == chain[1].cid and chain[0].create_type == "monolithicSparse"
    disk = vmdk_disk(str(tmp_path / "snap.vmdk"), bus="scsi")
    assert (disk.virtual_size, disk.depth, disk.format) == (16 * 2**20, 2, "vmdk")


def test_split_and_flat_extents(tmp_path):
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat", "split.vmdk", "5G", cwd=tmp_path)
    desc = parse_descriptor(str(tmp_path / "split.vmdk"))
    assert desc.create_type == "twoGbMaxExtentFlat" and len(desc.extents) == 3
    assert desc.capacity == 5 * 2**30
    assert vmdk_disk(str(tmp_path / "split.vmdk")).chain == [str(tmp_path / "split.vmdk")] + [e.file for e in desc.extents]
    os.unlink(desc.extents[1].file)
    with pytest.raises(InputError, match="missing extent split-f002.vmdk"):
        read_chain(str(tmp_path / "split.vmdk"))


def test_chain_loop_is_refused(tmp_path):
    for name, parent in (("a.vmdk", "b.vmdk"), ("b.vmdk", "a.vmdk")):
        (tmp_path / name).write_text(
            f'# Disk DescriptorFile\nversion=1\nCID=00000001\nparentCID=00000001\ncreateType="monolithicFlat"\n'
            f'parentFileNameHint="{parent}"\nRW 2048 FLAT "{name}.flat" 0\n')
        (tmp_path / f"{name}.flat").write_bytes(bytes(2048 * 512))
    with pytest.raises(InputError, match="loops back"):
        read_chain(str(tmp_path / "a.vmdk"))


def test_delta_without_parent_hint(tmp_path):
    (tmp_path / "d.vmdk").write_text('# Disk DescriptorFile\nCID=1\nparentCID=2\ncreateType="vmfsSparse"\n'
                                     'RW 8 VMFSSPARSE "d-delta.vmdk"\n')
    (tmp_path / "d-delta.vmdk").write_bytes(b"COWD" + bytes(508))
    with pytest.raises(InputError, match="without parentFileNameHint"):
        read_chain(str(tmp_path / "d.vmdk"))


def test_content_not_extension_decides_the_format(tmp_path):
    qemu_img("create", "-q", "-f", "qcow2", "disguised.vmdk", "1M", cwd=tmp_path)
    assert detect_format(str(tmp_path / "disguised.vmdk")) == "qcow2"
    with pytest.raises(InputError, match="not a VMDK descriptor"):
        vmdk_disk(str(tmp_path / "disguised.vmdk"))
    (tmp_path / "empty.vmdk").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        detect_format(str(tmp_path / "empty.vmdk"))
