"""Phony Windows disks inspected and fixed for real (libguestfs + hivex), in one libguestfs launch.

Every profile (7, 10, 11, Server 2016/2019/2022) and variant (hibernated, BitLocker) is attached to
one appliance; each guest is mounted, inspected, fixed twice (the second run must change nothing),
and unmounted. The tests then read back the hives with hivex on the host.
"""
from __future__ import annotations

import hashlib
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk, Nic, Severity
from h2k_tasks.appliance import open_session
from h2k_tasks.fixers import FixContext
from h2k_tasks.fixers.windows import fix_windows, undo_reg
from h2k_tasks.inspect_windows import inspect_windows, windows_concerns
from h2k_tasks.windows.hives import binary, dword, expand_sz, multi_sz, sz
from tests.builders.pe import pe_header_only
from tests.builders.regf import hive_tree
from tests.builders.virtio_win import DRIVERS, fake_virtio_win
from tests.builders.windows_guest import PROFILES, STATIC_IP, VARIANTS, VMWARE_TOOLS_CODE, windows_disks

pytestmark = pytest.mark.slow
ALL = list(PROFILES) + list(VARIANTS)
MAC = "00:50:56:aa:bb:cc"
EXPECTED = {  # profile: (product, generation, build, server, arch)
    "win7": ("Windows 7 Professional", "w7", 7601, False, "i386"),
    "win10": ("Windows 10 Pro", "w10", 19045, False, "x86_64"),
    "win11": ("Windows 11 Pro", "w11", 22631, False, "x86_64"),
    "win2016": ("Windows Server 2016 Standard", "2k16", 14393, True, "x86_64"),
    "win2019": ("Windows Server 2019 Standard", "2k19", 17763, True, "x86_64"),
    "win2022": ("Windows Server 2022 Datacenter", "2k22", 20348, True, "x86_64"),
}


def _download_hives(g, facts, dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True)
    out = {}
    for name in ("SYSTEM", "SOFTWARE"):
        out[name] = dest / name
        g.download(g.case_sensitive_path(f"{facts['systemroot']}/System32/config/{name}"), str(out[name]))
    return out


def _files_under(g, path: str, work: Path) -> dict[str, bytes]:
    real = g.case_sensitive_path(path)
    if not g.is_dir(real):
        return {}
    g.tar_out(real, str(work / "files.tar"))
    with tarfile.open(work / "files.tar") as tar:
        return {f"{path}/{m.name.removeprefix('./')}": tar.extractfile(m).read() for m in tar if m.isfile()}


