"""A udev rule that names the virtio NICs as the migrated configuration expects, on any PCI placement.

The network fixer renames the guest's NICs to the names they get on the shipped machine
(h2k_tasks/machine.py pins each NIC's PCI address: the n-th on bus n+1, `enp<n+1>s0`). Another
placement (a hand-written domain, another libvirt, OpenStack, Proxmox, plain QEMU) or a new MAC
would give the NIC another predictable name and leave its configuration on no interface. So the
guest names them itself: `/etc/udev/rules.d/70-h2k-net-names.rules` runs `/usr/lib/udev/h2k-nic-name`
for every virtio-net interface the kernel adds, and the script prints its name: the one of the
source VM's NIC whose MAC it kept, else the one of its position among the virtio-net PCI functions
in PCI address order (the order the NICs are declared in, with any tool that places them in order).
NAME set by a rule wins over the predictable name (80-net-setup-link.rules only fills an empty one).

Left alone: two NICs where one kept its MAC and one did not, declared in the other order (both can
claim one name; udev then keeps the second one's kernel name).
"""
from __future__ import annotations

RULE = "/etc/udev/rules.d/70-h2k-net-names.rules"
# Beside udev's own helpers, where an SELinux policy labels it bin_t (executable); /etc would make it etc_t.
SCRIPT = "/usr/lib/udev/h2k-nic-name"
# virtio-net: the transitional (0x1000) and modern (0x1041) PCI device ids of vendor 0x1af4
VIRTIO_NET_IDS = ("0x1000", "0x1041")


def rule_text() -> str:
    return ("# Written by hyper2kvm: migrated NICs keep the names their configuration uses, wherever the\n"
            f"# virtio NIC lands on the PCI bus and whatever its MAC ({SCRIPT} says which).\n"
            f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="virtio_net", PROGRAM="{SCRIPT} %k", NAME="%c"\n')


def script_text(nics: list[tuple[str, str | None]]) -> str:
    """`nics`: (name, source MAC or None) of each virtio NIC, in the machine's order."""
    by_mac = "".join(f"{mac.lower()}) echo {name}; exit 0 ;;\n" for name, mac in nics if mac)
    by_position = "".join(f"{n}) echo {name} ;;\n" for n, (name, _) in enumerate(nics))
    return f"""#!/bin/sh
# Written by hyper2kvm (see {RULE}): the name of virtio NIC $1.
# Its source MAC, if it kept it, names it; else its position among the virtio-net PCI functions.
sys=${{H2K_SYSFS:-/sys}}
case "$(cat "$sys/class/net/$1/address" 2>/dev/null)" in
{by_mac}esac
me=$(readlink -f "$sys/class/net/$1/device/..")
n=0
for dev in "$sys"/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor" 2>/dev/null)" = 0x1af4 ] || continue
    case "$(cat "$dev/device" 2>/dev/null)" in {"|".join(VIRTIO_NET_IDS)}) ;; *) continue ;; esac
    [ "$(readlink -f "$dev")" = "$me" ] && break
    n=$((n + 1))
done
[ "$(readlink -f "$dev")" = "$me" ] || exit 1
case $n in
{by_position}*) exit 1 ;;
esac
"""
