"""vSphere inventory, concerns, selection, errors and the `h2k inventory` command, against vcsim."""
from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import time

import pytest

from conductor.commands import inventory
from h2k_planner.errors import InputError
from h2k_planner.models import Output
from h2k_planner.plan import make_plan
from h2k_planner.secret_ref import SecretRef
from h2k_planner.sources import vsphere
from h2k_planner.sources.vsphere_endpoint import Endpoint, parse_url
from tests import vcsim as vcsim_launcher
from tests.conftest_vsphere import BULK_VMS

ESX_HOST = re.compile(r"DC0_(C0_)?H\d+")  # the simulator's hosts: standalone, or in cluster C0
SPECIAL = ["clean", "download", "independent", "nocbt", "running", "shared", "snapped"]


@pytest.fixture(scope="module")
def records(endpoint_module):
    with vsphere.session(endpoint_module) as s:
        return {r.name: r for r in vsphere.list_vms(s)}


@pytest.fixture(scope="module")
def endpoint_module(vcsim, tmp_path_factory):
    pw = tmp_path_factory.mktemp("pw") / "pw"
    pw.write_text(vcsim.password)
    return Endpoint(host=vcsim.host, port=vcsim.port, user=vcsim.user, datacenter=vcsim.datacenter,
                    password=SecretRef(file=str(pw)), thumbprint=vcsim.thumbprint)


def _ids(record, endpoint):
    return {c.id: c.severity.value for c in vsphere.to_vm(record, endpoint).concerns}


def test_inventory_of_400_vms_in_under_5_seconds(endpoint):
    start = time.monotonic()
    vms = vsphere.read_vsphere(endpoint)
    elapsed = time.monotonic() - start
    assert len(vms) == BULK_VMS + len(SPECIAL)
    assert elapsed < 5, elapsed


def test_vm_mapping(records, endpoint_module):
    record = records["bulk-0007"]
    assert record.folder == "bulk" and record.power_state == "poweredOff" and record.cbt
    vm = vsphere.to_vm(record, endpoint_module)
    assert vm.source_kind == "vsphere"
    assert vm.source == f"{endpoint_module.url}?moref={record.moref}"
    assert ESX_HOST.fullmatch(record.esx_host) and vm.source_host == f"esx:{record.esx_host}"
    assert make_plan([vm], Output(directory="/out")).vms[0].source_group == vm.source_host  # the download cap
    assert vm.firmware.value == "efi" and vm.guest_os == "rhel8_64Guest"
    assert (vm.cpus, vm.memory_mib) == (2, 2048)
    [disk] = vm.disks
    assert disk.source == "[LocalDS_0] bulk-0007/bulk-0007.vmdk"
    assert (disk.format, disk.virtual_size, disk.bus, disk.controller, disk.unit) == ("vmdk", 1 << 20, "scsi", 0, 0)
    [d] = record.disks
    assert (d.mode, d.sharing, d.backing, d.provisioning, d.controller_type) == (
        "persistent", "sharingNone", "FlatVer2", "thin", "ParaVirtualSCSIController")
    [nic] = vm.nics
    assert nic.model == "vmxnet3" and nic.network == "VM Network" and nic.mac.startswith("00:0c:29")
    assert vm.concerns == []


def test_concerns(records, endpoint_module):
    assert _ids(records["clean"], endpoint_module) == {}
    assert _ids(records["snapped"], endpoint_module) == {"vsphere.snapshots": "critical"}
    assert records["snapped"].snapshots == ["before-upgrade"]
    assert _ids(records["independent"], endpoint_module) == {"vsphere.independent-disk": "warning"}
    assert _ids(records["running"], endpoint_module) == {"vsphere.powered-on": "critical"}
    assert _ids(records["shared"], endpoint_module) == {"vsphere.shared-disk": "critical"}
    assert _ids(records["nocbt"], endpoint_module) == {"vsphere.cbt-off": "info",
                                                       "vsphere.guest-unsupported": "critical"}


