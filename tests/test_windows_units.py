"""Host-only tests of the Windows pieces: hive writer, PE header, virtio-win choice, undo .reg, concerns."""
from __future__ import annotations

import shutil
import struct
import subprocess

import hivex
import pytest

from h2k_planner.errors import InputError
from h2k_planner.models import Severity
from h2k_tasks.fixers.windows import firstboot_scripts, undo_reg
from h2k_tasks.inspect_windows import generation, windows_concerns
from h2k_tasks.windows.hives import Hive, dword, expand_sz, multi_sz, sz
from h2k_tasks.windows.virtio_win import VirtioWin, boot_choices, os_candidates
from tests.builders.pe import pe_header_only
from tests.builders.regf import empty_hive, hive_tree, write_empty_hive
from tests.builders.virtio_win import fake_virtio_win, virtio_win_iso


def test_empty_hive_has_valid_checksum_and_opens_in_hivex(tmp_path):
    data = empty_hive("ROOT")
    checksum = 0
    for (word,) in struct.iter_unpack("<I", data[:0x1FC]):
        checksum ^= word
    assert struct.unpack("<I", data[0x1FC:0x200])[0] == checksum
    assert len(data) == 8192 and data[4096:4100] == b"hbin"
    path = write_empty_hive(tmp_path / "h", "ROOT")
    h = hivex.Hivex(str(path), write=True)
    key = h.node_add_child(h.root(), "Select")
    h.node_set_value(key, {"key": "Current", "t": 4, "value": struct.pack("<I", 1)})
    h.commit(None)
    out = subprocess.run(["hivexregedit", "--export", str(path), "\\"], check=True, capture_output=True, text=True)
    assert '[\\Select]\n"Current"=dword:00000001' in out.stdout.replace("\r", "")


@pytest.mark.parametrize("arch,expect", [("x86_64", "PE32+ executable (console) x86-64"),
                                         ("i386", "PE32 executable (console) Intel 80386")])
def test_header_only_pe_is_recognized_by_file(tmp_path, arch, expect):
    exe = tmp_path / "cmd.exe"
    exe.write_bytes(pe_header_only(arch))
    assert expect in subprocess.run(["file", str(exe)], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("major,minor,build,server,expect", [
    (6, 1, 7601, False, "w7"), (6, 2, 9200, False, "w8"), (6, 3, 9600, False, "w8.1"),
    (10, 0, 19045, False, "w10"), (10, 0, 22631, False, "w11"), (6, 1, 7601, True, "2k8r2"),
    (6, 3, 9600, True, "2k12r2"), (10, 0, 14393, True, "2k16"), (10, 0, 17763, True, "2k19"),
    (10, 0, 20348, True, "2k22"), (10, 0, 26100, True, "2k25"), (6, 0, 6002, False, None),
])
def test_generation(major, minor, build, server, expect):
    assert generation(major, minor, build, server) == expect


def test_choice_prefers_own_os_then_nearest_older_and_ignores_case(tmp_path):
    tree = fake_virtio_win(tmp_path / "vw", omit={("vioscsi", "2k22"), ("NetKVM", "w11"), ("NetKVM", "w10")})
    (tree / "viorng" / "w11").rename(tree / "viorng" / "W11")
    src = VirtioWin(tree)
    by = {c.driver: c for c in src.choose("w11", "x86_64")}
    assert by["viorng"].os_dir == "W11" and not by["viorng"].fallback
    assert by["NetKVM"].os_dir == "w8.1" and by["NetKVM"].fallback
    assert "nearest older" in by["NetKVM"].describe()
    assert set(by["NetKVM"].files) == {f"NetKVM/w8.1/amd64/netkvm.{e}" for e in ("sys", "inf", "cat")}
    server = {c.driver: c for c in src.choose("2k22", "x86_64")}
    assert server["vioscsi"].os_dir == "2k19" and server["viostor"].os_dir == "2k22"
    assert set(boot_choices(src.choose("w7", "i386"))) == {"viostor", "vioscsi"}
    assert all(c.arch == "x86" for c in src.choose("w7", "i386"))
    assert src.choose("2k19", "i386") == []  # servers have no x86 builds
    assert os_candidates("2k12R2") == ["2k12r2", "2k12", "2k8r2"]


def test_iso_source_lists_and_reads_like_a_directory(tmp_path):
    tree = fake_virtio_win(tmp_path / "vw")
    (tree / "viostor" / "w10" / "amd64" / "viostor.inf").write_text("DriverVer=01/02/2024,100.94.104.24000\n")
    iso = virtio_win_iso(tree, tmp_path / "virtio-win.iso")
    from_iso, from_dir = VirtioWin(iso), VirtioWin(tree)
    assert from_iso.files == from_dir.files
    assert from_iso.choose("w10", "x86_64") == from_dir.choose("w10", "x86_64")
    assert from_iso.read("viostor/w10/amd64/viostor.inf") == b"DriverVer=01/02/2024,100.94.104.24000\n"


def test_bad_sources_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="virtio-win not found"):
        VirtioWin(tmp_path / "nope")
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"not an iso" * 100)
    with pytest.raises(InputError) as err:
        VirtioWin(junk)
    assert err.value.path == str(junk)


