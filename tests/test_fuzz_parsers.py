"""Fuzzing the text parsers (VMX, VMDK descriptor, OVF, manifest): whatever the input, the only
exception that may escape is InputError."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from h2k_planner.errors import InputError
from h2k_planner.sources.manifest import parse_manifest
from h2k_planner.sources.ova_archive import open_archive
from h2k_planner.sources.ovf import parse_ovf
from h2k_planner.sources.ovf_vm import _controllers
from h2k_planner.sources.ovf import mac_of, quantity
from h2k_planner.sources.vmdk import parse_descriptor
from h2k_planner.sources.vmx import parse_vmx
from tests.builders.ovf import ovf_xml

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_tokens = st.sampled_from([
    "RW", "RDONLY", "NOACCESS", "FLAT", "SPARSE", "VMFS", "ZERO", "VMFSRDM", "SESPARSE", '"', "=", " ", "\t",
    "createType", "CID", "parentCID", "parentFileNameHint", "ddb.", "encoding", "# Disk DescriptorFile",
    "..", "/", "/etc/shadow", "json:{}", "nbd://x", "fffffffe", "ffffffff", "2048", "-1", "99999999999999999999",
    "\r\n", "\n", "\x00", "\xe9", "\ufeff", "scsi0:0.fileName", "ethernet0.address", ".encoding", "config.version",
])
_lines = st.lists(st.one_of(_tokens, st.text(max_size=12)), max_size=40).map("".join)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fuzz"))


def _write(workdir: str, name: str, data: bytes) -> str:
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _only_input_errors(fn, *args) -> None:
    try:
        fn(*args)
    except InputError:
        pass


@FUZZ
@given(st.one_of(_lines.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=600)))
def test_vmx_parser(workdir, data):
    _only_input_errors(parse_vmx, _write(workdir, "f.vmx", data))


@FUZZ
@given(_lines, st.sampled_from([b"", b"# Disk DescriptorFile\n", b"\xef\xbb\xbf# Disk DescriptorFile\r\n"]),
       st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_vmdk_descriptor_parser(workdir, body, head, encoding):
    try:
        raw = head + body.encode(encoding, "replace")
    except UnicodeEncodeError:
        raw = head + body.encode("utf-8", "replace")
    _only_input_errors(parse_descriptor, _write(workdir, "f.vmdk", raw))


_VALID_OVF = ovf_xml("vm", [("disk.vmdk", 2**20, False)]).encode()


@st.composite
def _mutated_ovf(draw) -> bytes:
    data = bytearray(_VALID_OVF)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.sampled_from([b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"&a;", b"<Item>", b"</Item>",
                                                b'ovf:capacity="-5"', b"\xff\xfe", b"<rasd:ResourceType>17</rasd:ResourceType>",
                                                b"<rasd:VirtualQuantity>x</rasd:VirtualQuantity>", b"byte * 2^99"]))
        if not data:
            break
    return bytes(data)


def _walk_envelope(data: bytes) -> None:
    env = parse_ovf("f.ovf", data)
    for system in env.systems:
        _controllers(system)
        for dev in system.devices:
            mac_of("f.ovf", dev)
            quantity("f.ovf", dev, "q")


@FUZZ
@given(st.one_of(_mutated_ovf(), st.binary(max_size=400)))
def test_ovf_parser(data):
    _only_input_errors(_walk_envelope, data)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["SHA1(", "SHA256(", ")= ", "a" * 40, "b" * 64, "\n", "x.vmdk"]),
                          st.text(max_size=8)), max_size=20).map("".join))
def test_manifest_parser(text):
    _only_input_errors(parse_manifest, "f.mf", text.encode("utf-8", "surrogatepass"), "sub")


def _archives() -> list[bytes]:
    """A small OVA as a tar, a gzip'd tar and a zip, members in a sub-folder."""
    members = [("sub/vm.ovf", _VALID_OVF), ("sub/vm.mf", b"SHA1(vm.ovf)= " + b"a" * 40 + b"\n"), ("sub/disk.vmdk", b"KDMV" * 300)]
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            t.addfile(info, io.BytesIO(content))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members:
            z.writestr(name, content)
    return [tar.getvalue(), gzip.compress(tar.getvalue(), mtime=0), zipped.getvalue()]


_ARCHIVES = _archives()


@st.composite
def _mutated_archive(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_ARCHIVES)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at:at + draw(st.integers(1, 600))]
        if not data:
            break
    return bytes(data)


# A gzip header with an extra field over a damaged deflate stream: Python's own tarfile stream raises
# AttributeError on it (found by this test), so compressed tars are decompressed by the gzip module.
_DAMAGED_GZIP_EXTRA = b"\x1f\x8b\x08\x04" + bytes(4) + b"\x02\x03" + (22765).to_bytes(2, "little") + bytes(range(256)) * 2


@FUZZ
@given(st.one_of(_mutated_archive(), st.binary(max_size=600)))
@example(data=_DAMAGED_GZIP_EXTRA)
def test_ova_archive_reader(workdir, data):
    def read_all(path: str) -> None:
        archive = open_archive(path)
        for name, member in archive.members.items():
            archive.read(name, 2**20)
            archive.digests(name, {"sha1"})
    _only_input_errors(read_all, _write(workdir, "f.ova", data))
