"""A vSphere disk read in place from its datastore, as an NBD export, with no local copy.

`probe` (the fetch stage) reads the disk's VMDK header or descriptor with small Range requests and
records what the disk is made of: its files' identities (datastore path, size, Last-Modified) and
the one file to stream, as `vmdk` (a hosted sparse extent: monolithicSparse or streamOptimized,
alone or named by a descriptor) or `raw` (a flat extent: the file is the disk). Snapshot deltas,
several extents and other extent types are refused, naming the file and why.

`stream` (the convert stage) serves that file with `nbdkit curl`, which reads only the byte ranges
asked of it with HTTP Range (its `retry` filter reopens a cut transfer and asks again; its `log`
filter records every read, so the bytes taken from the datastore are counted; its `readahead`
filter turns runs of small sequential reads into fewer, larger requests). A `vmdk` file gets
`qemu-nbd -f vmdk` on top of that export: qemu reads the header and grain tables, then only the
allocated grains, and reports unallocated ones as holes, so the copier reads nothing else.

The session cookie goes to nbdkit as `cookie=+FILE`: a 0600 file in a 0700 scratch directory that is
removed as soon as nbdkit has read it; it is never an argument, a log line or a task field. A pinned
thumbprint becomes curl's `cainfo`: the certificate the thumbprint was checked against.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

from h2k_planner.errors import InputError
from h2k_planner.sources.vsphere_endpoint import Endpoint
from h2k_tasks import atomic, nbd
from h2k_tasks.datastore import Client, split_datastore_path
from h2k_tasks.stages import StageFailed

HEAD = 64 * 1024  # enough for a text descriptor, or a sparse header and its embedded descriptor
_DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
_SPARSE_MAGIC = b"KDMV"
_EXTENT = re.compile(r'^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+(?P<kind>\w+)'
                     r'(?:\s+"(?P<file>[^"]*)")?(?:\s+(?P<offset>\d+))?', re.M)
_NO_PARENT = "ffffffff"
_READ = re.compile(r" Read id=\d+ offset=0x[0-9a-f]+ count=0x(?P<count>[0-9a-f]+) ")


def descriptor_extents(text: str) -> list[tuple[str, str | None, int]]:
    """(kind, file, offset) of each extent a VMDK text descriptor lists (ZERO extents have no file)."""
    return [(m["kind"].upper(), m["file"], int(m["offset"] or 0)) for m in _EXTENT.finditer(text)]


def _descriptor_value(text: str, key: str) -> str | None:
    m = re.search(rf'^\s*{key}\s*=\s*"?([^"\n]*)"?\s*$', text, re.M)
    return m[1].strip() if m else None


def _refuse_delta(where: str, text: str) -> None:
    parent = (_descriptor_value(text, "parentCID") or _NO_PARENT).lower()
    if parent != _NO_PARENT or _descriptor_value(text, "parentFileNameHint"):
        raise StageFailed(f"{where}: a snapshot delta (its descriptor names a parent): snapshot chains are not "
                          "streamed; consolidate or delete the VM's snapshots first")


def _embedded_descriptor(head: bytes) -> str:
    """The text descriptor a hosted sparse extent carries (after its header), "" if none."""
    offset, size = struct.unpack_from("<QQ", head, 28)
    start, end = offset * 512, (offset + size) * 512
    return head[start:min(end, len(head))].split(b"\0", 1)[0].decode("utf-8", "replace") if offset else ""


def _extent_path(folder: str, name: str | None, where: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise StageFailed(f"{where}: descriptor extent {name!r} is not a plain file name in the disk's folder")
    return f"{folder}/{name}" if folder not in ("", ".") else name


def probe(endpoint: dict, datastore_path: str, chain: list[str], virtual_size: int) -> dict:
    """What the disk at `datastore_path` is made of (see the module docstring), after checking the
    datastore honours Range."""
    where = f"{Endpoint.model_validate(endpoint).url} {datastore_path}"
    if len(chain) > 1:
        raise StageFailed(f"{where}: a snapshot chain of {len(chain)} files: snapshot chains are not streamed; "
                          "consolidate or delete the VM's snapshots first")
    datastore, path = split_datastore_path(datastore_path)
    try:
        with Client(Endpoint.model_validate(endpoint), datastore) as client:
            top = client.stat(path)
            head = client.read(path, 0, min(HEAD, top["size"]))
            if head.startswith(_SPARSE_MAGIC):
                _refuse_delta(where, _embedded_descriptor(head))
                return {"files": [top], "stream": {"path": top["path"], "format": "vmdk"}}
            if not head.startswith(_DESCRIPTOR_MAGIC):
                raise StageFailed(f"{where}: neither a VMDK descriptor nor a hosted sparse VMDK")
            text = head.decode("utf-8", "replace")
            _refuse_delta(where, text)
            extents = descriptor_extents(text)
            if len(extents) != 1:
                raise StageFailed(f"{where}: {len(extents)} extents: only single-extent disks are streamed")
            kind, name, offset = extents[0]
            extent = client.stat(_extent_path(os.path.dirname(path), name, where))
            if kind in ("FLAT", "VMFS") and offset == 0:
                if extent["size"] < virtual_size:
                    raise StageFailed(f"{where}: the flat extent {extent['path']} holds {extent['size']} bytes, "
                                      f"the disk {virtual_size}")
                return {"files": [top, extent], "stream": {"path": extent["path"], "format": "raw"}}
            if kind == "SPARSE":
                return {"files": [top, extent], "stream": {"path": extent["path"], "format": "vmdk"}}
            raise StageFailed(f"{where}: a {kind} extent{f' at offset {offset}' if offset else ''} is not streamed "
                              "(flat and hosted sparse extents are)")
    except InputError as e:
        raise StageFailed(str(e)) from None


def _first_change(client: Client, files: list[dict]) -> str | None:
    """How the first of `files` (as `probe` recorded them, all in the client's datastore: a disk's
    extents sit in its descriptor's folder) differs on the datastore now; None if none does."""
    for f in files:
        now = client.stat(split_datastore_path(f["path"])[1])
        if now != f:
            return (f"{f['path']}: changed on the datastore since fetch (size {f['size']} -> {now['size']}, "
                    f"modified {f['modified']!r} -> {now['modified']!r})")
    return None


def unchanged(endpoint: dict, fetched: dict) -> bool:
    """The files `probe` recorded are still on the datastore, same size and Last-Modified."""
    files = fetched.get("files") or []
    if not files:
        return False
    try:
        with Client(Endpoint.model_validate(endpoint), split_datastore_path(files[0]["path"])[0]) as client:
            return _first_change(client, files) is None
    except (InputError, OSError):
        return False


@dataclass
class Stream:
    """An export of the disk's guest-visible content; `transferred`: bytes read from the datastore
    so far (final once the stream has ended)."""
    address: str
    log: str
    transferred: int = 0

    def count(self) -> int:
        try:
            with open(self.log, errors="replace") as f:
                self.transferred = sum(int(m["count"], 16) for m in _READ.finditer(f.read()))
        except FileNotFoundError:
            pass
        return self.transferred


def _private(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def nbdkit_curl(url: str, cookie_file: str, log: str, endpoint: Endpoint, cainfo: str | None) -> list[str]:
    """The command serving the file at `url`, read-only, resuming cut transfers, reading ahead on
    sequential runs, and logging each read it makes of the file."""
    if endpoint.insecure:
        tls = ["sslverify=false"]
    else:
        tls = [f"cainfo={cainfo}"] if cainfo else []
    return ["nbdkit", "--foreground", "--readonly", "--filter=readahead", "--filter=retry", "--filter=log", "curl",
            f"url={url}", f"cookie=+{cookie_file}", *tls, "protocols=https", "timeout=60", "followlocation=false",
            "retries=5", "retry-delay=1", f"logfile={log}"]


@contextmanager
def stream(endpoint: dict, fetched: dict, scratch: str) -> Iterator[Stream]:
    """Serve the disk `probe` described in `fetched`; its files must be unchanged since. `scratch`:
    a directory of this attempt's own, created here (0700) and removed on the way out."""
    ep = Endpoint.model_validate(endpoint)
    source = fetched["stream"]
    datastore, path = split_datastore_path(source["path"])
    shutil.rmtree(scratch, ignore_errors=True)  # a killed try of this same attempt
    os.makedirs(scratch, mode=0o700)
    try:
        with ExitStack() as stack:
            try:
                client = stack.enter_context(Client(ep, datastore))
                if why := _first_change(client, fetched["files"]):
                    raise StageFailed(f"{ep.url} {why}")
                client.read(path, 1, 1)  # Range honoured: a 200 would make nbdkit return wrong bytes
            except InputError as e:
                raise StageFailed(str(e)) from None
            cookie = _private(os.path.join(scratch, "cookie"), client.cookie)
            cainfo = ep.ca_file
            if ep.thumbprint:
                cainfo = _private(os.path.join(scratch, "server.pem"), client.peer_pem)
            log = os.path.join(scratch, "reads.log")
            s = Stream("", log)
            cmd = nbdkit_curl(client.url(path), cookie, log, ep, cainfo)
            stack.callback(s.count)
            try:
                s.address = stack.enter_context(nbd.serve(cmd))
                os.unlink(cookie)  # nbdkit read it when it started
                if source["format"] != "raw":
                    s.address = stack.enter_context(nbd.serve(nbd.qemu_nbd_over(s.address, source["format"])))
            except nbd.ServerFailed as e:
                raise StageFailed(f"{ep.url} {source['path']}: cannot stream the disk: {e.tail}") from None
            yield s
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def scratch_dir(vm_dir: str, name: str, gen: int) -> str:
    """Attempt `gen`'s scratch directory for stream `name` in `vm_dir`; those of dead attempts (a
    worker killed mid-stream) are removed."""
    prefix = f".{name}.stream-g"
    for old in atomic.dead_attempts(vm_dir, prefix, gen):
        shutil.rmtree(old, ignore_errors=True)
    return os.path.join(vm_dir, f"{prefix}{gen}")
