"""Sources read without migrating: `h2k plan` inventories, concerns and the Critical-concern gate,
OVA edge cases, VirtualBox and OVF 2.0 envelopes, and the fetch stage's unpacking of a gzip'd OVA
member and of a member of a compressed OVA (real qemu-img)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import zipfile

import pytest

from h2k_planner.concerns import check_space, gate, local_facts, review
from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk, Output
from h2k_planner.sources import load_sources
from h2k_planner.sources.vmdk import vmdk_disk
from h2k_tasks.stages.fetch import unchanged
from h2k_tasks.stages.fetch_packed import fetch_packed
from tests.builders.disks import patterned_raw
from tests.builders.images import vmdk_variants, vmfs_sparse_chain
from tests.builders.ovf import build_ovf, ovf2_xml, pack_ova, vbox_ovf_xml
from tests.builders.vmware import write_vmx
from tests.support import h2k


def qemu_img(*args: str, cwd=None) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, cwd=cwd)


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("enc")
    cmd = ["qemu-img", "create", "-q", "--object", "secret,id=s0,data=abc", "-f", "qcow2",
           "-o", "encrypt.format=luks,encrypt.key-secret=s0", str(d / "enc.qcow2"), "1M"]
    for _ in range(3):  # LUKS times its key derivation on the CPU clock, which a busy machine at times
        made = subprocess.run(cmd, capture_output=True, text=True)  # cannot read ("accurate CPU usage")
        if made.returncode == 0 or "accurate CPU usage" not in made.stderr:
            break
    assert made.returncode == 0, made.stderr
    return str(d / "enc.qcow2")


def test_critical_concern_stops_plan_after_showing_it(encrypted, tmp_path):
    res = h2k("plan", encrypted, "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "encrypted-disk" in res.stdout  # the inventory is still printed
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("h2k: error: VM 'enc' has critical concern encrypted-disk")


def test_critical_concern_stops_migrate_unless_allowed(encrypted, tmp_path):
    res = h2k("migrate", encrypted, "-o", str(tmp_path / "out"))
    assert res.returncode == 2 and "VM 'enc' has critical concern encrypted-disk" in res.stderr
    assert not (tmp_path / "out").exists()
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text("vms:\n  enc:\n    allow_concerns: [encrypted-disk]\n")
    res = h2k("plan", encrypted, "--config", str(cfg), "--json")
    assert res.returncode == 0, res.stderr
    concerns = json.loads(res.stdout)["vms"][0]["vm"]["concerns"]
    assert {c["id"]: c["severity"] for c in concerns}["encrypted-disk"] == "critical"


def test_config_rejects_unknown_per_vm_key(encrypted, tmp_path):
    cfg = tmp_path / "h2k.yaml"
    cfg.write_text("vms:\n  enc:\n    allow_concern: [encrypted-disk]\n")
    res = h2k("plan", encrypted, "--config", str(cfg))
    assert res.returncode == 2 and "vms.enc.allow_concern" in res.stderr


def test_review_adds_space_secure_boot_and_unknown_os(tmp_path):
    huge = Disk(source="/x", format="raw", virtual_size=2**45, allocated_size=2**45)
    vm = VM(name="big", firmware="efi", secure_boot=True, disks=[huge], source="/x.vmx", source_kind="vmx")
    out = Output(directory=str(tmp_path / "not-yet"), format="raw")
    [seen] = check_space(review([vm]), out, {"big": "local"}, {"local": local_facts("local", out.directory)})
    ids = {c.id: c.severity.value for c in seen.concerns}
    assert ids == {"insufficient-space": "critical", "secure-boot": "warning", "unknown-guest-os": "warning"}
    with pytest.raises(InputError, match="VM 'big' has critical concern insufficient-space"):
        gate([seen], {})
    gate([seen], {"big": ["insufficient-space"]})


def test_crlf_descriptor_and_sha1_manifest_are_accepted(tmp_path):
    (tmp_path / "d-flat.vmdk").write_bytes(bytes(2**20))
    (tmp_path / "d.vmdk").write_bytes(b'# Disk DescriptorFile\r\nversion=1\r\nCID=fffffffe\r\nparentCID=ffffffff\r\n'
                                      b'createType="monolithicFlat"\r\nRW 2048 FLAT "d-flat.vmdk" 0\r\n')
    assert vmdk_disk(str(tmp_path / "d.vmdk")).virtual_size == 2**20
    patterned_raw(str(tmp_path / "r.raw"), 4, 1)
    ovf = build_ovf(str(tmp_path / "pkg"), "sha1vm", [str(tmp_path / "r.raw")], algo="SHA1")
    [vm] = load_sources([ovf])
    assert vm.name == "sha1vm" and "no-manifest" not in {c.id for c in vm.concerns}


def test_directory_source_finds_each_vm_once(tmp_path):
    patterned_raw(str(tmp_path / "r.raw"), 4, 1)
    src = tmp_path / "src"
    src.mkdir()
    pack_ova(build_ovf(str(tmp_path / "build"), "inova", [str(tmp_path / "r.raw")]), str(src / "inova.ova"))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "r.raw"), str(src / "base.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "snap.qcow2", cwd=src)
    vmfs_sparse_chain(str(tmp_path / "r.raw"), str(src), "esx")  # esx.vmdk -> esx-base.vmdk, two extents
    vms = {vm.name: vm for vm in load_sources([str(src)])}
    assert sorted(vms) == ["esx", "inova", "snap"]
    assert vms["esx"].disks[0].depth == 2 and vms["snap"].disks[0].depth == 2


def test_directory_of_a_vmx_with_every_vmdk_subformat_is_one_vm(tmp_path):
    raws = []
    for n in range(8):
        patterned_raw(str(tmp_path / f"r{n}.raw"), 4, 1)
        raws.append(str(tmp_path / f"r{n}.raw"))
    src = tmp_path / "src"
    src.mkdir()
    vmdks = vmdk_variants(raws, str(src))
    write_vmx(str(src / "v.vmx"), "v", [("scsi", 0, n, os.path.basename(p)) for n, p in enumerate(vmdks)], "00:50:56:00:00:01")
    [vm] = load_sources([str(src)])
    assert vm.name == "v" and len(vm.disks) == 8 and all(d.virtual_size == 4 * 2**20 for d in vm.disks)


def test_gzip_ova_member_is_unpacked_by_fetch(tmp_path):
    patterned_raw(str(tmp_path / "r.raw"), 6, 2)
    ova = pack_ova(build_ovf(str(tmp_path / "pkg"), "gz", [str(tmp_path / "r.raw")], gzip_disks=True),
                   str(tmp_path / "gz.ova"))
    [vm] = load_sources([ova])
    disk = vm.disks[0]
    assert disk.packed and disk.packed.file == ova and disk.packed.offset > 0 and disk.format == "vmdk"
    dest = str(tmp_path / "out" / "gz" / "gz-disk0.unpacked.vmdk")
    result = fetch_packed(disk, dest, 1, lambda: True, lambda: True)
    assert unchanged(result) and os.listdir(os.path.dirname(dest)) == ["gz-disk0.unpacked.vmdk"]
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(tmp_path / "r.raw"), dest],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    lying = disk.model_copy(update={"virtual_size": disk.virtual_size * 2})
    with pytest.raises(Exception, match="the unpacked disk holds"):
        fetch_packed(lying, dest + ".2", 2, lambda: True, lambda: True)
    assert not [n for n in os.listdir(os.path.dirname(dest)) if ".tmp-" in n or n.endswith(".2")]


def _stream_vmdk(tmp_path, name: str) -> tuple[str, bytes]:
    patterned_raw(str(tmp_path / "r.raw"), 4, 1)
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(tmp_path / "r.raw"),
             str(tmp_path / name))
    return name, (tmp_path / name).read_bytes()


def _tar(path, members: list[tuple[str, bytes]]) -> str:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return str(path)


def test_virtualbox_ova(tmp_path):
    href, vmdk = _stream_vmdk(tmp_path, "vbox-disk001.vmdk")
    ovf = vbox_ovf_xml("vboxvm", href, 4 * 2**20, "08:00:27:a1:b2:c3", efi=True).encode()
    mf = f"SHA1(vbox.ovf)= {hashlib.sha1(ovf).hexdigest()}\nSHA1({href})= {hashlib.sha1(vmdk).hexdigest()}\n"
    ova = _tar(tmp_path / "vbox.ova", [("vbox.ovf", ovf), (href, vmdk), ("vbox.mf", mf.encode())])
    res = h2k("plan", ova, "--json", "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    vm = json.loads(res.stdout)["vms"][0]["vm"]
    assert (vm["name"], vm["cpus"], vm["memory_mib"], vm["firmware"]) == ("vboxvm", 2, 1536, "efi")
    [disk] = vm["disks"]
    assert (disk["bus"], disk["controller"], disk["unit"], disk["format"]) == ("sata", 0, 1, "vmdk")
    assert disk["virtual_size"] == 4 * 2**20 and disk["source"].startswith("json:")
    assert [(n["mac"], n["model"], n["network"]) for n in vm["nics"]] == [("08:00:27:a1:b2:c3", "e1000", "NAT")]
    assert not {c["id"] for c in vm["concerns"]} & {"no-manifest", "unverified-files", "capacity-mismatch"}


def test_ovf_2_envelope(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    href, vmdk = _stream_vmdk(src, "v2-disk1.vmdk")
    (src / "v2.ovf").write_text(ovf2_xml("ovf2vm", href, 4, "00:50:56:01:02:03"))
    res = h2k("plan", str(src / "v2.ovf"), "--json", "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    vm = json.loads(res.stdout)["vms"][0]["vm"]
    assert (vm["name"], vm["cpus"], vm["memory_mib"], vm["firmware"]) == ("ovf2vm", 4, 2048, "efi")
    [disk] = vm["disks"]
    assert (disk["bus"], disk["controller"], disk["unit"], disk["virtual_size"]) == ("nvme", 0, 0, 4 * 2**20)
    assert [(n["mac"], n["model"], n["network"]) for n in vm["nics"]] == [("00:50:56:01:02:03", "vmxnet3", "Backend")]


@pytest.mark.parametrize("kind", ["zip", "tar.xz"])
def test_member_of_a_compressed_ova_is_unpacked_by_fetch(kind, tmp_path):
    patterned_raw(str(tmp_path / "r.raw"), 6, 2)
    ovf = build_ovf(str(tmp_path / "pkg"), "whole", [str(tmp_path / "r.raw")])
    names = sorted(os.listdir(tmp_path / "pkg"))
    ova = str(tmp_path / "whole.ova")
    if kind == "zip":
        with zipfile.ZipFile(ova, "w", zipfile.ZIP_DEFLATED) as z:
            for n in names:
                z.write(tmp_path / "pkg" / n, f"export/{n}")
    else:
        with tarfile.open(ova, "w:xz") as tar:
            tar.add(tmp_path / "pkg", arcname="export")
    [vm] = load_sources([ova])
    disk = vm.disks[0]
    assert disk.packed.member == "export/whole-disk1.vmdk" and not disk.packed.gzip and disk.format == "vmdk"
    assert "unverified-files" not in {c.id for c in vm.concerns} and os.path.basename(ovf) in names
    dest = str(tmp_path / "out" / "whole" / "whole-disk0.unpacked.vmdk")
    assert unchanged(fetch_packed(disk, dest, 1, lambda: True, lambda: True))
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(tmp_path / "r.raw"), dest],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_ovf_boot_order_section_names_the_boot_disk(tmp_path):
    raws = [str(tmp_path / f"r{n}.raw") for n in range(2)]
    for n, raw in enumerate(raws):
        patterned_raw(raw, 4, n + 1)
    [vm] = load_sources([build_ovf(str(tmp_path / "pkg"), "booty", raws, boot_order=(1,))])
    assert [d.index for d in vm.disks] == [0, 1] and vm.boot_order == [1]
