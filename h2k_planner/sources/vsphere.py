"""vSphere as a source: log in, list every VM of a datacenter in one PropertyCollector round trip,
select by name, folder or glob, and map each to h2k_planner.models.VM with its preflight concerns.
"""
from __future__ import annotations

import fnmatch
import http.client
import socket
import ssl
from contextlib import contextmanager
from http.cookies import SimpleCookie
from typing import Iterator

from pyVim.connect import SmartStubAdapter
from pyVmomi import SoapStubAdapter, vim, vmodl

from h2k_planner.errors import InputError
from h2k_planner.models import VM, Disk, Firmware, Nic
from h2k_planner.sources.vsphere_concerns import concerns
from h2k_planner.sources.vsphere_endpoint import Endpoint, ThumbprintMismatch
from h2k_planner.sources.vsphere_records import VM_PROPERTIES, VsphereVM, decode_vm

_TIMEOUT = 60


class Session:
    """A logged-in SOAP session; `cookie` is what the datastore HTTP interface accepts."""

    def __init__(self, endpoint: Endpoint, stub: SoapStubAdapter, content: vim.ServiceInstanceContent):
        self.endpoint = endpoint
        self.stub = stub
        self.content = content

    @property
    def cookie(self) -> str:
        """The `Cookie:` header value carrying this session."""
        morsel = SimpleCookie(self.stub.cookie).get("vmware_soap_session")
        return f'vmware_soap_session="{morsel.value}"' if morsel else ""

    def close(self) -> None:
        try:
            self.content.sessionManager.Logout()
        except Exception:  # noqa: BLE001 - the session may already be gone; nothing to release then
            pass


def connect(endpoint: Endpoint) -> Session:
    """Log in with the endpoint's SecretRef, resolved here and nowhere else."""
    with _errors(endpoint):
        stub = SmartStubAdapter(host=endpoint.host, port=endpoint.port, path="/sdk",
                                sslContext=endpoint.ssl_context(), httpConnectionTimeout=_TIMEOUT)
        content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
        content.sessionManager.Login(endpoint.user, endpoint.password.resolve(), None)
        return Session(endpoint, stub, content)


@contextmanager
def session(endpoint: Endpoint) -> Iterator[Session]:
    s = connect(endpoint)
    try:
        yield s
    finally:
        s.close()


def list_vms(s: Session) -> list[VsphereVM]:
    """Every VM of the endpoint's datacenter, from one RetrievePropertiesEx over a ContainerView."""
    endpoint = s.endpoint
    with _errors(endpoint):
        dc = s.content.searchIndex.FindByInventoryPath(endpoint.datacenter)
        if not isinstance(dc, vim.Datacenter):
            raise InputError(endpoint.url, f"no datacenter at inventory path {endpoint.datacenter!r}")
        view = s.content.viewManager.CreateContainerView(
            dc, [vim.VirtualMachine, vim.Folder, vim.dvs.DistributedVirtualPortgroup, vim.HostSystem], True)
        try:
            objects = _retrieve(s.content.propertyCollector, view)
        finally:
            view.DestroyView()
    names: dict[str, tuple[str, str | None]] = {}
    portgroups: dict[str, str] = {}
    hosts: dict[str, str] = {}
    vms: list[tuple[str, dict]] = []
    for obj in objects:
        props = {p.name: p.val for p in obj.propSet}
        if isinstance(obj.obj, vim.Folder):
            parent = props.get("parent")
            names[obj.obj._moId] = (props["name"], parent._moId if isinstance(parent, vim.Folder) else None)
        elif isinstance(obj.obj, vim.dvs.DistributedVirtualPortgroup):
            portgroups[props["key"]] = props["name"]
        elif isinstance(obj.obj, vim.HostSystem):
            hosts[obj.obj._moId] = props["name"]
        else:
            vms.append((obj.obj._moId, props))
    folders = {moref: _folder_path(moref, names) for moref in names}
    return sorted((decode_vm(moref, props, folders, portgroups, hosts) for moref, props in vms),
                  key=lambda vm: (vm.folder, vm.name))


def select(vms: list[VsphereVM], patterns: list[str], where: str) -> list[VsphereVM]:
    """VMs whose name, folder (`folder/`) or path (`folder/name`) matches any glob; all when none given.

    A pattern that matches no VM is an InputError: a typo must not silently shrink a wave.
    """
    if not patterns:
        return list(vms)
    chosen: dict[str, VsphereVM] = {}
    for pattern in patterns:
        hits = [vm for vm in vms if _matches(vm, pattern)]
        if not hits:
            raise InputError(where, f"no VM matches {pattern!r}")
        chosen.update((vm.moref, vm) for vm in hits)
    return [vm for vm in vms if vm.moref in chosen]


