"""Network configuration that follows the NIC from VMware (vmxnet3/e1000, ens192) to virtio-net.

Every backend's MAC pinning is dropped (the VMware MAC may not come back, and the NIC is new) and
`70-persistent-net.rules` and MAC-matching `.link` files are removed. Addresses, routes and DNS stay.
Only physical Ethernet NICs are renamed: bonds, teams, bridges and VLANs (netkinds.py) keep their
names, and what refers to a NIC (members, a VLAN's parent) follows it; a VLAN named `<nic>.<id>`
becomes `<new>.<id>` where the format derives its parent from its name (ifcfg, ifupdown).
Names: with one NIC and nothing virtual on it, NetworkManager keyfiles (no interface-name), netplan
and systemd-networkd (match driver virtio_net) take any name; ifcfg and ifupdown files, and guests
with several NICs or virtual interfaces, are renamed to the name the n-th virtio NIC gets:
`net.ifnames=0` on the command line -> eth<n>; else options["nic_names"][n] if given; else the name
on the shipped machine's placement, enp<n+1>s0. An old NIC pinned to the MAC of ctx.vm.nics[n] is
the n-th; the others take the free positions by name. A udev rule (nicnames.py) then gives the
virtio NICs those names on any PCI placement and with a new MAC.
"""
from __future__ import annotations

import re

from h2k_tasks.fixers import Change, FixContext
from h2k_tasks.fixers.guestfiles import listdir, read, remove, rename, write
from h2k_tasks.fixers.linux import netconfigs as nc
from h2k_tasks.fixers.linux import netkinds, nicnames

FIXER = "linux.network"
RH = "/etc/sysconfig/network-scripts"
SUSE = "/etc/sysconfig/network"
NM = "/etc/NetworkManager/system-connections"
NETPLAN = "/etc/netplan"
NETWORKD = "/etc/systemd/network"
UDEV_RULES = ["/etc/udev/rules.d/70-persistent-net.rules"]
SUMMARY = "NIC config: no MAC pinning, names for the virtio NIC"


def _ifcfg_files(g) -> list[str]:
    return [p for d in (RH, SUSE) for p in listdir(g, d, prefix="ifcfg-")
            if not p.endswith(("ifcfg-lo", ".bak", "~")) and g.is_file(p)]


def _nm_files(g, types: tuple[str, ...]) -> list[str]:
    return [p for p in listdir(g, NM) if g.is_file(p) and netkinds.nm_type(read(g, p) or "") in types]


def _interfaces_files(g) -> list[str]:
    files = ["/etc/network/interfaces"] if g.is_file("/etc/network/interfaces") else []
    return files + [p for p in listdir(g, "/etc/network/interfaces.d") if g.is_file(p)]


def _ifcfg_name(g, path: str) -> str:
    return nc.ifcfg_pins(read(g, path))[0] or path.rsplit("ifcfg-", 1)[1]


def virtual(g) -> netkinds.Kinds:
    """Bonds, teams, bridges and VLANs the configs declare or refer to (name -> kind), and the devices
    they name as members or parents."""
    found: dict[str, str] = {}
    lower: set[str] = set()

    def add(kinds: netkinds.Kinds):
        found.update(kinds[0])
        lower.update(kinds[1])

    for p in _ifcfg_files(g):
        add(netkinds.ifcfg(read(g, p), _ifcfg_name(g, p)))
    for p in _nm_files(g, ("ethernet", *netkinds.VIRTUAL)):
        add(netkinds.nm_keyfile(read(g, p)))
    for p in listdir(g, NETPLAN, ".yaml"):
        add(netkinds.netplan(read(g, p)))
    for p in listdir(g, NETWORKD, ".netdev"):
        add(netkinds.networkd_netdev(read(g, p)))
    for p in _interfaces_files(g):
        add(netkinds.interfaces(read(g, p)))
    return found, lower