class _LocalFiles:
    """Stands in for the guestfs handle's file transfer, so a Hive can edit a local file."""

    def download(self, src, dst):
        shutil.copy(src, dst)

    def upload(self, src, dst):
        shutil.copy(src, dst)


def test_undo_reg_restores_values_and_removes_created_keys(tmp_path):
    hive_file = write_empty_hive(tmp_path / "SOFTWARE")
    h = hivex.Hivex(str(hive_file), write=True)
    cv = h.node_add_child(h.node_add_child(h.root(), "Windows"), "CurrentVersion")
    h.node_set_value(cv, {"key": "DevicePath", "t": 2, "value": expand_sz("%SystemRoot%\\inf")[1]})
    h.node_set_value(cv, {"key": "Keep", "t": 4, "value": dword(7)[1]})
    h.commit(None)
    before = hive_tree(hive_file)
    work = tmp_path / "work"
    work.mkdir()
    hive = Hive(_LocalFiles(), str(hive_file), "SOFTWARE", work)
    changes = []
    hive.set("t", "Windows\\CurrentVersion", "devicepath", expand_sz("%SystemRoot%\\inf;x"), changes)
    hive.set("t", "Windows\\CurrentVersion", "Added", multi_sz(["a", "b"]), changes)
    hive.set("t", "Windows\\CurrentVersion", "Keep", dword(7), changes)  # same data: no change
    hive.set("t", "New\\Deep\\Key", "", sz("x"), changes)
    hive.save()
    assert [c.summary for c in changes] == ["set DevicePath", "set Added", "created key", "created key",
                                            "created key", "set (default)"]
    after = hive_tree(hive_file)
    assert after["windows\\currentversion"]["devicepath"] == expand_sz("%SystemRoot%\\inf;x")
    texts = undo_reg(changes)
    assert set(texts) == {"SOFTWARE"}
    assert "[-HKEY_LOCAL_MACHINE\\SOFTWARE\\New]" in texts["SOFTWARE"]
    reg = tmp_path / "undo.reg"
    reg.write_text(texts["SOFTWARE"])
    subprocess.run(["hivexregedit", "--merge", "--prefix", "HKEY_LOCAL_MACHINE\\SOFTWARE", str(hive_file),
                    str(reg)], check=True)
    assert hive_tree(hive_file) == before


def test_runner_and_scripts_are_crlf_batch_with_retry():
    runner = firstboot_scripts.runner().decode()
    assert "\r\n" in runner and "\n" not in runner.replace("\r\n", "")
    assert f'"!RC!"=="{firstboot_scripts.RETRY_EXIT}"' in runner
    assert f"sc.exe delete {firstboot_scripts.SERVICE}" in runner
    tools = {"name": "VMware Tools", "version": "12", "key": "k", "product_code": "{ABC}"}
    assert b"msiexec.exe /X{ABC} /quiet /norestart" in firstboot_scripts.uninstall_vmware_tools(tools)
    cmd, ps1 = firstboot_scripts.restore_static_ips(
        [{"ip": ["192.0.2.10"], "mask": ["255.255.255.0"], "gateway": ["192.0.2.1"], "dns": ["192.0.2.53"]}],
        ["00-50-56-aa-bb-cc"])
    assert b"Mac = '00:50:56:AA:BB:CC'; Ip = @('192.0.2.10')" in ps1 and b"%~dpn0.ps1" in cmd


_FACTS = {"product_name": "Windows 10 Pro", "major": 10, "minor": 0, "generation": "w10", "arch": "x86_64",
          "hibernation": None, "bitlocker_volumes": []}


def test_concerns(tmp_path):
    tree = fake_virtio_win(tmp_path / "vw")
    ok = windows_concerns(None, "/dev/sda2", _FACTS, {"virtio_win": str(tree), "firstboot_service_exe": "x"})
    assert ok == []
    none = windows_concerns(None, "/dev/sda2", _FACTS, {})
    assert {(c.id, c.severity) for c in none} == {("windows-no-virtio-win", Severity.critical),
                                                  ("windows-no-firstboot", Severity.warning)}
    bad = {**_FACTS, "hibernation": {"device": "/dev/sda2", "ntfs_3g_probe": 14, "hiberfil_header": "HIBR"},
           "bitlocker_volumes": ["/dev/sdb1"]}
    crit = {c.id for c in windows_concerns(None, "/dev/sda2", bad, {"virtio_win": str(tree),
                                                                    "firstboot_service_exe": "x"})
            if c.severity == Severity.critical and c.remedy}
    assert crit == {"windows-hibernated", "windows-bitlocker"}
    shutil.rmtree(tree / "viostor")
    shutil.rmtree(tree / "vioscsi")
    assert [c.id for c in windows_concerns(None, "r", _FACTS, {"virtio_win": str(tree),
                                                               "firstboot_service_exe": "x"})] == [
        "windows-no-boot-driver"]
