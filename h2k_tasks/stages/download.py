"""Download a vSphere disk (its VMDK descriptor, then every extent it names) from the datastore's
HTTPS file interface, resuming after a cut with HTTP Range.

Each file grows as `<name>.part`; a finished file is size-checked, fsynced and renamed into place,
so a finished name is always a whole file and a `.part` is always a prefix that a re-run continues.
"""
from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlencode

from h2k_planner.errors import InputError
from h2k_planner.sources import vsphere
from h2k_planner.sources.vsphere_endpoint import Endpoint

Progress = Callable[[int, int], None]
CancelCheck = Callable[[], bool]

CHUNK = 1 << 20
RETRIES = 5
_DATASTORE_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>\S.*)$")
_EXTENT = re.compile(r'^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+(?P<kind>\w+)(?:\s+"(?P<file>[^"]+)")?', re.M)
_DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
_TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead,
              http.client.RemoteDisconnected, http.client.BadStatusLine, ssl.SSLEOFError, ssl.SSLZeroReturnError)


class Cancelled(Exception):
    """The cancel check said stop; the `.part` files stay for a later resume."""


def split_datastore_path(path: str) -> tuple[str, str]:
    """'[ds] dir/file.vmdk' -> ('ds', 'dir/file.vmdk')."""
    match = _DATASTORE_PATH.match(path.strip())
    if not match:
        raise InputError(path, "not a datastore path of the form '[datastore] dir/file.vmdk'")
    return match["ds"], match["path"]


def descriptor_extents(text: str) -> list[str]:
    """File names of the extents a VMDK text descriptor lists (ZERO extents have none)."""
    return [m["file"] for m in _EXTENT.finditer(text) if m["file"]]


def download_disk(endpoint: Endpoint, datastore_path: str, dest_dir: str | os.PathLike, *,
                  progress: Progress | None = None, cancelled: CancelCheck | None = None) -> list[Path]:
    """Fetch the disk at `datastore_path` and its extents into `dest_dir`, descriptor first.

    Logs in with its own session. `progress(done, total)` counts bytes over the disk's files (the
    total grows once the descriptor has named the extents); `cancelled()` is asked between chunks
    and a True raises Cancelled. Files already complete are not fetched again.
    """
    datastore, path = split_datastore_path(datastore_path)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda done, total: None)
    with _DatastoreClient(endpoint, datastore) as client:
        top = dest / Path(path).name
        sizes = [client.size(path)]
        _fetch(client, path, top, sizes[0], lambda n: report(n, sum(sizes)), cancelled)
        files = [top]
        if _is_descriptor(top):
            folder = str(Path(path).parent)
            extents = [_extent_path(folder, name, datastore_path) for name in
                       descriptor_extents(top.read_text(encoding="utf-8", errors="replace"))]
            sizes += [client.size(extent) for extent in extents]
            for i, extent in enumerate(extents, start=1):
                local, before = dest / Path(extent).name, sum(sizes[:i])
                _fetch(client, extent, local, sizes[i], lambda n: report(before + n, sum(sizes)), cancelled)
                files.append(local)
    return files


def _extent_path(folder: str, name: str, where: str) -> str:
    if "/" in name or name in ("", ".", ".."):
        raise InputError(where, f"descriptor extent {name!r} is not a plain file name in the disk's folder")
    return f"{folder}/{name}" if folder not in ("", ".") else name


def _is_descriptor(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_DESCRIPTOR_MAGIC)) == _DESCRIPTOR_MAGIC


def _fetch(client: "_DatastoreClient", path: str, local: Path, total: int,
           progress: Callable[[int], None], cancelled: CancelCheck | None) -> None:
    """Bring `local` to the remote file's `total` size via `<local>.part`, resuming after cuts."""
    if local.exists() and local.stat().st_size == total:
        progress(total)
        return
    part = local.with_name(local.name + ".part")
    for attempt in range(RETRIES + 1):
        have = part.stat().st_size if part.exists() else 0
        if have > total:
            part.unlink()
            have = 0
        try:
            if have < total or not part.exists():
                client.get_into(path, part, have, total, progress, cancelled)
            break
        except _TRANSIENT:
            if attempt == RETRIES:
                raise InputError(client.where(path), f"the connection kept dropping ({RETRIES} resumes)") from None
            time.sleep(min(2 ** attempt * 0.2, 5))
            client.reconnect()
    size = part.stat().st_size
    if size != total:
        raise InputError(client.where(path), f"downloaded {size} bytes, the datastore lists {total}")
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, local)
    dir_fd = os.open(local.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _DatastoreClient:
    """HTTPS GETs on `/folder/<path>?dcPath=..&dsName=..` carrying a SOAP session cookie."""

    def __init__(self, endpoint: Endpoint, datastore: str):
        self.endpoint = endpoint
        self.datastore = datastore
        self.context = endpoint.ssl_context()
        self.session: vsphere.Session | None = None
        self.conn: http.client.HTTPSConnection | None = None

    def __enter__(self) -> "_DatastoreClient":
        self.session = vsphere.connect(self.endpoint)
        return self

    def __exit__(self, *exc) -> None:
        if self.conn:
            self.conn.close()
        if self.session:
            self.session.close()

    def where(self, path: str) -> str:
        return f"{self.endpoint.url} [{self.datastore}] {path}"

    def reconnect(self) -> None:
        if self.conn:
            self.conn.close()
        self.conn = None

    def _request(self, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        query = urlencode({"dcPath": self.endpoint.datacenter, "dsName": self.datastore})
        url = f"/folder/{quote(path)}?{query}"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.endpoint.host, self.endpoint.port,
                                                        context=self.context, timeout=60)
            try:
                self.conn.request(method, url, headers={"Cookie": self.session.cookie, **headers})
                response = self.conn.getresponse()
            except ssl.SSLCertVerificationError as exc:
                raise InputError(self.endpoint.url, f"TLS verification failed: {exc.args[0]}") from None
            if response.status not in (401, 403):
                return response
            response.read()
            if attempt == 0:  # the session expired: log in again once
                self.session.close()
                self.session = vsphere.connect(self.endpoint)
        raise InputError(self.where(path), f"the datastore refused access (HTTP {response.status})")

    def size(self, path: str) -> int:
        """The remote file's size, from a HEAD request."""
        response = self._request("HEAD", path, {})
        response.read()
        if response.status == 404:
            raise InputError(self.where(path), "no such file on the datastore")
        length = response.getheader("Content-Length")
        if response.status != 200 or length is None:
            raise InputError(self.where(path), f"cannot size the file (HTTP {response.status})")
        return int(length)

    def get_into(self, path: str, part: Path, offset: int, total: int, progress: Callable[[int], None],
                 cancelled: CancelCheck | None) -> None:
        """Append bytes offset..total-1 of the remote file to `part`."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._request("GET", path, headers)
        if offset and response.status == 200:
            offset = 0  # the server ignored Range: start over rather than append a second copy
        elif response.status not in (200, 206):
            response.read()
            raise InputError(self.where(path), f"download failed (HTTP {response.status})")
        elif response.status == 206 and not (response.getheader("Content-Range") or "").startswith(
                f"bytes {offset}-"):
            raise InputError(self.where(path), "the server answered a different range than asked")
        done = offset
        with open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            while done < total:
                if cancelled and cancelled():
                    self.reconnect()
                    raise Cancelled(self.where(path))
                chunk = response.read(min(CHUNK, total - done))
                if not chunk:
                    raise http.client.IncompleteRead(b"", total - done)
                out.write(chunk)
                done += len(chunk)
                progress(done)
        response.read()