def _try_fix(ctx):
    try:
        return fix_windows(ctx)
    except InputError as e:
        return e


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("windows")
    bases = windows_disks(ALL)
    tree = fake_virtio_win(tmp / "virtio-win", omit={("vioscsi", "2k22")})
    service_exe = tmp / "service-host.exe"
    service_exe.write_bytes(pe_header_only("x86_64"))  # stands in for the user's service host
    options = {"virtio_win": str(tree), "firstboot_service_exe": str(service_exe)}
    for name in ALL:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(bases[name]), "-F", "raw",
                        str(tmp / f"{name}.qcow2")], check=True)
    g = open_session([(str(tmp / f"{name}.qcow2"), "qcow2") for name in ALL], readonly=False).g
    roots = g.inspect_os()
    results = {}
    for name, dev in zip(ALL, g.list_devices()):
        root = next(r for r in roots if r.startswith(dev))
        profile = {**PROFILES, **VARIANTS}[name]
        mount = g.mount_ro if profile.hibernated else g.mount
        for mp, fs in sorted(g.inspect_get_mountpoints(root).items(), key=lambda m: len(m[0])):
            mount(fs, mp)
        facts = inspect_windows(g, root, devices=[dev])
        r = {"root": root, "dev": dev, "facts": facts,
             "concerns": windows_concerns(g, root, facts, options),
             "concerns_without_virtio": windows_concerns(g, root, facts, {**options, "virtio_win": None})}
        if name in PROFILES:
            r["fix_without_virtio"] = _try_fix(FixContext(g=g, root=root, inspection={"windows": facts}, vm=None,
                                                          options={**options, "virtio_win": None}))
            vm = None
            if name == "win10":
                vm = VM(name=name, disks=[Disk(source="x", format="raw", virtual_size=1)], source="x",
                        source_kind="disk", nics=[Nic(mac=MAC)])
            r["before"] = _download_hives(g, facts, tmp / name / "before")
            ctx = FixContext(g=g, root=root, inspection={"windows": facts}, vm=vm, options=options)
            r["changes"] = fix_windows(ctx)
            r["log"] = ctx.log
            again = FixContext(g=g, root=root, inspection={"windows": facts}, vm=vm, options=options)
            r["second"] = fix_windows(again)
            r["after"] = _download_hives(g, facts, tmp / name / "after")
            r["files"] = {}
            for d in ("/Windows/System32/drivers", "/Windows/Drivers/VirtIO", "/Program Files/Hyper2KVM"):
                r["files"].update(_files_under(g, d, tmp))
        else:
            r["fix"] = _try_fix(FixContext(g=g, root=root, inspection={"windows": facts}, vm=None, options=options))
        g.umount_all()
        results[name] = r
    again = g.inspect_os()
    for r in results.values():
        r["reinspected"] = (r["root"] in again and g.inspect_get_type(r["root"]) == "windows",
                            g.inspect_get_product_name(r["root"]), g.inspect_get_arch(r["root"]))
    g.close()
    return results


@pytest.mark.parametrize("name", list(PROFILES))
def test_inspection_facts(run, name):
    facts = run[name]["facts"]
    product, gen, build, server, arch = EXPECTED[name]
    assert (facts["product_name"], facts["generation"], facts["build"], facts["server"], facts["arch"]) == (
        product, gen, build, server, arch)
    assert facts["installation_type"] == ("Server" if server else "Client")
    assert facts["systemroot"] == "/Windows" and facts["current_control_set"] == "ControlSet001"
    assert facts["system_drive"] == "C"
    assert facts["vmware_tools"]["product_code"] == VMWARE_TOOLS_CODE
    assert [s["ip"] for s in facts["static_ips"]] == [[STATIC_IP["ip"]]]
    assert facts["static_ips"][0]["dns"] == STATIC_IP["dns"]
    assert facts["hibernation"] is None and facts["bitlocker_volumes"] == []
    assert run[name]["concerns"] == []


def _pkg(driver: str, arch: str) -> str:
    return f"{driver}.inf_{arch}_{hashlib.sha256(b'').hexdigest()[:16]}"


DEVICES = {
    "viostor": ["PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "PCI\\VEN_1AF4&DEV_1001",
                "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01", "PCI\\VEN_1AF4&DEV_1042"],
    "vioscsi": ["PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "PCI\\VEN_1AF4&DEV_1004",
                "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01", "PCI\\VEN_1AF4&DEV_1048"],
}
SCSI_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"


