"""Pure rewrites of network configuration text: drop MAC pinning, rename or unpin interface names.

Each function takes the file text and `names` (old interface name -> new name) and returns new text.
`anyname` means the guest has one NIC: backends that can match by driver then match `virtio_net`
instead of a name, which survives any naming scheme (q35 enp1s0, pc ens3, net.ifnames=0 eth0).
"""
from __future__ import annotations

import re

import yaml

from h2k_tasks.fixers.linux.netkinds import interfaces_stanzas

VIRTIO_DRIVER = "virtio_net"


def _sub_words(text: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        if old != new:
            text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w-])", new, text)
    return text


def ifcfg_pins(text: str, key: str = "DEVICE") -> tuple[str | None, str | None]:
    """(interface name, MAC) an ifcfg file pins, from DEVICE= and HWADDR=/LLADDR=."""
    def val(k):
        m = re.search(rf"^{k}=[\"']?([^\"'\n]*)", text, re.M)
        return m.group(1).strip() if m else None
    return val(key), val("HWADDR") or val("LLADDR")


def ifcfg(text: str, names: dict[str, str]) -> str:
    """RHEL/SUSE ifcfg: drop HWADDR/MACADDR/LLADDR lines, rename DEVICE/NAME and the word elsewhere."""
    text = re.sub(r"^(?:HWADDR|MACADDR|LLADDR)=.*\n?", "", text, flags=re.M)
    return _sub_words(text, names)


def routes(text: str, names: dict[str, str]) -> str:
    return _sub_words(text, names)


def nm_keyfile(text: str, names: dict[str, str], anyname: bool) -> str:
    """NetworkManager keyfile: drop mac-address=; drop interface-name= (one NIC) or rename it; a VLAN's
    parent= follows its NIC (a parent given as a connection UUID is left)."""
    text = re.sub(r"^mac-address=.*\n?", "", text, flags=re.M)
    if anyname:
        text = re.sub(r"^interface-name=.*\n?", "", text, flags=re.M)
    return re.sub(r"^((?:interface-name|parent)=)(.*)$", lambda m: m.group(1) + names.get(m.group(2), m.group(2)),
                  text, flags=re.M)


def nm_pins(text: str) -> tuple[str | None, str | None]:
    name = re.search(r"^interface-name=(.*)$", text, re.M)
    mac = re.search(r"^mac-address=(.*)$", text, re.M)
    return (name.group(1).strip() if name else None, mac.group(1).strip() if mac else None)


def netplan(text: str, names: dict[str, str], anyname: bool) -> str:
    """Netplan: ethernets keep their ids; match by driver (one NIC) or by the new name; no set-name/MAC."""
    doc = yaml.safe_load(text) or {}
    eths = (doc.get("network") or {}).get("ethernets") or {}
    renderer_nm = (doc.get("network") or {}).get("renderer") == "NetworkManager"
    changed = False
    for eid, cfg in list(eths.items()):
        cfg = cfg if isinstance(cfg, dict) else {}
        old = (cfg.get("match") or {}).get("name") or cfg.get("set-name") or eid
        pinned = "macaddress" in (cfg.get("match") or {}) or "set-name" in cfg or "macaddress" in cfg
        if anyname and not renderer_nm:
            want = {"driver": VIRTIO_DRIVER}
        elif old in names and names[old] != eid:
            want = {"name": names[old]}
        else:
            want = cfg.get("match")
        if not pinned and cfg.get("match") == want:
            continue
        for key in ("set-name", "macaddress", "match"):
            cfg.pop(key, None)
        if want:
            cfg = {"match": want, **cfg}
        eths[eid] = cfg
        changed = True
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False) if changed else text


def netplan_pins(text: str) -> list[tuple[str, str | None]]:
    doc = yaml.safe_load(text) or {}
    out = []
    for eid, cfg in ((doc.get("network") or {}).get("ethernets") or {}).items():
        match = (cfg or {}).get("match") or {}
        if "driver" in match and "name" not in match:
            continue
        out.append((cfg.get("set-name") or match.get("name") or eid, match.get("macaddress") or cfg.get("macaddress")))
    return out


def networkd_network(text: str, names: dict[str, str], anyname: bool, by_mac: dict[str, str]) -> str:
    """systemd-networkd .network: drop [Match] MACAddress=; exact Name= -> Driver= (one NIC) or the new
    name. A [Match] that held a MAC and no Name= matches Driver= (one NIC) or the new name of the NIC
    with that MAC (`by_mac`, lower-case MAC -> name) instead: an empty [Match] would match every link."""
    out = []
    for block in re.split(r"(?m)^(?=[ \t]*\[)", text):
        match = block.lstrip().startswith("[Match]")
        named = match and re.search(r"^[ \t]*Name=", block, re.M)
        for line in block.splitlines(True):
            key, _, value = line.strip().partition("=")
            value = value.strip()
            if match and key == "MACAddress":
                if named:
                    continue
                if anyname:
                    line = f"Driver={VIRTIO_DRIVER}\n"
                elif value.lower() in by_mac:
                    line = f"Name={by_mac[value.lower()]}\n"
            elif match and key == "Name" and value in names:
                line = f"Driver={VIRTIO_DRIVER}\n" if anyname else f"Name={names[value]}\n"
            out.append(line)
    return "".join(out)


def networkd_pins(text: str) -> tuple[str | None, str | None]:
    name = re.search(r"^Name=([^\s*?\[]+)\s*$", text, re.M)
    mac = re.search(r"^MACAddress=(\S+)", text, re.M)
    return (name.group(1) if name else None, mac.group(1) if mac else None)


def networkd_link_pins_mac(text: str) -> bool:
    """A .link file that names an interface after matching its MAC (VMware's MAC will not come back)."""
    match = re.search(r"^\[Match\]([^\[]*)", text, re.M)
    return bool(match and re.search(r"^\s*(MACAddress|PermanentMACAddress)=", match.group(1), re.M))


def interfaces(text: str, names: dict[str, str]) -> str:
    """Debian ifupdown: drop hwaddress lines; rename interfaces (ifupdown has no any-name match)."""
    text = re.sub(r"^[ \t]*hwaddress\b.*\n?", "", text, flags=re.M)
    return _sub_words(text, names)


def interfaces_pins(text: str) -> list[tuple[str, str | None]]:
    """(interface, MAC of its `hwaddress` line) of each `iface` stanza but loopback and aliases."""
    out = []
    for name, opts in interfaces_stanzas(text):
        if name != "lo" and ":" not in name:
            mac = next((m.group(1) for o in opts if (m := re.match(r"hwaddress\s+(?:ether\s+)?(\S+)", o))), None)
            out.append((name, mac))
    return out