def collect(g, kinds: netkinds.Kinds) -> dict[str, str | None]:
    """Physical NICs the configs name (old name -> MAC or None): every named interface that is not
    virtual, and the members and parents of virtual ones."""
    virtual_names, lower = kinds
    found: dict[str, str | None] = {}

    def add(name, mac):
        if name and name != "lo" and name not in virtual_names and not netkinds.is_vlan_name(name):
            found[name] = found.get(name) or (mac.lower() if mac else None)

    for p in _ifcfg_files(g):
        add(_ifcfg_name(g, p), nc.ifcfg_pins(read(g, p))[1])
    for p in _nm_files(g, ("ethernet",)):
        add(*nc.nm_pins(read(g, p)))
    for p in listdir(g, NETPLAN, ".yaml"):
        for name, mac in nc.netplan_pins(read(g, p)):
            add(name, mac)
    for p in listdir(g, NETWORKD, ".network"):
        name, mac = nc.networkd_pins(read(g, p))
        # Matched by MAC alone (the NIC's VMware name is in no file): the MAC stands for its name.
        add(name or (mac and mac.lower()), mac)
    for p in _interfaces_files(g):
        for name, mac in nc.interfaces_pins(read(g, p)):
            add(name, mac)
    for name in sorted(lower):
        add(name, None)
    return found


