"""A first-boot runner: a LocalSystem service that runs ordered scripts once, then removes itself.

The service host is the user's `firstboot_service_exe` (srvany-compatible: it starts
`Parameters\\Application` with `AppParameters` in `AppDirectory`); it is copied, never downloaded.
Scripts: 0001 install staged drivers, 0002 uninstall VMware Tools, 0003 bring disks online,
0004 restore static IPs (0002 and 0004 only when there is something to do).
"""
from __future__ import annotations

from pathlib import Path

from h2k_planner.errors import InputError
from h2k_tasks.fixers.windows import firstboot_scripts as scripts
from h2k_tasks.fixers.windows.driver_staging import STAGE
from h2k_tasks.windows.hives import dword, expand_sz, sz
from h2k_tasks.fixers.windows.session import Session

NAME = "windows.firstboot"
HOME = "/Program Files/Hyper2KVM/Firstboot"
EXE = "h2k-firstboot.exe"


def planned_scripts(s: Session) -> dict[str, bytes]:
    """{file name under scripts/: content}, in run order."""
    staged = f"%SystemRoot%\\{STAGE}"
    out = {"0001-install-virtio-drivers.cmd": scripts.install_drivers(s.facts, staged)}
    tools = s.facts.get("vmware_tools")
    if tools and tools.get("product_code"):
        out["0002-uninstall-vmware-tools.cmd"] = scripts.uninstall_vmware_tools(tools)
    elif tools:
        s.log.append(f"firstboot: {tools['name']} has no Windows Installer product code; remove it by hand")
    out["0003-online-disks.cmd"] = scripts.online_disks()
    if s.facts.get("static_ips"):
        configs = s.facts["static_ips"]
        nics = list(getattr(s.vm, "nics", None) or [])
        macs = [n.mac or "" for n in nics] if len(nics) == len(configs) else []
        cmd, ps1 = scripts.restore_static_ips(configs, macs)
        out["0004-restore-static-ips.cmd"] = cmd
        out["0004-restore-static-ips.ps1"] = ps1
    return out


def fix(s: Session) -> None:
    exe = s.options.get("firstboot_service_exe")
    if not exe:
        s.log.append("firstboot: no firstboot_service_exe given; drivers are staged but not installed")
        return
    exe_path = Path(exe)
    if not exe_path.is_file():
        raise InputError(exe_path, "firstboot_service_exe is not a file")
    files = {EXE: exe_path.read_bytes(), "firstboot.cmd": scripts.runner()}
    files.update({f"scripts/{name}": content for name, content in planned_scripts(s).items()})
    s.write_tree(NAME, HOME, files)
    win_home = s.windows_path(HOME)
    key = f"{s.control_set}\\Services\\{scripts.SERVICE}"
    for name, value in (
        ("Type", dword(0x10)),  # own process
        ("Start", dword(2)),  # automatic
        ("ErrorControl", dword(1)),
        ("ImagePath", expand_sz(f'"{win_home}\\{EXE}"')),
        ("ObjectName", sz("LocalSystem")),
        ("DisplayName", sz("hyper2kvm first boot")),
        ("Description", sz("Finishes the move to KVM once, then removes itself.")),
    ):
        s.system.set(NAME, key, name, value, s.changes)
    params = f"{key}\\Parameters"
    s.system.set(NAME, params, "Application", sz(s.windows_path(f"{s.systemroot}/System32/cmd.exe")), s.changes)
    s.system.set(NAME, params, "AppParameters", sz(f'/c "{win_home}\\firstboot.cmd"'), s.changes)
    s.system.set(NAME, params, "AppDirectory", sz(win_home), s.changes)
