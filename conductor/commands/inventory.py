"""`h2k inventory vsphere://USER@HOST/DC`: list a datacenter's VMs with their preflight concerns."""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from h2k_planner.models import Severity
from h2k_planner.secret_ref import SecretRef
from h2k_planner.sources import vsphere
from h2k_planner.sources.vsphere_endpoint import DEFAULT_PASSWORD_ENV, parse_url

_STYLE = {Severity.critical: "bold red", Severity.warning: "yellow", Severity.info: "dim"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inventory", help="list a vSphere datacenter's VMs and their preflight concerns",
                              description="List VMs of vsphere://USER@HOST[:PORT]/DATACENTER. The password is "
                                          f"read from a file or an environment variable (default ${DEFAULT_PASSWORD_ENV}),"
                                          " never from the command line.")
    p.add_argument("url", help="vsphere://USER@HOST[:PORT]/DATACENTER")
    p.add_argument("--vm", action="append", default=[], metavar="PATTERN",
                   help="VM name, glob, 'folder/' or 'folder/name' (repeatable; default: all VMs)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password-file", metavar="FILE", help="file holding the password")
    secret.add_argument("--password-env", metavar="NAME", help=f"variable holding it (default {DEFAULT_PASSWORD_ENV})")
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--ca-file", metavar="FILE", help="PEM bundle to verify the server certificate with")
    trust.add_argument("--thumbprint", metavar="SHA256", help="pin the server certificate's SHA-256")
    trust.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the selected VMs; raises InputError (exit 2 in the CLI) on any connection or selection error."""
    password = (SecretRef(file=args.password_file) if args.password_file
                else SecretRef(env=args.password_env or DEFAULT_PASSWORD_ENV))
    endpoint = parse_url(args.url, password, ca_file=args.ca_file, thumbprint=args.thumbprint,
                         insecure=args.insecure)
    with vsphere.session(endpoint) as s:
        records = vsphere.select(vsphere.list_vms(s), args.vm, endpoint.url)
    vms = [vsphere.to_vm(r, endpoint) for r in records]
    if args.json:
        print(json.dumps([{"vm": vm.model_dump(mode="json"), "vsphere": r.model_dump(mode="json")}
                          for vm, r in zip(vms, records)], indent=2))
        return 0
    console = Console()
    table = Table(title=f"{endpoint.url}: {len(vms)} VM(s)")
    for column in ("VM", "power", "guest", "fw", "cpu", "MiB", "disks", "nics", "concerns"):
        table.add_column(column)
    for vm, r in zip(vms, records):
        concerns = " ".join(f"[{_STYLE[c.severity]}]{c.id.removeprefix('vsphere.')}[/]" for c in vm.concerns)
        disks = ", ".join(f"{_size(d.capacity)} {d.mode}" for d in r.disks)
        table.add_row(escape(r.path), r.power_state.removeprefix("powered"), r.guest_id, r.firmware,
                      str(r.cpus), str(r.memory_mib), disks, str(len(r.nics)), concerns)
    console.print(table)
    for vm in vms:
        for c in vm.concerns:
            if c.severity is not Severity.info:
                console.print(f"[{_STYLE[c.severity]}]{c.severity.value}[/] {escape(vm.name)}: "
                              f"{escape(c.message)}. Remedy: {escape(c.remedy)}.", highlight=False)
    return 0


def _size(n: int) -> str:
    return f"{n / (1 << 30):.3g}G" if n >= 1 << 30 else f"{n / (1 << 20):.3g}M"
