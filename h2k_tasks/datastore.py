"""A vSphere datastore's HTTPS file interface (`/folder/<path>?dcPath=..&dsName=..`), as the fetch
and the stream of a disk use it: what a file is (size and modification time, from HEAD), a few bytes
of it (a ranged GET, small reads only: descriptors and headers), and whether the server honours
HTTP Range at all. Requests carry the SOAP session's cookie; an expired session is logged in again
once. Errors name the endpoint, the datastore file and the problem."""
from __future__ import annotations

import http.client
import re
import ssl
from urllib.parse import quote, urlencode

from h2k_planner.errors import InputError
from h2k_planner.sources import vsphere
from h2k_planner.sources.vsphere_endpoint import Endpoint

_DATASTORE_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>\S.*)$")


def split_datastore_path(path: str) -> tuple[str, str]:
    """'[ds] dir/file.vmdk' -> ('ds', 'dir/file.vmdk')."""
    match = _DATASTORE_PATH.match(path.strip())
    if not match:
        raise InputError(path, "not a datastore path of the form '[datastore] dir/file.vmdk'")
    return match["ds"], match["path"]


class Client:
    """One datastore's files over one session; `with` logs in and out."""

    def __init__(self, endpoint: Endpoint, datastore: str):
        self.endpoint = endpoint
        self.datastore = datastore
        self.context = endpoint.ssl_context()
        self.session: vsphere.Session | None = None
        self.conn: http.client.HTTPSConnection | None = None
        self.peer_pem: str | None = None  # the server certificate this client trusted, PEM

    def __enter__(self) -> "Client":
        self.session = vsphere.connect(self.endpoint)
        return self

    def __exit__(self, *exc) -> None:
        if self.conn:
            self.conn.close()
        if self.session:
            self.session.close()

    @property
    def cookie(self) -> str:
        """The `Cookie:` value the datastore accepted last: for a file only, never an argument."""
        return self.session.cookie

    def where(self, path: str) -> str:
        return f"{self.endpoint.url} [{self.datastore}] {path}"

    def url(self, path: str) -> str:
        """The file's HTTPS URL (no secret in it)."""
        return f"https://{self.endpoint.netloc}{self._target(path)}"

    def _target(self, path: str) -> str:
        return f"/folder/{quote(path)}?{urlencode({'dcPath': self.endpoint.datacenter, 'dsName': self.datastore})}"

    def _request(self, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.endpoint.host, self.endpoint.port,
                                                        context=self.context, timeout=60)
            try:
                self.conn.request(method, self._target(path), headers={"Cookie": self.cookie, **headers})
                if self.peer_pem is None:
                    self.peer_pem = ssl.DER_cert_to_PEM_cert(self.conn.sock.getpeercert(binary_form=True))
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

    def stat(self, path: str) -> dict:
        """The file's identity: its datastore path, size and Last-Modified, from a HEAD request."""
        response = self._request("HEAD", path, {})
        response.read()
        if response.status == 404:
            raise InputError(self.where(path), "no such file on the datastore")
        length = response.getheader("Content-Length")
        if response.status != 200 or length is None:
            raise InputError(self.where(path), f"cannot size the file (HTTP {response.status})")
        return {"path": f"[{self.datastore}] {path}", "size": int(length),
                "modified": response.getheader("Last-Modified") or ""}

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Bytes offset..offset+length-1 of the file (fewer at its end), by a ranged GET; a server
        that answers with anything but that range is refused."""
        response = self._request("GET", path, {"Range": f"bytes={offset}-{offset + length - 1}"})
        if response.status == 200:
            response.close()
            self.conn.close()
            self.conn = None
            raise InputError(self.where(path), "the datastore server ignores HTTP Range (it answered a ranged "
                                               "request with the whole file, HTTP 200): refusing to stream the disk")
        body = response.read()
        if response.status != 206:
            raise InputError(self.where(path), f"ranged read failed (HTTP {response.status})")
        if not (response.getheader("Content-Range") or "").startswith(f"bytes {offset}-"):
            raise InputError(self.where(path), "the server answered a different range than asked")
        return body
