"""Which interfaces a network configuration declares virtual: bonds, teams, bridges and VLANs.

Pure: each function takes one file's text and returns ({interface name: kind} of the virtual
interfaces it declares or refers to, {the devices they sit on}): a member's `MASTER=bond0` names a
bond even when the bond has no file of its own, and a bond's `bond-slaves ens192 ens224` names NICs
that may have no stanza of their own. Only physical Ethernet NICs are renamed (docs/linux-fixes.md).
"""
from __future__ import annotations

import re

import yaml

VIRTUAL = ("bond", "team", "bridge", "vlan")
Kinds = tuple[dict[str, str], set[str]]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def is_vlan_name(name: str) -> bool:
    """`<parent>.<id>`: a VLAN by its name, in every format."""
    return bool(re.fullmatch(r"[^.\s]+\.\d+", name))


def _vlan_parent(name: str) -> set[str]:
    """Where a VLAN's parent comes from its name (ifcfg, ifupdown), the parent of `<parent>.<id>`."""
    return {name.rpartition(".")[0]} if is_vlan_name(name) else set()


def _shell_vars(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip().strip("\"'")
            for m in re.finditer(r"^\s*([A-Z_][A-Z0-9_]*)=(.*)$", text, re.M)}


def ifcfg(text: str, name: str) -> Kinds:
    """RHEL or SUSE ifcfg file of interface `name`; a `TYPE=` other than Ethernet is not renamed either."""
    v = _shell_vars(text)
    type_ = v.get("TYPE", "").lower()  # Ethernet, Bond, Bridge, Team, Vlan; InfiniBand or Wireless is no NIC of ours
    kind = type_ if type_ not in ("", "ethernet") else ("team" if v.get("DEVICETYPE", "").lower() == "team" else None)
    if not kind:
        if v.get("BONDING_MASTER", "").lower() == "yes" or ("BONDING_OPTS" in v and "MASTER" not in v):
            kind = "bond"
        elif v.get("VLAN", "").lower() == "yes" or "ETHERDEVICE" in v or "PHYSDEV" in v:
            kind = "vlan"
        elif v.get("BRIDGE", "").lower() == "yes":
            kind = "bridge"
        elif "TEAM_CONFIG" in v and "TEAM_MASTER" not in v:
            kind = "team"
    found = {name: kind} if kind else {}
    for key, ref_kind in (("MASTER", "bond"), ("TEAM_MASTER", "team"), ("BRIDGE", "bridge")):
        if v.get(key) and v[key].lower() not in ("yes", "no"):
            found[v[key]] = ref_kind
    lower = {v[k] for k in v if k in ("PHYSDEV", "ETHERDEVICE") or re.fullmatch(r"BONDING_SLAVE_?\d*", k)}
    lower |= set(v.get("BRIDGE_PORTS", "").split()) | _vlan_parent(name)
    return found, lower - {""}


def nm_type(text: str) -> str:
    m = re.search(r"^type=(.*)$", text, re.M)
    value = m.group(1).strip() if m else ""
    return "ethernet" if value == "802-3-ethernet" else value


def nm_keyfile(text: str) -> Kinds:
    """NetworkManager keyfile: a bond/team/bridge/vlan connection, or the controller a port names."""
    found = {}
    name = re.search(r"^interface-name=(.*)$", text, re.M)
    if nm_type(text) in VIRTUAL and name:
        found[name.group(1).strip()] = nm_type(text)
    controller = re.search(r"^(?:master|controller)=(.*)$", text, re.M)
    port_type = re.search(r"^(?:slave-type|port-type)=(.*)$", text, re.M)
    if controller and port_type and port_type.group(1).strip() in VIRTUAL:
        found[controller.group(1).strip()] = port_type.group(1).strip()
    parent = re.search(r"^parent=(.*)$", text, re.M)
    return found, ({parent.group(1).strip()} if parent and not UUID.fullmatch(parent.group(1).strip()) else set())


def netplan(text: str) -> Kinds:
    """Netplan: the ids under bonds, bridges and vlans (only `ethernets` are NICs, and netplan requires
    what these refer to to be defined there)."""
    net = (yaml.safe_load(text) or {}).get("network") or {}
    return {str(i): kind for section, kind in (("bonds", "bond"), ("bridges", "bridge"), ("vlans", "vlan"))
            for i in (net.get(section) or {})}, set()


def networkd_netdev(text: str) -> Kinds:
    """systemd-networkd .netdev: every interface it creates is virtual (Kind=bond, bridge, vlan...); the
    devices under it say so in their own .network (Bond=, VLAN=), where they are NICs already."""
    name = re.search(r"^\s*Name=(\S+)", text, re.M)
    kind = re.search(r"^\s*Kind=(\S+)", text, re.M)
    return ({name.group(1): kind.group(1) if kind else "netdev"} if name else {}), set()


def interfaces_stanzas(text: str) -> list[tuple[str, list[str]]]:
    """ifupdown: (interface, option lines) of each `iface` stanza."""
    out: list[tuple[str, list[str]]] = []
    current = None
    top = re.compile(r"^(iface|mapping|auto|allow-\S+|source|source-directory|no-auto-down|no-scripts)\b")
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if top.match(s):
            words = s.split()
            current = (words[1], []) if words[0] == "iface" and len(words) > 1 else None
            if current:
                out.append(current)
        elif current:
            current[1].append(s)
    return out


def interfaces(text: str) -> Kinds:
    """ifupdown: stanzas with bond, bridge or VLAN options, the bonds members name, and the devices
    `bond-slaves`, `bridge_ports` and `vlan-raw-device` name."""
    keys = {"bond-slaves": "bond", "bond_slaves": "bond", "bond-mode": "bond", "bond_mode": "bond", "slaves": "bond",
            "bridge_ports": "bridge", "bridge-ports": "bridge", "vlan-raw-device": "vlan", "vlan_raw_device": "vlan"}
    found, lower = {}, set()
    for name, opts in interfaces_stanzas(text):
        lower |= _vlan_parent(name)
        for opt in opts:
            words = opt.split()
            if words[0] in keys:
                found[name] = keys[words[0]]
                if words[0] not in ("bond-mode", "bond_mode"):
                    lower |= set(words[1:]) - {"none", "all"}
            elif words[0] in ("bond-master", "bond_master") and len(words) > 1:
                found[words[1]] = "bond"
    return found, lower
