"""The client certificate of an HTTPS connection in each request's ASGI scope, as the ASGI TLS extension
(``scope["extensions"]["tls"]``: ``client_cert_chain``, ``client_cert_name``, ``tls_version``…) puts it.

uvicorn verifies client certificates but does not pass them on; ``with_tls_scope(protocol)`` derives a
uvicorn HTTP protocol class that reads the certificate from the connection's ``ssl_object`` once, when
the connection is made, and adds it to the scope of every request on that connection. The collector's
HTTP receivers use it so an mTLS sender is named (``mtls:<name>``) as on gRPC.
"""

from __future__ import annotations

import asyncio
import ssl

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

#: RFC 4514 short names for the attributes Python's ssl module reports by long name
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "stateOrProvinceName": "ST", "localityName": "L", "domainComponent": "DC", "userId": "UID"}


class _TlsScope:
    """Mixin for a uvicorn HTTP protocol class: adds the ASGI TLS extension to each request's scope."""

    app: ASGIApp

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        tls = tls_extension(transport.get_extra_info("ssl_object"))
        if tls is not None:
            self.app = _scoped(self.app, tls)  # this connection's protocol instance only


def with_tls_scope(protocol: type | str | None) -> type:
    """``protocol`` (a uvicorn HTTP protocol class; a name or None means h11) with the TLS extension."""
    base = protocol if isinstance(protocol, type) else H11Protocol
    return type(f"Tls{base.__name__}", (_TlsScope, base), {})


def tls_extension(ssl_object: ssl.SSLObject | None) -> dict | None:
    """The ASGI TLS extension's fields for one connection (None when it is not TLS)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    peer = ssl_object.getpeercert() if der else None  # decoded only when the certificate was verified
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": rfc4514(peer.get("subject", ())) if peer else None,
        "client_cert_error": None,  # the handshake refuses a certificate that does not verify
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,  # Python's ssl names the suite but does not give its number
    }


def rfc4514(subject: tuple) -> str:
    """A subject as ``ssl.getpeercert()`` gives it (RDNs of (name, value) pairs), in RFC 4514 form."""
    rdns = ["+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn) for rdn in subject]
    return ",".join(reversed(rdns))


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out[:1] in ("#", " "):
        out = "\\" + out
    return out[:-1] + "\\ " if out.endswith(" ") else out


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _scoped(app: ASGIApp, tls: dict) -> ASGIApp:
    async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("extensions", {})["tls"] = tls  # type: ignore[index]
        await app(scope, receive, send)

    return with_tls