def test_concerns_the_simulator_cannot_express(records, endpoint_module):
    base = records["clean"]
    rdm = base.disks[0].model_copy(update={"backing": "RawDiskMappingVer1", "provisioning": "rdm-physical"})
    changed = base.model_copy(update={"encrypted": True, "vtpm": True, "guest_id": "otherGuest64", "disks": [rdm]})
    assert _ids(changed, endpoint_module) == {"vsphere.rdm": "critical", "vsphere.encrypted": "critical",
                                              "vsphere.vtpm": "warning", "vsphere.guest-unknown": "warning"}


@pytest.mark.parametrize("patterns, expected", [
    (["clean"], ["clean"]),
    (["bulk-00[0-4]?"], [f"bulk-00{i:02d}" for i in range(50)]),
    (["special/"], SPECIAL),
    (["special/sn*", "running"], ["running", "snapped"]),
])
def test_selection(records, patterns, expected):
    chosen = vsphere.select(sorted(records.values(), key=lambda r: r.path), patterns, "here")
    assert sorted(r.name for r in chosen) == expected


def test_unknown_vm_is_a_clear_error(records):
    with pytest.raises(InputError, match=r"^here: no VM matches 'ghost\*'$"):
        vsphere.select(list(records.values()), ["clean", "ghost*"], "here")


def test_unknown_datacenter(endpoint):
    with pytest.raises(InputError, match="no datacenter at inventory path 'DC9'"):
        vsphere.read_vsphere(endpoint.model_copy(update={"datacenter": "DC9"}))


def test_wrong_password(endpoint, monkeypatch):
    monkeypatch.setenv("H2K_TEST_PW", "not-the-password")
    with pytest.raises(InputError, match="login refused: wrong user or password$"):
        vsphere.connect(endpoint.model_copy(update={"password": SecretRef(env="H2K_TEST_PW")}))


def test_thumbprint_mismatch(endpoint):
    with pytest.raises(InputError, match="TLS thumbprint mismatch: server certificate SHA-256 is"):
        vsphere.connect(endpoint.model_copy(update={"thumbprint": "AB" * 32}))


def test_untrusted_certificate_without_trust_mode(endpoint):
    with pytest.raises(InputError, match="TLS certificate not trusted .*--ca-file, --thumbprint or --insecure"):
        vsphere.connect(endpoint.model_copy(update={"thumbprint": None}))


