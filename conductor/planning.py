"""From a config and sources to a Plan: read the sources, apply per-VM overrides, place each VM
on a live worker host (or the embedded host), and derive the fleet-wide caps."""
from __future__ import annotations

from conductor.config import Config
from conductor.driver import Driver, Limits
from conductor.hosts import live_hosts
from conductor.preflight import inspect_vms
from h2k_planner.concerns import check_space, local_facts, review
from h2k_planner.errors import InputError
from h2k_planner.models import VM, Concern, Output, Plan, Severity
from h2k_planner.placement import place
from h2k_planner.plan import make_plan
from h2k_planner.sources import load_sources
from h2k_planner.sources.vsphere import list_vms, select, session, to_vm
from h2k_tasks.state import State


def plan_wave(cfg: Config, sources: list[str], output_dir: str, state: State | None,
              allow: tuple[str, ...] = (), inspect: bool = False) -> Plan:
    """`allow`: directories outside a source's own that its descriptors may point into;
    `inspect`: look into the guests now (conductor/preflight.py) to add their concerns.
    Planning changes nothing on any source: a vSphere VM to shut down is shut down by its fetch."""
    if not sources:
        raise InputError(None, "no sources: name them on the command line or under sources: in the wave file")
    if cfg.output.compress and cfg.output.format != "qcow2":
        raise InputError(None, "--compress needs the qcow2 output format")
    output = Output(directory=output_dir, format=cfg.output.format, compress=cfg.output.compress)
    local = [s for s in sources if not s.startswith(VSPHERE)]
    remote, endpoints, shutdown = read_vcenters(cfg, [s for s in sources if s.startswith(VSPHERE)])
    vms = review((load_sources(local, allow) if local else []) + remote)
    unknown = sorted(set(cfg.vms) - {vm.name for vm in vms})
    if unknown:
        raise InputError(None, f"config names VMs that no source has: {', '.join(unknown)}")
    pinned = {name: o.host for name, o in cfg.vms.items() if o.host}
    live = live_hosts(state) if state else []
    hosts = place(vms, cfg.placement, live, pinned, output.directory)
    # the free space each host's worker reported; with none reported (no broker: the embedded
    # worker runs here), this machine's own
    facts = {h.name: h for h in live} or {host: local_facts(host, output.directory) for host in set(hosts.values())}
    vms = check_space(vms, output, hosts, facts)
    fixes = cfg.fixes.model_dump(include={"virtio_win", "firstboot_service_exe", "serial_console"})
    data_only = {name for name, o in cfg.vms.items() if not o.guest}
    if inspect:
        vms = inspect_vms(vms, fixes, data_only)
    boot = {vm.name: cfg.vms[vm.name].boot_test if vm.name in cfg.vms and cfg.vms[vm.name].boot_test is not None
            else cfg.fixes.boot_test for vm in vms}
    return make_plan(vms, output, hosts=hosts, no_guest=data_only,
                     name=cfg.name, fixes=fixes, boot_test=boot, boot_timeout=cfg.fixes.boot_timeout,
                     two_phase={name for name, o in cfg.vms.items() if o.two_phase_boot}, endpoints=endpoints,
                     shutdown=shutdown)


VSPHERE = "vsphere:"


def read_vcenters(cfg: Config, sources: list[str]) -> tuple[list[VM], dict[str, dict], dict[str, float]]:
    """VMs of `vsphere:ALIAS/PATTERN[,PATTERN...]` sources, each one's endpoint (a reference), and
    the powered-on VMs their fetch will shut down (vCenters with `shutdown: true`) with the timeout."""
    vms: list[VM] = []
    endpoints: dict[str, dict] = {}
    shutdown: dict[str, float] = {}
    for source in sources:
        alias, _, patterns = source[len(VSPHERE):].partition("/")
        if alias not in cfg.vcenters:
            raise InputError(None, f"{source}: no vCenter {alias!r} under vcenters: in the config")
        vcenter = cfg.vcenters[alias]
        endpoint = vcenter.endpoint()
        with session(endpoint) as s:
            records = select(list_vms(s), [p for p in patterns.split(",") if p], endpoint.url)
        for record in records:
            vm = to_vm(record, endpoint)
            if vcenter.shutdown and record.power_state == "poweredOn":
                vm = _shut_down_at_fetch(vm, vcenter.shutdown_timeout)
                shutdown[vm.name] = vcenter.shutdown_timeout
            vms.append(vm)
            endpoints[vm.name] = endpoint.model_dump(mode="json")
    return vms, endpoints, shutdown


def _shut_down_at_fetch(vm: VM, timeout: float) -> VM:
    """A powered-on VM the config says to shut down: not a Critical concern but a note of what will happen."""
    note = Concern(id="vsphere.shutdown", severity=Severity.info,
                   message=f"powered on: its fetch shuts it down first (guest shutdown, power-off after {timeout:.0f}s)",
                   remedy="none needed; a refused or cancelled wave leaves it running")
    return vm.model_copy(update={"concerns": [c for c in vm.concerns if c.id != "vsphere.powered-on"] + [note]})


def driver_for(cfg: Config, state: State, plan: Plan) -> Driver:
    """A scheduler for `plan` with the config's timings and the fleet-wide caps of the live hosts."""
    caps = Limits(per_source=cfg.limits.per_source, per_wave=cfg.limits.per_wave,
                  per_host={h.name: h.concurrency for h in live_hosts(state, count_queued=False)})
    return Driver(state, plan, cfg.conductor.poll_interval, caps, stall_after=cfg.conductor.stall_after)