def expected_system(name: str) -> dict:
    """The keys and values the fix must add or change in SYSTEM, for this profile's Windows generation."""
    cs = "ControlSet001"
    exp: dict[str, dict] = {}

    def put(key, **values):
        exp.setdefault(key.lower(), {}).update({k.lower(): v for k, v in values.items()})

    arch = "amd64" if EXPECTED[name][4] == "x86_64" else "x86"
    for drv, ids in DEVICES.items():
        put(f"{cs}\\Services\\{drv}", Type=dword(1), Start=dword(0), ErrorControl=dword(1),
            Group=sz("SCSI miniport"), ImagePath=expand_sz(f"system32\\drivers\\{drv}.sys"))
        if name == "win7":
            for dev in ids:
                put(f"{cs}\\Control\\CriticalDeviceDatabase\\{dev.replace(chr(92), '#')}",
                    Service=sz(drv), ClassGUID=sz(SCSI_CLASS))
            continue
        pkg = f"DriverDatabase\\DriverPackages\\{_pkg(drv, arch)}"
        put(f"DriverDatabase\\DriverInfFiles\\{drv}.inf", **{"": multi_sz([_pkg(drv, arch)]),
                                                           "Active": sz(_pkg(drv, arch))})
        put(pkg, **{"": sz(f"{drv}.inf"), "Provider": sz("Red Hat, Inc."),
                    "Version": binary(uuid.UUID(SCSI_CLASS).bytes_le + bytes(16))})
        put(f"{pkg}\\Configurations")
        put(f"{pkg}\\Configurations\\{drv}_inst", ConfigFlags=dword(0), Service=sz(drv))
        put(f"{pkg}\\Descriptors")
        put(f"{pkg}\\Descriptors\\PCI")
        put("DriverDatabase\\DeviceIds\\PCI")
        for dev in ids:
            put(f"DriverDatabase\\DeviceIds\\{dev}", **{f"{drv}.inf": binary(b"\x01\xff\x00\x00")})
            put(f"{pkg}\\Descriptors\\{dev}", Configuration=sz(f"{drv}_inst"), Manufacturer=sz("Red Hat, Inc."),
                Description=sz(f"{drv} virtio storage controller"))
    put(f"{cs}\\Control\\CrashControl", AutoReboot=dword(0))
    home = "C:\\Program Files\\Hyper2KVM\\Firstboot"
    put(f"{cs}\\Services\\h2k-firstboot", Type=dword(0x10), Start=dword(2), ErrorControl=dword(1),
        ImagePath=expand_sz(f'"{home}\\h2k-firstboot.exe"'), ObjectName=sz("LocalSystem"),
        DisplayName=sz("hyper2kvm first boot"), Description=sz("Finishes the move to KVM once, then removes itself."))
    put(f"{cs}\\Services\\h2k-firstboot\\Parameters", Application=sz("C:\\Windows\\System32\\cmd.exe"),
        AppParameters=sz(f'/c "{home}\\firstboot.cmd"'), AppDirectory=sz(home))
    return exp


def _delta(before: dict, after: dict) -> dict:
    assert set(before) <= set(after), "the fix removed keys"
    out = {}
    for key, values in after.items():
        changed = {n: v for n, v in values.items() if before.get(key, {}).get(n) != v}
        if key not in before or changed:
            out[key] = changed
        assert set(before.get(key, {})) <= set(values), f"the fix removed values of {key}"
    return out


@pytest.mark.parametrize("name", list(PROFILES))
def test_hives_hold_exactly_the_expected_changes(run, name):
    r = run[name]
    system = _delta(hive_tree(r["before"]["SYSTEM"]), hive_tree(r["after"]["SYSTEM"]))
    assert system == expected_system(name)
    software = _delta(hive_tree(r["before"]["SOFTWARE"]), hive_tree(r["after"]["SOFTWARE"]))
    assert software == {"microsoft\\windows\\currentversion": {
        "devicepath": expand_sz("%SystemRoot%\\inf;%SystemRoot%\\Drivers\\VirtIO")}}
    assert r["second"] == [], "a second run must change nothing"


