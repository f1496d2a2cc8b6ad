"""Bonds, bridges and VLANs keep their names; their NICs are renamed and members and parents follow.

For each format the network fixer handles, the phony Debian 12 guest (real libguestfs, on a throwaway
overlay) gets that format's configuration only: a bond of two NICs (ens192, ens224) carrying the
static address, and a third NIC (ens256) with a VLAN named after it (ens256.100) and, where the format
allows it, one named otherwise (vlan300). The fixer runs twice (the second run changes nothing) and the
files are read back. The fixer does not look at the distro, only at the files.
"""
from __future__ import annotations

import pytest
import yaml

from h2k_planner.models import Nic
from h2k_tasks.fixers.guestfiles import listdir
from h2k_tasks.fixers.linux import network, nicnames
from tests.linux_guests import open_guest

M1, M2, M3 = "00:50:56:8a:00:01", "00:50:56:8a:00:02", "00:50:56:8a:00:03"
RH, SUSE, NM, ND = network.RH, network.SUSE, network.NM, network.NETWORKD
DIRS = [RH, SUSE, NM, network.NETPLAN, ND, "/etc/network/interfaces.d"]


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    guest = open_guest("debian12", tmp_path_factory.mktemp("netvirt"))
    guest.ctx.vm = guest.ctx.vm.model_copy(update={"nics": [Nic(mac=m, model="vmxnet3") for m in (M1, M2, M3)]})
    yield guest
    guest.g.close()


def run(guest, files: dict[str, str]) -> list[str]:
    """Only `files` as network configuration; run the fixer twice; the notes of the first run."""
    g = guest.g
    for d in DIRS:
        for p in listdir(g, d):
            g.rm_rf(p)
    g.rm_f("/etc/network/interfaces")
    for path, text in files.items():
        g.mkdir_p(path.rsplit("/", 1)[0])
        g.write(path, text.encode())
    guest.ctx.log.clear()
    assert network.fix(guest.ctx)
    notes = list(guest.ctx.log)
    assert network.fix(guest.ctx) == []
    return notes


def member_ifcfg(name, mac, master_key="MASTER", master="bond0"):
    return f"DEVICE={name}\nTYPE=Ethernet\nHWADDR={mac}\n{master_key}={master}\nSLAVE=yes\nBOOTPROTO=none\nONBOOT=yes\n"