def vlan_renames(virtual_names: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """VLANs named `<nic>.<id>` on a renamed NIC -> `<new>.<id>` (the ifcfg and ifupdown naming)."""
    out = {}
    for name in virtual_names:
        parent, _, vid = name.rpartition(".")
        if netkinds.is_vlan_name(name) and names.get(parent, parent) != parent:
            out[name] = f"{names[parent]}.{vid}"
    return out


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _cmdline_text(g) -> str:
    paths = ["/etc/default/grub", "/etc/kernel/cmdline", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"]
    return " ".join(read(g, p) or "" for p in paths + listdir(g, "/boot/loader/entries", ".conf"))


def nic_positions(ctx: FixContext, found: dict[str, str | None]) -> dict[str, int]:
    """Old name -> position of the virtio NIC that takes its place: an old NIC pinned to the MAC of the
    VM's n-th NIC becomes the n-th virtio NIC; the others take the free positions, in name order."""
    macs = [(n.mac or "").lower() for n in getattr(ctx.vm, "nics", [])]
    out = {old: macs.index(mac) for old, mac in found.items() if mac and mac in macs}
    if len(set(out.values())) < len(out):  # two configs pinned to one MAC: position by name
        out = {}
    free = (n for n in range(len(found) + len(macs)) if n not in out.values())
    for old in sorted(found, key=_natural):
        if old not in out:
            out[old] = next(free)
    return out


def nic_name(ctx: FixContext, n: int, kernel_names: bool) -> str:
    """The name of the n-th virtio NIC: eth<n> with kernel names (`net.ifnames=0`), else
    options["nic_names"][n], else the name the shipped machine's placement gives it
    (h2k_tasks/machine.py: the n-th NIC on bus n+1)."""
    if kernel_names:
        return f"eth{n}"
    given = ctx.options.get("nic_names") or []
    return given[n] if n < len(given) else f"enp{n + 1}s0"


def _kernel_names(g) -> bool:
    return bool(re.search(r"(^|\s|\")net\.ifnames=0\b", _cmdline_text(g)))


def _rewrite(ctx: FixContext, path: str, func, *args) -> list[Change]:
    return write(ctx, FIXER, path, func(read(ctx.g, path), *args), SUMMARY)


def _rename_by_suffix(ctx: FixContext, path: str, names: dict[str, str]) -> list[Change]:
    directory, base = path.rsplit("/", 1)
    m = re.match(r"(ifcfg|route6?|rule6?|ifroute)-(.+)$", base)
    if not m or names.get(m.group(2), m.group(2)) == m.group(2):
        return []
    target = f"{directory}/{m.group(1)}-{names[m.group(2)]}"
    if ctx.g.exists(target):
        ctx.log.append(f"{FIXER}: {target} exists; {path} not renamed")
        return []
    return rename(ctx, FIXER, path, target, f"follows the NIC's new name {names[m.group(2)]}")


def fix(ctx: FixContext) -> list[Change]:
    g = ctx.g
    kinds = virtual(g)
    virtual_names = kinds[0]
    found = collect(g, kinds)
    kernel_names = _kernel_names(g)
    positions = nic_positions(ctx, found)
    names = {old: nic_name(ctx, n, kernel_names) for old, n in positions.items()}
    by_mac = {mac: names[old] for old, mac in found.items() if mac}
    names = {old: new for old, new in names.items() if old != found[old]}  # real names only, for rewrites
    vlans = vlan_renames(virtual_names, names)
    anyname = len(found) == 1 and len(getattr(ctx.vm, "nics", [])) <= 1 and not virtual_names
    how = "matched by driver virtio_net where the backend can, else named" if anyname else "named"
    for old, new in names.items():
        ctx.log.append(f"{FIXER}: NIC {old} ({found[old] or 'no MAC pinned'}) -> {how} {new}")
    for mac, new in by_mac.items():
        if found.get(mac) == mac:
            ctx.log.append(f"{FIXER}: NIC with MAC {mac} (matched by MAC only) -> {how} {new}")
    for name, kind in sorted(virtual_names.items()):
        if name in vlans:
            ctx.log.append(f"{FIXER}: {kind} {name} -> {vlans[name]} in ifcfg and ifupdown files (named after its "
                           "parent), kept where its name is declared")
        else:
            ctx.log.append(f"{FIXER}: {kind} {name} keeps its name")
    changes = []
    for p in _ifcfg_files(g):
        changes += _rewrite(ctx, p, nc.ifcfg, names)
    route_files = [p for d in (RH, SUSE) for prefix in ("route-", "route6-", "rule-", "ifroute-")
                   for p in listdir(g, d, prefix=prefix)]
    for p in route_files + ([f"{SUSE}/routes"] if g.is_file(f"{SUSE}/routes") else []):
        changes += _rewrite(ctx, p, nc.routes, names)
    for p in _ifcfg_files(g) + route_files:
        changes += _rename_by_suffix(ctx, p, names | vlans)
    for p in _nm_files(g, ("ethernet", *netkinds.VIRTUAL)):
        changes += _rewrite(ctx, p, nc.nm_keyfile, names, anyname)
    for p in listdir(g, NETPLAN, ".yaml"):
        changes += _rewrite(ctx, p, nc.netplan, names, anyname)
    for p in listdir(g, NETWORKD, ".network"):
        changes += _rewrite(ctx, p, nc.networkd_network, names, anyname, by_mac)
    for p in listdir(g, NETWORKD, ".link"):
        if nc.networkd_link_pins_mac(read(g, p) or ""):
            changes += remove(ctx, FIXER, p, "names a NIC by its VMware MAC")
    for p in _interfaces_files(g):
        changes += _rewrite(ctx, p, nc.interfaces, names)
    for p in UDEV_RULES:
        changes += remove(ctx, FIXER, p, "pins NIC names to VMware MACs")
    return changes + ([] if kernel_names else _naming_rule(ctx, positions))


def _naming_rule(ctx: FixContext, positions: dict[str, int]) -> list[Change]:
    """The udev rule that gives the virtio NICs these names on any placement (nicnames.py); not in a
    guest without udev. Never with kernel names (eth<N> is the kernel's own namespace): fix() asks."""
    g = ctx.g
    if not positions or not any(g.is_dir(d) for d in ("/etc/udev", "/lib/udev", "/usr/lib/udev")):
        return []
    macs = [n.mac for n in getattr(ctx.vm, "nics", [])]
    count = max(len(macs), max(positions.values()) + 1)
    nics = [(nic_name(ctx, n, False), macs[n] if n < len(macs) else None) for n in range(count)]
    changes = write(ctx, FIXER, nicnames.SCRIPT, nicnames.script_text(nics), "names the virtio NICs on any placement")
    g.chmod(0o755, nicnames.SCRIPT)
    for name, mac in nics:
        ctx.log.append(f"{FIXER}: virtio NIC {mac or '(new MAC)'} -> {name} on any PCI placement ({nicnames.RULE})")
    return changes + write(ctx, FIXER, nicnames.RULE, nicnames.rule_text(), "names the virtio NICs on any placement")
