"""From a config and sources to a Plan: read the sources, apply per-VM overrides, place each VM
on a live worker host (or the embedded host), and derive the fleet-wide caps."""
from __future__ import annotations

from conductor.config import Config
from conductor.driver import Driver, Limits
from conductor.hosts import live_hosts
from conductor.preflight import inspect_vms
from conductor.vsphere_power import shut_down
from h2k_planner.concerns import review
from h2k_planner.errors import InputError
from h2k_planner.models import VM, Output, Plan
from h2k_planner.placement import place
from h2k_planner.plan import make_plan
from h2k_planner.sources import load_sources
from h2k_planner.sources.vsphere import list_vms, read_vsphere, select, session
from h2k_tasks.state import State


def plan_wave(cfg: Config, sources: list[str], output_dir: str, state: State | None,
              allow: tuple[str, ...] = (), inspect: bool = False, power_off: bool = False) -> Plan:
    """`allow`: directories outside a source's own that its descriptors may point into;
    `inspect`: look into the guests now (conductor/preflight.py) to add their concerns;
    `power_off`: shut down powered-on vSphere VMs whose vCenter config asks for it."""
    if not sources:
        raise InputError(None, "no sources: name them on the command line or under sources: in the wave file")
    if cfg.output.compress and cfg.output.format != "qcow2":
        raise InputError(None, "--compress needs the qcow2 output format")
    output = Output(directory=output_dir, format=cfg.output.format, compress=cfg.output.compress)
    local = [s for s in sources if not s.startswith(VSPHERE)]
    remote, endpoints = read_vcenters(cfg, [s for s in sources if s.startswith(VSPHERE)], power_off)
    vms = review((load_sources(local, allow) if local else []) + remote, output)
    unknown = sorted(set(cfg.vms) - {vm.name for vm in vms})
    if unknown:
        raise InputError(None, f"config names VMs that no source has: {', '.join(unknown)}")
    pinned = {name: o.host for name, o in cfg.vms.items() if o.host}
    hosts = place(vms, cfg.placement, live_hosts(state) if state else [], pinned)
    fixes = cfg.fixes.model_dump(include={"virtio_win", "firstboot_service_exe", "serial_console"})
    data_only = {name for name, o in cfg.vms.items() if not o.guest}
    if inspect:
        vms = inspect_vms(vms, fixes, data_only)
    boot = {vm.name: cfg.vms[vm.name].boot_test if vm.name in cfg.vms and cfg.vms[vm.name].boot_test is not None
            else cfg.fixes.boot_test for vm in vms}
    return make_plan(vms, output, hosts=hosts, no_guest=data_only,
                     name=cfg.name, fixes=fixes, boot_test=boot, boot_timeout=cfg.fixes.boot_timeout,
                     two_phase={name for name, o in cfg.vms.items() if o.two_phase_boot}, endpoints=endpoints)


VSPHERE = "vsphere:"


def read_vcenters(cfg: Config, sources: list[str], power_off: bool) -> tuple[list[VM], dict[str, dict]]:
    """VMs of `vsphere:ALIAS/PATTERN[,PATTERN...]` sources, and each one's endpoint (a reference)."""
    vms: list[VM] = []
    endpoints: dict[str, dict] = {}
    for source in sources:
        alias, _, patterns = source[len(VSPHERE):].partition("/")
        if alias not in cfg.vcenters:
            raise InputError(None, f"{source}: no vCenter {alias!r} under vcenters: in the config")
        endpoint = cfg.vcenters[alias].endpoint()
        wanted = [p for p in patterns.split(",") if p]
        if power_off and cfg.vcenters[alias].shutdown:
            with session(endpoint) as s:
                shut_down(s, select(list_vms(s), wanted, endpoint.url), cfg.vcenters[alias].shutdown_timeout)
        found = read_vsphere(endpoint, wanted)
        vms += found
        endpoints |= {vm.name: endpoint.model_dump(mode="json") for vm in found}
    return vms, endpoints


def driver_for(cfg: Config, state: State, plan: Plan) -> Driver:
    """A scheduler for `plan` with the config's timings and the fleet-wide caps of the live hosts."""
    caps = Limits(per_source=cfg.limits.per_source, per_wave=cfg.limits.per_wave,
                  per_host={h.name: h.concurrency for h in live_hosts(state, count_queued=False)})
    return Driver(state, plan, cfg.conductor.poll_interval, caps, stall_after=cfg.conductor.stall_after)