def test_ifcfg_rhel(guest):
    notes = run(guest, {
        f"{RH}/ifcfg-bond0": 'DEVICE=bond0\nTYPE=Bond\nBONDING_MASTER=yes\nBONDING_OPTS="mode=active-backup"\n'
                             "BOOTPROTO=none\nIPADDR=192.0.2.10\nPREFIX=24\nGATEWAY=192.0.2.1\nDNS1=192.0.2.53\n",
        f"{RH}/ifcfg-ens192": member_ifcfg("ens192", M1),
        f"{RH}/ifcfg-ens224": member_ifcfg("ens224", M2),
        f"{RH}/ifcfg-ens256": f"DEVICE=ens256\nTYPE=Ethernet\nHWADDR={M3}\nBOOTPROTO=none\n",
        f"{RH}/ifcfg-ens256.100": "DEVICE=ens256.100\nVLAN=yes\nBOOTPROTO=none\nIPADDR=198.51.100.10\nPREFIX=24\n",
        f"{RH}/route-ens256.100": "203.0.113.0/24 via 198.51.100.1 dev ens256.100\n",
        f"{RH}/ifcfg-vlan300": "DEVICE=vlan300\nVLAN=yes\nVLAN_ID=300\nPHYSDEV=ens256\nBOOTPROTO=dhcp\n",
        f"{RH}/route-bond0": "198.51.100.0/24 via 192.0.2.254 dev bond0\n",
    })
    r = guest.read
    assert sorted(p.rsplit("/", 1)[1] for p in listdir(guest.g, RH)) == [
        "ifcfg-bond0", "ifcfg-enp1s0", "ifcfg-enp2s0", "ifcfg-enp3s0", "ifcfg-enp3s0.100", "ifcfg-vlan300",
        "route-bond0", "route-enp3s0.100"]
    assert r(f"{RH}/ifcfg-bond0").startswith("DEVICE=bond0\nTYPE=Bond\n")
    assert "IPADDR=192.0.2.10\n" in r(f"{RH}/ifcfg-bond0")
    for new in ("enp1s0", "enp2s0"):
        assert r(f"{RH}/ifcfg-{new}") == \
            f"DEVICE={new}\nTYPE=Ethernet\nMASTER=bond0\nSLAVE=yes\nBOOTPROTO=none\nONBOOT=yes\n"
    assert r(f"{RH}/ifcfg-enp3s0.100") == \
        "DEVICE=enp3s0.100\nVLAN=yes\nBOOTPROTO=none\nIPADDR=198.51.100.10\nPREFIX=24\n"
    assert r(f"{RH}/route-enp3s0.100") == "203.0.113.0/24 via 198.51.100.1 dev enp3s0.100\n"
    assert r(f"{RH}/ifcfg-vlan300") == "DEVICE=vlan300\nVLAN=yes\nVLAN_ID=300\nPHYSDEV=enp3s0\nBOOTPROTO=dhcp\n"
    assert r(f"{RH}/route-bond0") == "198.51.100.0/24 via 192.0.2.254 dev bond0\n"
    assert f"linux.network: NIC ens192 ({M1}) -> named enp1s0" in notes
    assert f"linux.network: NIC ens256 ({M3}) -> named enp3s0" in notes
    assert "linux.network: bond bond0 keeps its name" in notes
    assert "linux.network: vlan ens256.100 -> enp3s0.100 in ifcfg and ifupdown files (named after its parent), " \
        "kept where its name is declared" in notes


def test_ifcfg_suse(guest):
    run(guest, {
        f"{SUSE}/ifcfg-bond0": "STARTMODE='auto'\nBOOTPROTO='static'\nIPADDR='192.0.2.40/24'\nBONDING_MASTER='yes'\n"
                               "BONDING_MODULE_OPTS='mode=active-backup miimon=100'\nBONDING_SLAVE0='ens192'\n"
                               "BONDING_SLAVE1='ens224'\n",
        f"{SUSE}/ifcfg-ens192": f"STARTMODE='hotplug'\nBOOTPROTO='none'\nLLADDR='{M1}'\n",
        f"{SUSE}/ifcfg-vlan100": "STARTMODE='auto'\nBOOTPROTO='static'\nIPADDR='198.51.100.40/24'\n"
                                 "ETHERDEVICE='ens256'\nVLAN_ID='100'\n",
        f"{SUSE}/routes": "default 192.0.2.1 - bond0\n203.0.113.0/24 198.51.100.1 - vlan100\n",
    })
    r = guest.read
    assert sorted(p.rsplit("/", 1)[1] for p in listdir(guest.g, SUSE)) == [
        "ifcfg-bond0", "ifcfg-enp1s0", "ifcfg-vlan100", "routes"]
    assert r(f"{SUSE}/ifcfg-bond0") == (
        "STARTMODE='auto'\nBOOTPROTO='static'\nIPADDR='192.0.2.40/24'\nBONDING_MASTER='yes'\n"
        "BONDING_MODULE_OPTS='mode=active-backup miimon=100'\nBONDING_SLAVE0='enp1s0'\nBONDING_SLAVE1='enp2s0'\n")
    assert r(f"{SUSE}/ifcfg-enp1s0") == "STARTMODE='hotplug'\nBOOTPROTO='none'\n"
    assert r(f"{SUSE}/ifcfg-vlan100") == ("STARTMODE='auto'\nBOOTPROTO='static'\nIPADDR='198.51.100.40/24'\n"
                                          "ETHERDEVICE='enp3s0'\nVLAN_ID='100'\n")
    assert r(f"{SUSE}/routes") == "default 192.0.2.1 - bond0\n203.0.113.0/24 198.51.100.1 - vlan100\n"