@pytest.mark.parametrize("name", list(PROFILES))
def test_driver_files_and_firstboot_scripts_are_in_place(run, name):
    r = run[name]
    os_dir = EXPECTED[name][1]
    arch = "amd64" if EXPECTED[name][4] == "x86_64" else "x86"
    files = r["files"]
    assert {"/Windows/System32/drivers/viostor.sys", "/Windows/System32/drivers/vioscsi.sys"} <= set(files)
    staged = {f for f in files if f.startswith("/Windows/Drivers/VirtIO/")}
    assert staged == {f"/Windows/Drivers/VirtIO/{drv}/{base}.{ext}" for drv, base in DRIVERS.items()
                      for ext in ("sys", "inf", "cat")}
    expected_os = {drv: os_dir for drv in DRIVERS}
    if name == "win2022":
        expected_os["vioscsi"] = "2k19"  # the fake virtio-win has no 2k22 vioscsi: nearest older is used
    for drv in DRIVERS:
        assert any(line.startswith(f"staged: {drv} from {drv}/{expected_os[drv]}/{arch}")
                   for line in r["log"]), r["log"]
    fb = "/Program Files/Hyper2KVM/Firstboot"
    scripts = sorted(f.rsplit("/", 1)[1] for f in files if f.startswith(f"{fb}/scripts/"))
    assert scripts == ["0001-install-virtio-drivers.cmd", "0002-uninstall-vmware-tools.cmd",
                       "0003-online-disks.cmd", "0004-restore-static-ips.cmd", "0004-restore-static-ips.ps1"]
    assert files[f"{fb}/h2k-firstboot.exe"] == pe_header_only("x86_64")
    assert b"\r\n" in files[f"{fb}/firstboot.cmd"]
    assert f"/X{VMWARE_TOOLS_CODE} /quiet /norestart".encode() in files[f"{fb}/scripts/0002-uninstall-vmware-tools.cmd"]
    pnputil = b"/add-driver" if EXPECTED[name][1] != "w7" else b"pnputil.exe -i -a"
    assert pnputil in files[f"{fb}/scripts/0001-install-virtio-drivers.cmd"]
    ps1 = files[f"{fb}/scripts/0004-restore-static-ips.ps1"]
    assert f"Ip = @('{STATIC_IP['ip']}')".encode() in ps1
    assert (f"Mac = '{MAC.upper()}'".encode() in ps1) == (name == "win10")
    assert {c.path for c in r["changes"] if c.kind == "file"} == set(files)


@pytest.mark.parametrize("name", list(PROFILES))
def test_undo_reg_restores_the_source_hives(run, name, tmp_path):
    r = run[name]
    texts = undo_reg(r["changes"])
    assert set(texts) == {"SYSTEM", "SOFTWARE"}
    for hive, text in texts.items():
        restored = tmp_path / hive
        restored.write_bytes(r["after"][hive].read_bytes())
        reg = tmp_path / f"undo-{hive}.reg"
        reg.write_text(text)
        subprocess.run(["hivexregedit", "--merge", "--prefix", f"HKEY_LOCAL_MACHINE\\{hive}", str(restored),
                        str(reg)], check=True)
        assert hive_tree(restored) == hive_tree(r["before"][hive])


@pytest.mark.parametrize("name", list(PROFILES))
def test_fixed_guest_is_still_recognized(run, name):
    product, _gen, _build, _server, arch = EXPECTED[name]
    recognized, product_name, got_arch = run[name]["reinspected"]
    assert recognized and got_arch == arch
    assert product_name == product.replace("Windows 11", "Windows 10")  # libguestfs reports ProductName as is


@pytest.mark.parametrize("name", list(PROFILES))
def test_missing_virtio_win_is_critical_and_blocks_the_fix(run, name):
    r = run[name]
    critical = [c for c in r["concerns_without_virtio"] if c.severity == Severity.critical]
    assert [c.id for c in critical] == ["windows-no-virtio-win"] and critical[0].remedy
    assert isinstance(r["fix_without_virtio"], InputError)


def test_hibernated_guest_is_critical_and_not_fixed(run):
    r = run["win10-hibernated"]
    assert r["facts"]["hibernation"] == {"device": r["root"], "ntfs_3g_probe": 14, "hiberfil_header": "HIBR"}
    critical = {c.id: c for c in r["concerns"] if c.severity == Severity.critical}
    assert set(critical) == {"windows-hibernated"} and "powercfg /h off" in critical["windows-hibernated"].remedy
    assert isinstance(r["fix"], InputError) and "hibernated" in str(r["fix"])


def test_bitlocker_volume_is_critical(run):
    r = run["win10-bitlocker"]
    assert r["facts"]["bitlocker_volumes"] == [f"{r['dev']}2"]
    critical = {c.id: c for c in r["concerns"] if c.severity == Severity.critical}
    assert set(critical) == {"windows-bitlocker"} and "manage-bde" in critical["windows-bitlocker"].remedy