def to_vm(record: VsphereVM, endpoint: Endpoint) -> VM:
    """The planner's VM for a vSphere VM; Disk.source is the '[datastore] path.vmdk' of each disk."""
    return VM(
        name=record.name,
        firmware=Firmware.efi if record.firmware == "efi" else Firmware.bios,
        secure_boot=record.secure_boot,
        guest_os=record.guest_id,
        cpus=record.cpus,
        memory_mib=record.memory_mib,
        uuid=record.uuid,
        disks=[Disk(source=d.file, format="vmdk", virtual_size=d.capacity, chain=d.chain,
                    bus=d.bus if d.bus in ("scsi", "sata", "ide", "nvme") else "unknown",
                    controller=d.controller, unit=d.unit, index=i)
               for i, d in enumerate(record.disks)],
        nics=[Nic(mac=n.mac, model=n.type, network=n.network, name=n.label) for n in record.nics],
        boot_order=record.boot_disks,
        source=f"{endpoint.url}?moref={record.moref}",
        source_kind="vsphere",
        source_host=f"esx:{record.esx_host}" if record.esx_host else None,
        concerns=concerns(record),
    )


def read_vsphere(endpoint: Endpoint, patterns: list[str] = ()) -> list[VM]:
    """Log in, list, select and map: the VMs of the endpoint's datacenter matching `patterns`."""
    with session(endpoint) as s:
        records = select(list_vms(s), list(patterns), endpoint.url)
    return [to_vm(r, endpoint) for r in records]


def _retrieve(pc: vmodl.query.PropertyCollector, view: vim.view.ContainerView) -> list:
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
            obj=view, skip=True,
            selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)])],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PROPERTIES),
            vmodl.query.PropertyCollector.PropertySpec(type=vim.Folder, pathSet=["name", "parent"]),
            vmodl.query.PropertyCollector.PropertySpec(type=vim.dvs.DistributedVirtualPortgroup,
                                                       pathSet=["name", "key"]),
            vmodl.query.PropertyCollector.PropertySpec(type=vim.HostSystem, pathSet=["name"]),
        ])
    result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    objects = []
    while result is not None:
        objects.extend(result.objects)
        result = pc.ContinueRetrievePropertiesEx(result.token) if result.token else None
    return objects


def _folder_path(moref: str, names: dict[str, tuple[str, str | None]]) -> str:
    """Path below the datacenter's top folder ('vm'), which itself is left out."""
    parts: list[str] = []
    while moref in names:
        name, parent = names[moref]
        if parent is None:
            break
        parts.append(name)
        moref = parent
    return "/".join(reversed(parts))


def _matches(vm: VsphereVM, pattern: str) -> bool:
    if pattern.endswith("/"):
        folder = pattern.strip("/")
        return fnmatch.fnmatchcase(vm.folder, folder) or fnmatch.fnmatchcase(vm.folder, folder + "/*")
    target = vm.path if "/" in pattern else vm.name
    return fnmatch.fnmatchcase(target, pattern.lstrip("/"))


@contextmanager
def _errors(endpoint: Endpoint) -> Iterator[None]:
    """Turn every login, TLS, network and vSphere fault into a one-line InputError."""
    where = endpoint.url
    try:
        yield
    except InputError:
        raise
    except vim.fault.InvalidLogin:
        raise InputError(where, "login refused: wrong user or password") from None
    except vim.fault.NotAuthenticated:
        raise InputError(where, "the vSphere session expired or was closed; run again to log in anew") from None
    except ThumbprintMismatch as exc:
        raise InputError(where, f"TLS thumbprint mismatch: {exc.args[0]}") from None
    except ssl.SSLCertVerificationError as exc:
        raise InputError(where, f"TLS certificate not trusted ({exc.verify_message}): "
                                "pass --ca-file, --thumbprint or --insecure") from None
    except (ssl.SSLError, socket.timeout, ConnectionError, http.client.HTTPException, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        raise InputError(where, f"cannot reach {endpoint.host}:{endpoint.port}: {reason}") from None
    except vmodl.MethodFault as exc:
        raise InputError(where, f"vSphere refused: {exc.msg or type(exc).__name__}") from None