def nm(name, type_, body):
    return f"[connection]\nid={name}\ntype={type_}\ninterface-name={name}\n{body}"


def test_networkmanager_keyfiles(guest):
    member = "master=bond0\nslave-type=bond\n\n[ethernet]\nmac-address={}\n"
    run(guest, {
        f"{NM}/bond0.nmconnection": nm("bond0", "bond", "\n[bond]\nmode=active-backup\n\n[ipv4]\n"
                                                        "address1=192.0.2.10/24,192.0.2.1\ndns=192.0.2.53;\nmethod=manual\n"),
        f"{NM}/ens192.nmconnection": nm("ens192", "ethernet", member.format(M1)),
        f"{NM}/ens224.nmconnection": nm("ens224", "ethernet", "controller=bond0\nport-type=bond\n"),
        f"{NM}/ens256.100.nmconnection": nm("ens256.100", "vlan", "\n[vlan]\nid=100\nparent=ens256\n\n[ipv4]\n"
                                                                  "address1=198.51.100.10/24\nmethod=manual\n"),
        f"{NM}/wifi.nmconnection": nm("wlan0", "wifi", "\n[wifi]\nmac-address=00:11:22:33:44:55\n"),
    })
    r = guest.read
    assert r(f"{NM}/bond0.nmconnection").startswith("[connection]\nid=bond0\ntype=bond\ninterface-name=bond0\n")
    assert r(f"{NM}/ens192.nmconnection") == \
        "[connection]\nid=ens192\ntype=ethernet\ninterface-name=enp1s0\nmaster=bond0\nslave-type=bond\n\n[ethernet]\n"
    assert r(f"{NM}/ens224.nmconnection") == \
        "[connection]\nid=ens224\ntype=ethernet\ninterface-name=enp2s0\ncontroller=bond0\nport-type=bond\n"
    assert r(f"{NM}/ens256.100.nmconnection") == nm("ens256.100", "vlan", "\n[vlan]\nid=100\nparent=enp3s0\n\n[ipv4]\n"
                                                                          "address1=198.51.100.10/24\nmethod=manual\n")
    assert r(f"{NM}/wifi.nmconnection") == nm("wlan0", "wifi", "\n[wifi]\nmac-address=00:11:22:33:44:55\n")


def test_netplan(guest):
    doc = {"network": {"version": 2, "ethernets": {
        "ens192": {"match": {"macaddress": M1}, "set-name": "ens192"},
        "ens224": {"match": {"macaddress": M2}, "set-name": "ens224"},
        "ens256": {"dhcp4": False}},
        "bonds": {"bond0": {"interfaces": ["ens192", "ens224"], "parameters": {"mode": "active-backup"},
                            "addresses": ["192.0.2.20/24"], "routes": [{"to": "default", "via": "192.0.2.1"}],
                            "nameservers": {"addresses": ["192.0.2.53"]}}},
        "vlans": {"ens256.100": {"id": 100, "link": "ens256", "addresses": ["198.51.100.20/24"]}}}}
    run(guest, {"/etc/netplan/50-bond.yaml": yaml.safe_dump(doc, sort_keys=False)})
    new = yaml.safe_load(guest.read("/etc/netplan/50-bond.yaml"))["network"]
    assert new["ethernets"] == {"ens192": {"match": {"name": "enp1s0"}}, "ens224": {"match": {"name": "enp2s0"}},
                                "ens256": {"match": {"name": "enp3s0"}, "dhcp4": False}}
    assert new["bonds"] == doc["network"]["bonds"] and new["vlans"] == doc["network"]["vlans"]


