"""Where a vCenter/ESXi is and how to trust and log in to it: `vsphere://USER@HOST[:PORT]/DATACENTER`.

The password is a SecretRef; TLS is verified against the system store, a CA file, or a pinned
SHA-256 thumbprint of the server certificate, or not at all when `insecure` is set explicitly.
"""
from __future__ import annotations

import hashlib
import re
import ssl
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from h2k_planner.errors import InputError
from h2k_planner.secret_ref import SecretRef

DEFAULT_PASSWORD_ENV = "H2K_VSPHERE_PASSWORD"
_HEX64 = re.compile(r"^[0-9A-F]{64}$")


class ThumbprintMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(443, ge=1, le=65535)
    user: str
    datacenter: str = Field(description="inventory path of the datacenter, e.g. 'DC0' or 'Europe/DC1'")
    password: SecretRef
    ca_file: str | None = None
    thumbprint: str | None = Field(None, description="SHA-256 of the server certificate, AA:BB:.. form")
    insecure: bool = False

    @field_validator("thumbprint")
    @classmethod
    def _normalize_thumbprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").strip().upper()
        if not _HEX64.match(digits):
            raise ValueError("a thumbprint is the 64 hex digits of a SHA-256, colons allowed")
        return ":".join(digits[i:i + 2] for i in range(0, 64, 2))

    @model_validator(mode="after")
    def _one_trust_mode(self) -> "Endpoint":
        if sum([self.ca_file is not None, self.thumbprint is not None, self.insecure]) > 1:
            raise ValueError("choose at most one of ca_file, thumbprint and insecure")
        return self

    @property
    def url(self) -> str:
        """The endpoint as a URL, without any secret."""
        return f"vsphere://{quote(self.user, safe='')}@{self.netloc}/{quote(self.datacenter)}"

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context enforcing this endpoint's trust mode."""
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.thumbprint:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.sslsocket_class = _pinned_socket_class(self.thumbprint)
            return ctx
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(self.ca_file, f"cannot load the CA file: {exc}") from None


def parse_url(url: str, password: SecretRef | None = None, *, ca_file: str | None = None,
              thumbprint: str | None = None, insecure: bool = False) -> Endpoint:
    """Parse `vsphere://USER@HOST[:PORT]/DC`; the password reference defaults to $H2K_VSPHERE_PASSWORD."""
    parts = urlsplit(url)
    if parts.scheme != "vsphere" or not parts.hostname:
        raise InputError(url, "expected vsphere://USER@HOST[:PORT]/DATACENTER")
    if parts.password is not None:
        raise InputError(parts._replace(netloc=parts.netloc.split("@")[-1]).geturl(),
                         "a password does not belong in the URL: use a password file or environment variable")
    if not parts.username:
        raise InputError(url, "the URL names no user (vsphere://USER@HOST/DATACENTER)")
    datacenter = unquote(parts.path.strip("/"))
    if not datacenter:
        raise InputError(url, "the URL names no datacenter (vsphere://USER@HOST/DATACENTER)")
    try:
        port = parts.port or 443
        return Endpoint(host=parts.hostname, port=port, user=unquote(parts.username), datacenter=datacenter,
                        password=password or SecretRef(env=DEFAULT_PASSWORD_ENV),
                        ca_file=ca_file, thumbprint=thumbprint, insecure=insecure)
    except ValueError as exc:
        raise InputError(url, _first_error(exc)) from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return errors()[0]["msg"].removeprefix("Value error, ")
    return str(exc)


def sha256_thumbprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def _pinned_socket_class(thumbprint: str) -> type[ssl.SSLSocket]:
    expected = thumbprint.replace(":", "").upper()

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block=False):
            super().do_handshake(block)
            actual = sha256_thumbprint(self.getpeercert(binary_form=True))
            if actual.replace(":", "") != expected:
                raise ThumbprintMismatch(f"server certificate SHA-256 is {actual}, expected {thumbprint}")

    return PinnedSocket
