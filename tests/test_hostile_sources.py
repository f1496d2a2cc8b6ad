"""Hostile sources: every case exits 2 with one line naming the file and the problem, and nothing
is written anywhere in the sandbox (a listing of it before and after must be equal)."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import tarfile
import zipfile

import pytest

from tests.builders.ovf import ovf_xml
from tests.support import h2k

MIB = 2**20


def listing(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in files + dirs}


def qemu_img(*args: str, cwd=None) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, cwd=cwd)


@pytest.fixture(scope="module")
def stream_vmdk(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("vmdk")
    qemu_img("create", "-q", "-f", "raw", str(d / "r.raw"), "1M")
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(d / "r.raw"), str(d / "d.vmdk"))
    return (d / "d.vmdk").read_bytes()


def _ova(path, members: list[tuple[str, bytes | tarfile.TarInfo]]) -> str:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in members:
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return str(path)


def _good_members(vmdk: bytes) -> list[tuple[str, bytes]]:
    return [("vm.ovf", ovf_xml("vm", [("disk.vmdk", MIB, False)]).encode()), ("disk.vmdk", vmdk)]


def _special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _descriptor(extent_line: str, extra: str = "") -> str:
    return ('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
            f"{extra}{extent_line}\n")


# ---- each case builds a hostile source under `src` and returns (argument, file named, problem) ----
def ova_dotdot(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("../evil.vmdk", b"x")])
    return ova, ova, "tar member '../evil.vmdk' escapes the archive"


def ova_absolute(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("/tmp/evil", b"x")])
    return ova, ova, "tar member '/tmp/evil' escapes the archive"


def ova_symlink(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("link", _special("link", tarfile.SYMTYPE, "/etc/shadow"))])
    return ova, ova, "tar member 'link' is a link"


def ova_hardlink(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("hard", _special("hard", tarfile.LNKTYPE, "/etc/shadow"))])
    return ova, ova, "tar member 'hard' is a link"


def ova_device(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("dev", _special("dev", tarfile.CHRTYPE))])
    return ova, ova, "tar member 'dev' is not a regular file"


def ova_subfolder_escape(src, vmdk):
    members = [("sub", _special("sub", tarfile.DIRTYPE))] + [(f"sub/{n}", c) for n, c in _good_members(vmdk)]
    ova = _ova(src / "a.ova", members + [("sub/../../evil", b"x")])
    return ova, ova, "tar member 'sub/../../evil' escapes the archive"


def ova_href_escape(src, vmdk):
    ovf = ovf_xml("vm", [("../../etc/shadow", MIB, False)]).encode()
    ova = _ova(src / "a.ova", [("sub/vm.ovf", ovf), ("sub/disk.vmdk", vmdk)])
    return ova, ova, "references ../../etc/shadow, which lies outside the archive"


def ova_zip_dotdot(src, vmdk):
    ova = str(src / "a.ova")
    with zipfile.ZipFile(ova, "w") as z:
        for name, content in _good_members(vmdk) + [("../evil.vmdk", b"x")]:
            z.writestr(name, content)
    return ova, ova, "zip member '../evil.vmdk' escapes the archive"


def ova_zip_symlink(src, vmdk):
    ova = str(src / "a.ova")
    with zipfile.ZipFile(ova, "w") as z:
        for name, content in _good_members(vmdk):
            z.writestr(name, content)
        link = zipfile.ZipInfo("link")
        link.create_system, link.external_attr = 3, (0o120777 << 16)
        z.writestr(link, "/etc/shadow")
    return ova, ova, "zip member 'link' is a link"


def ova_duplicate(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("disk.vmdk", b"second")])
    return ova, ova, "tar member 'disk.vmdk' appears twice"


def _gzip_tar(src, members) -> str:
    plain = _ova(src / "plain.tar", members)
    ova = str(src / "a.ova")
    with open(plain, "rb") as f, gzip.open(ova, "wb") as g:
        shutil.copyfileobj(f, g)
    os.unlink(plain)
    return ova


def ova_gzip_tar_symlink(src, vmdk):
    ova = _gzip_tar(src, _good_members(vmdk) + [("link", _special("link", tarfile.SYMTYPE, "/etc/shadow"))])
    return ova, ova, "tar member 'link' is a link"


def ova_gzip_bomb(src, vmdk):
    tar = b""
    for name, content in _good_members(vmdk) + [("pad.bin", b"")]:
        info = tarfile.TarInfo(name)
        info.size = len(content) if content else 2**40  # declared, refused before a byte of it is inflated
        tar += info.tobuf(tarfile.GNU_FORMAT) + content + bytes(-len(content) % 512)
    ova = str(src / "a.ova")
    with gzip.open(ova, "wb") as g:
        g.write(tar + bytes(MIB))
    return ova, ova, "refused as a decompression bomb"


def ova_not_an_archive(src, vmdk):
    (src / "a.ova").write_bytes(b"\x1f\x8b" + os.urandom(4096))
    return str(src / "a.ova"), str(src / "a.ova"), "archive"


def ova_truncated(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk))
    with open(ova, "r+b") as f:
        f.truncate(2048)
    return ova, ova, "tar"


def ova_two_ovfs(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk) + [("other.ovf", b"<Envelope/>")])
    return ova, ova, "holds 2 .ovf descriptors"


def ova_missing_disk(src, vmdk):
    ova = _ova(src / "a.ova", _good_members(vmdk)[:1])
    return ova, ova, "references disk.vmdk, which is not in the archive"


def ova_manifest_mismatch(src, vmdk):
    members = _good_members(vmdk)
    mf = "".join(f"SHA256({n})= {hashlib.sha256(c + (b'!' if n == 'disk.vmdk' else b'')).hexdigest()}\n"
                 for n, c in members)
    ova = _ova(src / "a.ova", members + [("vm.mf", mf.encode())])
    return ova, f"{ova}:vm.mf", "SHA256 of disk.vmdk does not match the manifest"


def _ovf_dir(src, vmdk, xml: str | None = None, name: str = "vm") -> str:
    (src / "disk.vmdk").write_bytes(vmdk)
    ovf = src / f"{name}.ovf"
    ovf.write_text(xml if xml is not None else ovf_xml(name, [("disk.vmdk", MIB, False)]))
    return str(ovf)


def ovf_sha1_mismatch(src, vmdk):
    ovf = _ovf_dir(src, vmdk)
    (src / "vm.mf").write_text(f"SHA1(vm.ovf)= {'0' * 40}\nSHA1(disk.vmdk)= {hashlib.sha1(vmdk).hexdigest()}\n")
    return ovf, str(src / "vm.mf"), "SHA1 of vm.ovf does not match the manifest"


def ovf_manifest_lists_missing(src, vmdk):
    ovf = _ovf_dir(src, vmdk)
    (src / "vm.mf").write_text(f"SHA1(vm.ovf)= {hashlib.sha1(open(ovf, 'rb').read()).hexdigest()}\n"
                               f"SHA256(gone.vmdk)= {'0' * 64}\n")
    return ovf, str(src / "vm.mf"), "lists gone.vmdk, which does not exist"


def ovf_manifest_outside(src, vmdk):
    ovf = _ovf_dir(src, vmdk)
    (src / "disk1.mf").write_text(f"SHA1(../../etc/passwd)= {'0' * 40}\n")
    return ovf, str(src / "disk1.mf"), "lies outside the manifest's folder tree"


def ova_manifest_digest_length(src, vmdk):
    members = _good_members(vmdk)
    mf = f"SHA1(disk.vmdk)= {hashlib.sha256(vmdk).hexdigest()}\n"
    ova = _ova(src / "a.ova", members + [("disk.mf", mf.encode())])
    return ova, f"{ova}:disk.mf", "the SHA1 digest of disk.vmdk has 64 hex digits, not 40"


def ovf_billion_laughs(src, vmdk):
    xml = ('<?xml version="1.0"?><!DOCTYPE Envelope [<!ENTITY a "aaaaaaaaaa">'
           + "".join(f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(8))
           + ']><Envelope>&i;</Envelope>')
    ovf = _ovf_dir(src, vmdk, xml)
    return ovf, ovf, "refused XML"


def ovf_external_entity(src, vmdk):
    xml = '<?xml version="1.0"?><!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope>&x;</Envelope>'
    ovf = _ovf_dir(src, vmdk, xml)
    return ovf, ovf, "refused XML"


def ovf_not_utf8(src, vmdk):
    ovf = _ovf_dir(src, vmdk, "")
    open(ovf, "wb").write(b"<?xml version='1.0' encoding='utf-8'?><Envelope>\xff\xfe\xfa</Envelope>")
    return ovf, ovf, "not well-formed XML"


def ovf_empty(src, vmdk):
    ovf = _ovf_dir(src, vmdk, "")
    return ovf, ovf, "is empty"


def ovf_href_dotdot(src, vmdk):
    (src.parent / "secret.vmdk").write_bytes(vmdk)
    ovf = _ovf_dir(src, vmdk, ovf_xml("vm", [("../secret.vmdk", MIB, False)]))
    return ovf, ovf, "outside the source directory"


def ovf_href_shadow(src, vmdk):
    ovf = _ovf_dir(src, vmdk, ovf_xml("vm", [("/etc/shadow", MIB, False)]))
    return ovf, ovf, "refers to /etc/shadow outside the source directory"


def ovf_absurd_capacity(src, vmdk):
    xml = ovf_xml("vm", [("disk.vmdk", MIB, False)]).replace('ovf:capacity="1"', 'ovf:capacity="99999999999"')
    ovf = _ovf_dir(src, vmdk, xml)
    return ovf, ovf, "capacity of 104857599998951424 bytes is absurd"


def ovf_bad_mac(src, vmdk):
    ovf = _ovf_dir(src, vmdk, ovf_xml("vm", [("disk.vmdk", MIB, False)], mac="00:50:56:zz:00:01"))
    return ovf, ovf, "malformed MAC address"


def ovf_gzip_bomb_header(src, vmdk):
    (src / "disk.vmdk.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    ovf = _ovf_dir(src, vmdk, ovf_xml("vm", [("disk.vmdk.gz", MIB, True)]))
    return ovf, ovf, "gzip'd disk cannot be decompressed"


def vmdk_extent_dotdot(src, vmdk):
    (src.parent / "outside-flat.vmdk").write_bytes(bytes(MIB))
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 2048 FLAT "../outside-flat.vmdk" 0'))
    return str(desc), str(desc), "outside the source directory"


def vmdk_extent_shadow(src, vmdk):
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 2048 FLAT "/etc/shadow" 0'))
    return str(desc), str(desc), "refers to /etc/shadow outside the source directory"


def vmdk_extent_symlink_out(src, vmdk):
    os.symlink("/etc/passwd", src / "d-flat.vmdk")
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 2048 FLAT "d-flat.vmdk" 0'))
    return str(desc), str(desc), "outside the source directory"


def vmdk_extent_fifo(src, vmdk):
    os.mkfifo(src / "d-flat.vmdk")
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 2048 FLAT "d-flat.vmdk" 0'))
    return str(desc), str(desc), "which is not a regular file"


def vmdk_parent_outside(src, vmdk):
    desc = src / "d.vmdk"
    (src / "d-flat.vmdk").write_bytes(bytes(MIB))
    desc.write_text(_descriptor('RW 2048 FLAT "d-flat.vmdk" 0', 'parentFileNameHint="/var/lib/other/base.vmdk"\n')
                    .replace("parentCID=ffffffff", "parentCID=00000001"))
    return str(desc), str(desc), "refers to /var/lib/other/base.vmdk outside the source directory"


def vmdk_flat_too_small(src, vmdk):
    (src / "d-flat.vmdk").write_bytes(bytes(MIB))
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 409600 FLAT "d-flat.vmdk" 0'))
    return str(desc), str(desc), "extent d-flat.vmdk holds 1048576 bytes, the descriptor declares 209715200"


def vmdk_absurd_size(src, vmdk):
    (src / "d-flat.vmdk").write_bytes(bytes(MIB))
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 999999999999999 FLAT "d-flat.vmdk" 0'))
    return str(desc), str(desc), "declared capacity of 511999999999999488 bytes is absurd"


def vmdk_raw_device_mapping(src, vmdk):
    desc = src / "d.vmdk"
    desc.write_text(_descriptor('RW 2048 VMFSRDM "d-rdm.vmdk"'))
    return str(desc), str(desc), "extent type VMFSRDM is not supported"


def vmdk_not_utf8(src, vmdk):
    desc = src / "d.vmdk"
    desc.write_bytes(_descriptor('RW 2048 FLAT "d-\xe9-flat.vmdk" 0').encode("latin-1"))
    return str(desc), str(desc), "VMDK descriptor is not valid utf-8"


def vmdk_loop(src, vmdk):
    for name, parent in (("a.vmdk", "b.vmdk"), ("b.vmdk", "a.vmdk")):
        (src / name).write_text(_descriptor('RW 2048 FLAT "x-flat.vmdk" 0', f'parentFileNameHint="{parent}"\n')
                                .replace("parentCID=ffffffff", "parentCID=12345678"))
    (src / "x-flat.vmdk").write_bytes(bytes(MIB))
    return str(src / "a.vmdk"), str(src / "a.vmdk"), "snapshot chain loops back on itself"


def vmdk_depth_bomb(src, vmdk):
    (src / "x-flat.vmdk").write_bytes(bytes(MIB))
    for n in range(70):
        (src / f"s{n}.vmdk").write_text(_descriptor('RW 2048 FLAT "x-flat.vmdk" 0', f'parentFileNameHint="s{n + 1}.vmdk"\n')
                                        .replace("parentCID=ffffffff", "parentCID=12345678"))
    return str(src / "s0.vmdk"), str(src / "s0.vmdk"), "snapshot chain deeper than 64 levels"


def _qcow2_over(src, backing: str, fmt: str = "raw", name: str = "top.qcow2") -> str:
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt, name, "1M", cwd=src)
    return str(src / name)


def qcow2_backing_shadow(src, vmdk):
    top = _qcow2_over(src, "/etc/shadow")
    return top, top, "refers to /etc/shadow outside the source directory"


def qcow2_backing_json(src, vmdk):
    top = _qcow2_over(src, 'json:{"driver":"file","filename":"/etc/shadow"}')
    return top, top, "pseudo-protocols are refused"


def qcow2_backing_nbd(src, vmdk):
    top = _qcow2_over(src, "nbd://127.0.0.1:10809/export")
    return top, top, "pseudo-protocols are refused"


def qcow2_backing_loop(src, vmdk):
    _qcow2_over(src, "b.qcow2", "qcow2", "a.qcow2")
    _qcow2_over(src, "a.qcow2", "qcow2", "b.qcow2")
    return str(src / "a.qcow2"), str(src / "a.qcow2"), "backing chain loops back on itself"


def qcow2_depth_bomb(src, vmdk):
    qemu_img("create", "-q", "-f", "qcow2", "q70.qcow2", "1M", cwd=src)
    for n in range(69, -1, -1):
        _qcow2_over(src, f"q{n + 1}.qcow2", "qcow2", f"q{n}.qcow2")
    return str(src / "q0.qcow2"), str(src / "q0.qcow2"), "backing chain deeper than 64 levels"


def qcow2_backing_no_format(src, vmdk):
    qemu_img("create", "-q", "-f", "raw", "base.img", "1M", cwd=src)
    top = _qcow2_over(src, "base.img")
    data = open(top, "rb").read()  # qemu-img 7.2 insists on -F: rename the extension to an unknown one
    open(top, "wb").write(data.replace(struct.pack(">I", 0xE2792ACA), struct.pack(">I", 0x0BADF00D), 1))
    return top, top, "only qcow2 or raw backing files with a recorded format are read"


def qcow2_absurd_size(src, vmdk):
    qemu_img("create", "-q", "-f", "qcow2", "big.qcow2", "1M", cwd=src)
    with open(src / "big.qcow2", "r+b") as f:
        f.seek(24)
        f.write(struct.pack(">Q", 2**62))
    return str(src / "big.qcow2"), str(src / "big.qcow2"), "is absurd"


def vhd_fixed_lies(src, vmdk):
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", "f.vhd", "1M", cwd=src)
    path = src / "f.vhd"
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, len(data) - 512 + 48, 2**40)
    path.write_bytes(bytes(data))
    return str(path), str(path), "fixed VHD declares 1099511627776 bytes but the file holds"


def empty_image(src, vmdk):
    (src / "e.img").write_bytes(b"")
    return str(src / "e.img"), str(src / "e.img"), "is empty"


def fifo_image(src, vmdk):
    os.mkfifo(src / "pipe.img")
    return str(src / "pipe.img"), str(src / "pipe.img"), "is not a regular file"


def vmx_disk_outside(src, vmdk):
    vmx = src / "vm.vmx"
    vmx.write_text('config.version = "8"\nvirtualHW.version = "19"\nscsi0.present = "TRUE"\n'
                   'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "/etc/shadow"\n')
    return str(vmx), str(vmx), "refers to /etc/shadow outside the source directory"


def directory_orphan_extent(src, vmdk):
    (src / "lost-flat.vmdk").write_bytes(bytes(MIB))
    return str(src), str(src / "lost-flat.vmdk"), "a VMDK extent that no descriptor names"


CASES = [ova_dotdot, ova_absolute, ova_symlink, ova_hardlink, ova_device, ova_subfolder_escape, ova_href_escape,
         ova_zip_dotdot, ova_zip_symlink, ova_duplicate, ova_gzip_tar_symlink, ova_gzip_bomb, ova_not_an_archive,
         ova_truncated, ova_two_ovfs, ova_missing_disk, ova_manifest_mismatch, ova_manifest_digest_length,
         ovf_sha1_mismatch, ovf_manifest_lists_missing, ovf_manifest_outside, ovf_billion_laughs,
         ovf_external_entity, ovf_not_utf8, ovf_empty, ovf_href_dotdot, ovf_href_shadow, ovf_absurd_capacity,
         ovf_bad_mac, ovf_gzip_bomb_header, vmdk_extent_dotdot, vmdk_extent_shadow, vmdk_extent_symlink_out,
         vmdk_extent_fifo, vmdk_parent_outside, vmdk_flat_too_small, vmdk_absurd_size, vmdk_raw_device_mapping,
         vmdk_not_utf8, vmdk_loop, vmdk_depth_bomb, qcow2_backing_shadow, qcow2_backing_json, qcow2_backing_nbd,
         qcow2_backing_loop, qcow2_depth_bomb, qcow2_backing_no_format, qcow2_absurd_size, vhd_fixed_lies,
         empty_image, fifo_image, vmx_disk_outside, directory_orphan_extent]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_source_exits_2_and_writes_nothing(case, stream_vmdk, tmp_path):
    src = tmp_path / "sandbox" / "src"
    src.mkdir(parents=True)
    arg, named, problem = case(src, stream_vmdk)
    before = listing(tmp_path)
    res = h2k("migrate", arg, "-o", str(tmp_path / "sandbox" / "out"), timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"h2k: error: {named}: ") and problem in lines[0], lines[0]
    assert listing(tmp_path) == before


def test_allow_path_admits_an_outside_extent(tmp_path):
    outside = tmp_path / "datastore2"
    outside.mkdir()
    (outside / "d-flat.vmdk").write_bytes(bytes(MIB))
    src = tmp_path / "src"
    src.mkdir()
    (src / "d.vmdk").write_text(_descriptor(f'RW 2048 FLAT "{outside}/d-flat.vmdk" 0'))
    refused = h2k("plan", str(src / "d.vmdk"), "--json")
    assert refused.returncode == 2 and "pass --allow-path DIR to permit" in refused.stderr
    allowed = h2k("plan", str(src / "d.vmdk"), "--allow-path", str(outside), "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert str(outside / "d-flat.vmdk") in allowed.stdout
