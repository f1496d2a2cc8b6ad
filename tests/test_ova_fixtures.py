"""virt-v2v's own `-i vmx` and `-i ova` fixtures (../shared/peer-fixtures/virt-v2v): `h2k plan --json`
on every case they describe gives the VM their expected results give, and the two cases that must
fail (a bad SHA1, a bad SHA256) exit 2 with one line and write nothing."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from tests.builders.v2v_fixtures import (MIB, Expected, digest_line, expected, expected_from_domain, fixture,
                                         stream_vmdk, tar_ova, vmx_case, zip_ova)
from tests.support import h2k


def plan(tmp_path, source: str, name: str) -> dict:
    """The planned VM; a 50 GiB packed disk may not fit here, which is not what is tested."""
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text(f"vms:\n  {json.dumps(name)}:\n    allow_concerns: [insufficient-space]\n")
    res = h2k("plan", source, "--json", "--config", str(cfg), "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    [pvm] = json.loads(res.stdout)["vms"]
    return pvm["vm"]


def assert_vm(vm: dict, exp: Expected) -> None:
    assert vm["name"] == exp.name
    assert vm["memory_mib"] * MIB == exp.memory
    assert vm["cpus"] == exp.cpus
    assert vm["firmware"] == exp.firmware and vm["secure_boot"] == exp.secure_boot
    assert [d["index"] for d in vm["disks"]] == list(range(len(exp.buses)))
    if any(exp.buses):
        assert [d["bus"] for d in vm["disks"]] == exp.buses
    assert len(vm["nics"]) == len(exp.nics)
    for nic, (network, mac, model) in zip(vm["nics"], exp.nics):
        assert nic["network"] == network and nic["mac"] == mac
        assert not model or nic["model"] == model


def concerns(vm: dict) -> dict[str, str]:
    return {c["id"]: c["message"] for c in vm["concerns"]}


# ---- VMX: the fixture .vmx beside real VMDKs for the disks it names ----
@pytest.mark.parametrize("n", range(1, 8))
def test_vmx_fixture(n, tmp_path):
    vmx, slots = vmx_case(f"test-i-vmx-{n}.vmx", str(tmp_path / "src"))
    exp = expected(f"test-i-vmx-{n}.expected")
    vm = plan(tmp_path, vmx, exp.name)
    assert_vm(vm, exp)
    placed = {os.path.basename(d["source"]): (d["bus"], d["controller"], d["unit"]) for d in vm["disks"]}
    assert placed == slots


# ---- OVA: built as each upstream script's name and OVF say ----
@pytest.fixture(scope="module")
def vmdks(tmp_path_factory) -> dict[int, bytes]:
    """streamOptimized VMDKs of 1, 2 and 3 MiB: the virtual size tells which member became the disk."""
    d = tmp_path_factory.mktemp("vmdks")
    return {mib: stream_vmdk(str(d / f"{mib}.vmdk"), mib) for mib in (1, 2, 3)}


def ovf_of(name: str) -> bytes:
    with open(fixture(name), "rb") as f:
        return f.read()


def ova_tar(d, v):  # the manifest lists only the disk, CRLF ends
    return tar_ova(str(d / "test-tar.ova"), [("test.ovf", ovf_of("test-i-ova-tar.ovf")), ("disk1.vmdk", v[1]),
                                              ("test.mf", digest_line("SHA1", "disk1.vmdk", v[1]).encode())])


def ova_subfolders(d, v):  # a directory entry; hrefs and manifest names relative to the sub-folder
    ovf = ovf_of("test-i-ova-subfolders.ovf")
    mf = digest_line("SHA1", "test.ovf", ovf) + digest_line("SHA1", "disk1.vmdk", v[1])
    return tar_ova(str(d / "test.ova"), [("subfolder", None), ("subfolder/test.ovf", ovf),
                                         ("subfolder/disk1.vmdk", v[1]), ("subfolder/test.mf", mf.encode())])


def ova_two_disks(d, v):  # one manifest per disk
    return tar_ova(str(d / "test.ova"), [
        ("test.ovf", ovf_of("test-i-ova-two-disks.ovf")),
        ("disk1.vmdk", v[1]), ("disk1.mf", digest_line("SHA1", "disk1.vmdk", v[1]).encode()),
        ("disk2.vmdk", v[2]), ("disk2.mf", digest_line("SHA256", "disk2.vmdk", v[2]).encode())])


def ova_snapshots(d, v):  # disk1.vmdk absent; its numbered snapshots, not in order
    snaps = [("disk1.vmdk.000000002", v[3]), ("disk1.vmdk.000000000", v[1]), ("disk1.vmdk.000000001", v[2])]
    mf = "".join(digest_line("SHA1", n, c) for n, c in snaps)
    return tar_ova(str(d / "test-snapshots.ova"), [("test.ovf", ovf_of("test-i-ova-snapshots.ovf")), *snaps,
                                                   ("test.mf", mf.encode())])


def ova_gz(d, v):  # ovf:compression="gzip" on the disk member
    gz = gzip.compress(v[1], mtime=0)
    ovf = ovf_of("test-i-ova-gz.ovf")
    mf = digest_line("SHA1", "test.ovf", ovf) + digest_line("SHA1", "disk1.vmdk.gz", gz)
    return tar_ova(str(d / "test.ova"), [("test.ovf", ovf), ("disk1.vmdk.gz", gz), ("test.mf", mf.encode())])


def _formats_members(v, folder: str = "") -> list[tuple[str, bytes]]:
    ovf = ovf_of("test-i-ova-formats.ovf")
    mf = digest_line("SHA1", "disk1.vmdk", v[1]) + digest_line("SHA1", "test.ovf", ovf)
    return [(folder + "test.ovf", ovf), (folder + "disk1.vmdk", v[1]), (folder + "test.mf", mf.encode())]


def ova_zip(d, v):
    return zip_ova(str(d / "test.ova"), _formats_members(v))


def ova_zip_subfolder(d, v):
    return zip_ova(str(d / "test.ova"), [("sub/", b"")] + _formats_members(v, "sub/"))


def ova_tar_gz(d, v):
    return tar_ova(str(d / "test.ova"), _formats_members(v), "gz")


def ova_tar_xz(d, v):
    return tar_ova(str(d / "test.ova"), _formats_members(v), "xz")


OVA_CASES = [  # (builder, expected file, MiB per disk, packed member ("" a gzip'd one) or None, (controller, unit)s)
    (ova_tar, "test-i-ova-tar.expected", [1], None, [(0, 0)]),
    (ova_subfolders, "test-i-ova-subfolders.expected", [1], None, [(0, 0)]),
    (ova_two_disks, "test-i-ova-two-disks.expected", [1, 2], None, [(0, 0), (0, 1)]),
    (ova_snapshots, "test-i-ova-snapshots.expected", [3], None, [(0, 0)]),
    (ova_gz, "test-i-ova-gz.expected", [1], "", [(0, 0)]),
    (ova_zip, "test-i-ova-formats.expected", [1], "disk1.vmdk", [(0, 0)]),
    (ova_zip_subfolder, "test-i-ova-formats.expected", [1], "sub/disk1.vmdk", [(0, 0)]),
    (ova_tar_gz, "test-i-ova-formats.expected", [1], "disk1.vmdk", [(0, 0)]),
    (ova_tar_xz, "test-i-ova-formats.expected", [1], "disk1.vmdk", [(0, 0)]),
]


@pytest.mark.parametrize("build,exp_file,sizes,member,slots", OVA_CASES, ids=[c[0].__name__ for c in OVA_CASES])
def test_ova_fixture(build, exp_file, sizes, member, slots, vmdks, tmp_path):
    exp = expected(exp_file)
    vm = plan(tmp_path, build(tmp_path, vmdks), exp.name)
    assert_vm(vm, exp)
    assert [(d["controller"], d["unit"]) for d in vm["disks"]] == slots
    # the image's own size, not the OVF's 50 GiB: which member became which disk
    assert [d["virtual_size"] for d in vm["disks"]] == [mib * MIB for mib in sizes]
    assert all(d["format"] == "vmdk" for d in vm["disks"])
    if member is None:  # read in place
        assert all(d["packed"] is None and d["source"].startswith("json:") for d in vm["disks"])
    else:  # unpacked by the fetch stage
        [disk] = vm["disks"]
        assert disk["packed"]["member"] == (member or None) and disk["packed"]["gzip"] == (member == "")
    assert "no-manifest" not in concerns(vm) and "capacity-mismatch" in concerns(vm)


def test_manifest_of_only_the_disks_leaves_the_ovf_a_concern(vmdks, tmp_path):
    vm = plan(tmp_path, ova_tar(tmp_path, vmdks), "2K8R2EESP1_2_Medium")
    assert "no manifest covers test.ovf" in concerns(vm)["unverified-files"]


def test_snapshot_members_use_the_newest(vmdks, tmp_path):
    vm = plan(tmp_path, ova_snapshots(tmp_path, vmdks), "2K8R2EESP1_2_Medium")
    assert "disk1.vmdk.000000002" in concerns(vm)["snapshot-member"]


# ---- test-i-ova.ovf: a tar, and the same files as a directory; test-i-ova.xml is the result ----
def _test_ova_files(v) -> list[tuple[str, bytes]]:
    ovf = ovf_of("test-i-ova.ovf")
    mf = digest_line("SHA1", "test-ova.ovf", ovf) + digest_line("SHA256", "test-ova.vmdk", v[1])
    return [("test-ova.ovf", ovf), ("test-ova.vmdk", v[1]), ("test-ova.mf", mf.encode())]


def test_ova_converted_by_virt_v2v(vmdks, tmp_path):
    exp = expected_from_domain("test-i-ova.xml")
    vm = plan(tmp_path, tar_ova(str(tmp_path / "test-ova.ova"), _test_ova_files(vmdks)), exp.name)
    assert_vm(vm, exp)
    assert not {"no-manifest", "unverified-files"} & set(concerns(vm))


@pytest.mark.parametrize("named", ["directory", "ovf"])
def test_ova_directory_with_manifest_of_another_stem(named, vmdks, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, content in _test_ova_files(vmdks):
        (src / ("test.mf" if name.endswith(".mf") else name)).write_bytes(content)
    exp = expected_from_domain("test-i-ova.xml")
    vm = plan(tmp_path, str(src if named == "directory" else src / "test-ova.ovf"), exp.name)
    assert_vm(vm, exp)
    assert not {"no-manifest", "unverified-files"} & set(concerns(vm))


def test_ova_readable_only_by_its_owner(vmdks, tmp_path):
    ovf = ovf_of("test-i-ova-as-root.ovf")
    ova = tar_ova(str(tmp_path / "test.ova"), [("test.ovf", ovf), ("disk.vmdk", vmdks[1])])
    os.chmod(ova, 0o400)
    vm = plan(tmp_path, ova, "ova-test")
    assert vm["name"] == "ova-test" and len(vm["disks"]) == 1


# ---- test-i-ova-checksums.ovf: the manifest checks ----
def _checksums_ova(d, v, mf: str) -> str:
    return tar_ova(str(d / "test.ova"), [("test.ovf", ovf_of("test-i-ova-checksums.ovf")), ("disk.vmdk", v[1]),
                                         ("test.mf", mf.encode())])


def _good_lines(v) -> str:
    return digest_line("SHA1", "test.ovf", ovf_of("test-i-ova-checksums.ovf")) + digest_line("SHA256", "disk.vmdk", v[1])


def test_good_checksums(vmdks, tmp_path):
    vm = plan(tmp_path, _checksums_ova(tmp_path, vmdks, _good_lines(vmdks)), "ova-test")
    assert vm["name"] == "ova-test" and not {"unverified-files", "manifest-line-skipped"} & set(concerns(vm))


@pytest.mark.parametrize("algo", ["SHA1", "SHA256"])
def test_bad_checksum_fails_with_one_line(algo, vmdks, tmp_path):
    bad = digest_line("SHA1", "test.ovf", ovf_of("test-i-ova-checksums.ovf")) + \
        digest_line(algo, "disk.vmdk", vmdks[1] + b"corrupted")
    ova = _checksums_ova(tmp_path, vmdks, bad)
    res = h2k("plan", ova, "--json", "-o", str(tmp_path / "out"))
    assert res.returncode == 2 and res.stdout == ""
    [line] = res.stderr.strip().splitlines()
    assert line == f"h2k: error: {ova}:test.mf: {algo} of disk.vmdk does not match the manifest"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("junk", ["SHA1(disk.vmdk) 0123456789abcdef", "SHA1(test.ovf)= ", "garbage"])
def test_invalid_manifest_line_is_skipped_with_a_warning(junk, vmdks, tmp_path):
    mf = _good_lines(vmdks) + junk + "\r\n"
    vm = plan(tmp_path, _checksums_ova(tmp_path, vmdks, mf), "ova-test")
    assert "test.mf: line 3 not 'SHA1(file)= digest'" in concerns(vm)["manifest-line-skipped"]