def test_systemd_networkd(guest):
    member = "[Match]\nName={}\nMACAddress={}\n\n[Network]\nBond=bond0\n"
    bond_net = "[Match]\nName=bond0\n\n[Network]\nAddress=192.0.2.50/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n"
    vlan_dev = "[NetDev]\nName=ens256.100\nKind=vlan\n\n[VLAN]\nId=100\n"
    vlan_net = "[Match]\nName=ens256.100\n\n[Network]\nAddress=198.51.100.50/24\n"
    run(guest, {
        f"{ND}/10-ens192.network": member.format("ens192", M1),
        f"{ND}/10-ens224.network": member.format("ens224", M2),
        f"{ND}/10-ens256.network": f"[Match]\nName=ens256\nMACAddress={M3}\n\n[Network]\nVLAN=ens256.100\n",
        f"{ND}/20-bond0.netdev": "[NetDev]\nName=bond0\nKind=bond\n\n[Bond]\nMode=active-backup\n",
        f"{ND}/20-bond0.network": bond_net,
        f"{ND}/30-vlan.netdev": vlan_dev,
        f"{ND}/30-vlan.network": vlan_net,
    })
    r = guest.read
    assert r(f"{ND}/10-ens192.network") == "[Match]\nName=enp1s0\n\n[Network]\nBond=bond0\n"
    assert r(f"{ND}/10-ens224.network") == "[Match]\nName=enp2s0\n\n[Network]\nBond=bond0\n"
    assert r(f"{ND}/10-ens256.network") == "[Match]\nName=enp3s0\n\n[Network]\nVLAN=ens256.100\n"
    assert r(f"{ND}/20-bond0.network") == bond_net
    assert (r(f"{ND}/30-vlan.netdev"), r(f"{ND}/30-vlan.network")) == (vlan_dev, vlan_net)


def test_systemd_networkd_matched_by_mac_only(guest):
    """Two NICs whose .network files name no interface (VMware named them by slot): each follows its
    MAC to the virtio NIC that keeps it, and the udev rule names that NIC."""
    notes = run(guest, {f"{ND}/10-a.network": f"[Match]\nMACAddress={M2.upper()}\n\n[Network]\nDHCP=ipv4\n",
                        f"{ND}/10-b.network": f"[Match]\nMACAddress={M1}\n\n[Network]\nAddress=192.0.2.9/24\n"})
    assert guest.read(f"{ND}/10-a.network") == "[Match]\nName=enp2s0\n\n[Network]\nDHCP=ipv4\n"
    assert guest.read(f"{ND}/10-b.network") == "[Match]\nName=enp1s0\n\n[Network]\nAddress=192.0.2.9/24\n"
    assert f"{M1}) echo enp1s0;" in guest.read(nicnames.SCRIPT)
    assert any("matched by MAC only" in n for n in notes), notes


def test_ifupdown(guest):
    notes = run(guest, {"/etc/network/interfaces": (
        "auto lo\niface lo inet loopback\n\n"
        "auto bond0\niface bond0 inet static\n    address 192.0.2.30/24\n    gateway 192.0.2.1\n"
        "    dns-nameservers 192.0.2.53\n    bond-slaves ens192 ens224\n    bond-mode active-backup\n"
        f"    hwaddress ether {M1}\n\n"
        "auto ens256.100\niface ens256.100 inet static\n    address 198.51.100.30/24\n"
        "    up ip route add 203.0.113.0/24 via 198.51.100.1 dev ens256.100\n\n"
        "auto vlan300\niface vlan300 inet dhcp\n    vlan-raw-device ens256\n")})
    assert guest.read("/etc/network/interfaces") == (
        "auto lo\niface lo inet loopback\n\n"
        "auto bond0\niface bond0 inet static\n    address 192.0.2.30/24\n    gateway 192.0.2.1\n"
        "    dns-nameservers 192.0.2.53\n    bond-slaves enp1s0 enp2s0\n    bond-mode active-backup\n\n"
        "auto enp3s0.100\niface enp3s0.100 inet static\n    address 198.51.100.30/24\n"
        "    up ip route add 203.0.113.0/24 via 198.51.100.1 dev enp3s0.100\n\n"
        "auto vlan300\niface vlan300 inet dhcp\n    vlan-raw-device enp3s0\n")
    assert "linux.network: NIC ens192 (no MAC pinned) -> named enp1s0" in notes
    assert "linux.network: bond bond0 keeps its name" in notes and "linux.network: vlan vlan300 keeps its name" in notes