def test_ca_file_and_insecure_both_connect(endpoint, vcsim, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(vcsim.ca_pem)
    for trust in ({"thumbprint": None, "ca_file": str(ca)}, {"thumbprint": None, "insecure": True}):
        with vsphere.session(endpoint.model_copy(update=trust)) as s:
            assert s.cookie.startswith("vmware_soap_session=")


def test_unreachable_host(endpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match=f"cannot reach 127.0.0.1:{port}: Connection refused"):
        vsphere.connect(endpoint.model_copy(update={"port": port}))


def test_expired_session(tmp_path):
    sim = vcsim_launcher.start("idle-user", "idle-pw", vms=0, idle="1s")
    try:
        ep = Endpoint(host=sim.host, port=sim.port, user=sim.user, datacenter=sim.datacenter,
                      password=SecretRef(file=str(_write(tmp_path / "pw", "idle-pw"))), thumbprint=sim.thumbprint)
        s = vsphere.connect(ep)
        time.sleep(3)
        with pytest.raises(InputError, match="session expired"):
            vsphere.list_vms(s)
    finally:
        sim.stop()


def _write(path, text):
    path.write_text(text)
    return path


def test_secret_ref():
    with pytest.raises(ValueError):
        SecretRef()
    with pytest.raises(ValueError):
        SecretRef(file="a", env="B")
    with pytest.raises(InputError, match=r"^\$H2K_SURELY_UNSET: the password is empty or not set$"):
        SecretRef(env="H2K_SURELY_UNSET").resolve()
    with pytest.raises(InputError, match="cannot read the password file"):
        SecretRef(file="/nonexistent/pw").resolve()


def test_parse_url():
    e = parse_url("vsphere://admin%40corp@vc.example:8443/Europe/DC1", thumbprint="ab:" * 31 + "ab")
    assert (e.user, e.host, e.port, e.datacenter) == ("admin@corp", "vc.example", 8443, "Europe/DC1")
    assert e.password == SecretRef(env="H2K_VSPHERE_PASSWORD")
    assert e.url == "vsphere://admin%40corp@vc.example:8443/Europe/DC1"
    with pytest.raises(InputError, match=r"^vsphere://vc/DC: a password does not belong in the URL"):
        parse_url("vsphere://u:hunter2@vc/DC")
    with pytest.raises(InputError, match="names no datacenter"):
        parse_url("vsphere://u@vc/")
    with pytest.raises(InputError, match="at most one of ca_file, thumbprint and insecure"):
        parse_url("vsphere://u@vc/DC", insecure=True, ca_file="ca.pem")
    with pytest.raises(InputError, match="64 hex digits"):
        parse_url("vsphere://u@vc/DC", thumbprint="abcd")


def _cli(argv):
    parser = argparse.ArgumentParser(prog="h2k")
    inventory.register(parser.add_subparsers())
    args = parser.parse_args(["inventory", *argv])
    return args.func(args)


def _target(vcsim):
    return f"vsphere://{vcsim.user}@{vcsim.host}:{vcsim.port}/{vcsim.datacenter}"


def test_cli_json(vcsim, password_file, capsys):
    assert _cli([_target(vcsim), "--vm", "special/", "--json", "--password-file", str(password_file),
                 "--thumbprint", vcsim.thumbprint]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(item["vm"]["name"] for item in out) == SPECIAL
    running = next(item for item in out if item["vm"]["name"] == "running")
    assert running["vsphere"]["power_state"] == "poweredOn"
    assert running["vm"]["concerns"][0]["id"] == "vsphere.powered-on"


def test_cli_table_with_password_env(vcsim, monkeypatch, capsys):
    monkeypatch.setenv("MY_VC_PW", vcsim.password)
    monkeypatch.setenv("COLUMNS", "200")
    assert _cli([_target(vcsim), "--vm", "snapped", "--vm", "running", "--password-env", "MY_VC_PW",
                 "--thumbprint", vcsim.thumbprint]) == 0
    out = capsys.readouterr().out
    assert "special/snapped" in out and "special/running" in out and "bulk-0001" not in out
    assert "critical running: the VM is poweredOn" in out


def test_password_appears_nowhere(vcsim, password_file, capsys, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    base = [_target(vcsim), "--password-file", str(password_file), "--thumbprint", vcsim.thumbprint]
    assert _cli(base + ["--json"]) == 0
    errors = []
    for extra in (["--vm", "ghost"], ["--thumbprint", "00" * 32], ["--insecure", "--vm", "special/"]):
        argv = base[:3] + extra if extra[0] != "--vm" else base + extra
        try:
            _cli(argv)
        except InputError as exc:
            errors.append(str(exc))
    assert len(errors) == 2
    wrong = tmp_path / "wrong"
    wrong.write_text("x" + vcsim.password)
    with pytest.raises(InputError) as exc:
        _cli([_target(vcsim), "--password-file", str(wrong), "--thumbprint", vcsim.thumbprint])
    errors.append(str(exc.value))
    ep = parse_url(_target(vcsim), SecretRef(file=str(password_file)), thumbprint=vcsim.thumbprint)
    seen = capsys.readouterr()
    haystack = "\n".join([seen.out, seen.err, caplog.text, *errors, ep.model_dump_json(), repr(ep),
                          *(vm.model_dump_json() for vm in vsphere.read_vsphere(ep, ["special/"]))])
    assert vcsim.password not in haystack
    assert "h2k-admin" in haystack and "no VM matches 'ghost'" in haystack
