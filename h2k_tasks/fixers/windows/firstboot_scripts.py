"""The first-boot runner and its ordered scripts, as Windows batch/PowerShell text (CRLF line ends).

The runner runs `scripts\\*.cmd` once each in name order, logs to `firstboot.log`, moves each finished
script to `scripts-done`, and removes its own service when none is left. A script exiting with
RETRY_EXIT stays and is run again at next boot (at most MAX_TRIES boots), after a reboot.
"""
from __future__ import annotations

RETRY_EXIT = 249
MAX_TRIES = 5
SERVICE = "h2k-firstboot"


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode("utf-8") + b"\r\n"


def runner() -> bytes:
    return crlf(f"""
@echo off
rem hyper2kvm first-boot runner. Runs scripts\\*.cmd once each, in name order.
setlocal EnableDelayedExpansion
set "HERE=%~dp0"
set "LOG=%HERE%firstboot.log"
if not exist "%HERE%scripts-done" mkdir "%HERE%scripts-done"
if not exist "%HERE%tries" mkdir "%HERE%tries"
echo [%DATE% %TIME%] first-boot run starting>>"%LOG%"
for /f "delims=" %%s in ('dir /b /on "%HERE%scripts\\*.cmd" 2^>nul') do (
  set N=0
  if exist "%HERE%tries\\%%~ns" set /p N=<"%HERE%tries\\%%~ns"
  set /a N+=1
  >"%HERE%tries\\%%~ns" echo !N!
  echo [!DATE! !TIME!] running %%s, try !N!>>"%LOG%"
  call "%HERE%scripts\\%%s">>"%LOG%" 2>&1
  set RC=!ERRORLEVEL!
  echo [!DATE! !TIME!] %%s exited !RC!>>"%LOG%"
  if "!RC!"=="{RETRY_EXIT}" if !N! LSS {MAX_TRIES} goto retry
  move /y "%HERE%scripts\\%%~ns.*" "%HERE%scripts-done\\">nul
)
echo [%DATE% %TIME%] all scripts done, removing the {SERVICE} service>>"%LOG%"
sc.exe delete {SERVICE}>>"%LOG%" 2>&1
exit /b 0
:retry
echo [%DATE% %TIME%] will retry at next boot, rebooting>>"%LOG%"
shutdown.exe /r /t 30 /c "hyper2kvm first boot: rebooting to finish setup"
exit /b 0
""")


def install_drivers(facts: dict, staged: str) -> bytes:
    """Install every staged virtio driver into the driver store and onto present devices."""
    if facts["major"] >= 10:
        command = f'pnputil.exe /add-driver "{staged}\\*.inf" /subdirs /install'
    else:
        command = f'for /r "{staged}" %%f in (*.inf) do pnputil.exe -i -a "%%f"'
    return crlf(f"""
@echo off
rem Install the staged virtio-win drivers (3010 means a reboot is needed: that is fine).
{command}
if errorlevel 1 if not errorlevel 3010 if not errorlevel 3011 echo pnputil reported %ERRORLEVEL%
exit /b 0
""")


def uninstall_vmware_tools(tools: dict) -> bytes:
    """Remove VMware Tools through Windows Installer, retrying while another install runs (1618)."""
    return crlf(f"""
@echo off
rem Uninstall {tools['name']} {tools['version']} (from {tools['key']}).
msiexec.exe /X{tools['product_code']} /quiet /norestart
set RC=%ERRORLEVEL%
if "%RC%"=="1618" exit /b {RETRY_EXIT}
if "%RC%"=="0" exit /b 0
if "%RC%"=="3010" exit /b 0
if "%RC%"=="1605" exit /b 0
echo msiexec returned %RC%
exit /b %RC%
""")


def online_disks() -> bytes:
    """Set the SAN policy to online-all and bring every disk that is offline online and writable."""
    return crlf("""
@echo off
rem A moved guest sees its data disks as new: Windows keeps new disks offline by SAN policy.
echo san policy=OnlineAll>"%TEMP%\\h2k-san.txt"
diskpart.exe /s "%TEMP%\\h2k-san.txt"
echo list disk>"%TEMP%\\h2k-list.txt"
for /f "tokens=2" %%d in ('diskpart.exe /s "%TEMP%\\h2k-list.txt" ^| findstr /r /c:"Disk [0-9][0-9]* *Offline"') do (
  >"%TEMP%\\h2k-online.txt" echo select disk %%d
  >>"%TEMP%\\h2k-online.txt" echo attributes disk clear readonly
  >>"%TEMP%\\h2k-online.txt" echo online disk
  diskpart.exe /s "%TEMP%\\h2k-online.txt"
)
exit /b 0
""")


def _ps_list(items: list[str]) -> str:
    return "@(" + ", ".join("'" + i.replace("'", "''") + "'" for i in items) + ")"


def restore_static_ips(configs: list[dict], macs: list[str]) -> tuple[bytes, bytes]:
    """(.cmd, .ps1) re-applying the source's static IPv4 settings to the new adapters.

    A config is matched to the adapter with its MAC when one is known (`macs`, in config order),
    else to the IP-enabled adapters in index order. No adapter yet (driver not installed) means retry.
    """
    entries = []
    for i, c in enumerate(configs):
        mac = macs[i].upper().replace("-", ":") if i < len(macs) and macs[i] else ""
        entries.append(
            f"  @{{ Mac = '{mac}'; Ip = {_ps_list(c['ip'])}; Mask = {_ps_list(c['mask'])}; "
            f"Gateway = {_ps_list(c['gateway'])}; Dns = {_ps_list(c['dns'])} }}"
        )
    ps1 = crlf(f"""
# Static IPv4 settings recorded from the source guest, re-applied to the new virtio adapters.
$configs = @(
{(","+chr(10)).join(entries)}
)
$adapters = @(Get-WmiObject Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = TRUE' | Sort-Object Index)
$next = 0
foreach ($c in $configs) {{
  if ($c.Mac) {{ $a = $adapters | Where-Object {{ $_.MACAddress -eq $c.Mac }} | Select-Object -First 1 }}
  else {{ $a = $adapters | Select-Object -Skip $next -First 1; $next++ }}
  if (-not $a) {{ Write-Output "no adapter yet for $($c.Ip)"; exit {RETRY_EXIT} }}
  Write-Output "adapter $($a.Index) ($($a.MACAddress)): $($c.Ip)"
  $a.EnableStatic([string[]]$c.Ip, [string[]]$c.Mask) | Out-Null
  if ($c.Gateway.Count) {{ $a.SetGateways([string[]]$c.Gateway) | Out-Null }}
  if ($c.Dns.Count) {{ $a.SetDNSServerSearchOrder([string[]]$c.Dns) | Out-Null }}
}}
exit 0
""")
    cmd = crlf("""
@echo off
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dpn0.ps1"
exit /b %ERRORLEVEL%
""")
    return cmd, ps1
