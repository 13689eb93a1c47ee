"""What a user narrows a capture to (``--host --port --protocol --status --request-id`` on the command
line, the same query parameters on the API): one filter, applied to exchanges and to the flows that
carry them, with the meanings Wireshark users expect — a host or port matches either end."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshscope.errors import UserError
from meshscope.model import Flow, normalize_request_id

PROTOCOLS = ("http", "h2", "grpc", "tls", "quic", "dns")
_STATUS = re.compile(r"^([1-5])(?:xx|[0-9]{2})$", re.I)


class FilterError(UserError):
    """A filter value that means nothing (an unknown protocol, a status like "6xx")."""


def protocol_of(ex: Any) -> str:
    """What an exchange speaks, in the filter's words: http (HTTP/1), h2, grpc, tls, quic or dns."""
    kind = ex.exchange_type
    proto = getattr(ex, "protocol", None)
    if kind == "http" and proto is None and getattr(ex, "grpc", None) is None:
        return "http"  # the common case first: the overview asks this of every exchange
    if kind == "dns" or proto == "dns":
        return "dns"
    if getattr(ex, "quic", None) is not None or proto == "quic":  # a QUIC Initial's hello
        return "quic"
    if proto == "grpc" or getattr(ex, "grpc", None) is not None:
        return "grpc"
    if proto in ("h2", "h2c", "http2"):
        return "h2"
    return "tls" if kind == "tls" else "http"


def names_of(ex: Any) -> set[str]:
    """The names an exchange goes by, lower-cased: its Host (without port), SNI, and a DNS lookup's
    names (as asked, and each name its search path tried)."""
    out = set()
    host = (getattr(ex, "host", None) or "").strip().lower()
    if host.startswith("["):  # [v6]:port
        out.add(host[1:].split("]", 1)[0])
    elif host:
        out.add(host.split(":", 1)[0] if host.count(":") == 1 else host)
    if getattr(ex, "sni", None):
        out.add(ex.sni.lower())
    dns = getattr(ex, "dns", None)
    if dns is not None:
        names = [dns.name, dns.lookup or ""] + [a.name for a in dns.attempts]
        out.update(n.rstrip(".").lower() for n in names if n)
    return out


def failure_of(ex: Any) -> str | None:
    """Why an exchange failed, or None: an HTTP 5xx/4xx, a gRPC status other than OK, a DNS lookup's
    last rcode other than NOERROR, or no answer at all."""
    status = getattr(ex, "status", None)
    call = getattr(ex, "grpc", None)
    if call is not None and call.status and call.status != "OK":
        return call.status
    if isinstance(status, int) and status >= 400:
        return f"{status // 100}xx"
    dns = getattr(ex, "dns", None)
    if dns is not None:
        if dns.rcode is None:
            return "no answer"
        if dns.rcode.upper() != "NOERROR":
            return dns.rcode.upper()
    return None


def _rcodes(ex: Any) -> set[str]:
    """A DNS lookup's rcodes: its last answer's and those its search-path attempts got."""
    dns = getattr(ex, "dns", None)
    if dns is None:
        return set()
    return {r.upper() for r in [dns.rcode] + [a.rcode for a in dns.attempts] if r}


@dataclass(frozen=True, slots=True)
class ExchangeFilter:
    """Host (an IP, a CIDR block, or a Host/SNI/query name), port, protocol, status ("5xx", "404", a
    gRPC status or DNS rcode by name; several with commas) and request id (x-request-id, or its
    beginning). Every given field must match; an empty filter matches everything."""

    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    status: str | None = None
    request_id: str | None = None

    @classmethod
    def parse(cls, host: str | None = None, port: int | str | None = None, protocol: str | None = None,
              status: str | None = None, request_id: str | None = None) -> ExchangeFilter:
        """A filter from what a person typed; FilterError (a UserError) says what is wrong."""
        if port is not None and port != "":
            try:
                port = int(port)
            except ValueError:
                raise FilterError(f"port {port!r} is not a number") from None
            if not 0 < port < 65536:
                raise FilterError(f"port {port} is out of range (1-65535)")
        else:
            port = None
        if protocol:
            protocol = protocol.strip().lower()
            protocol = {"http1": "http", "http2": "h2", "h2c": "h2", "http3": "quic"}.get(protocol, protocol)
            if protocol not in PROTOCOLS:
                raise FilterError(f"protocol {protocol!r} is none of {', '.join(PROTOCOLS)}")
        if status:
            for part in status.split(","):
                part = part.strip()
                if not (_STATUS.match(part) or re.fullmatch(r"[A-Za-z_]+", part)):
                    raise FilterError(f"status {part!r} is not like 5xx, 404, UNAVAILABLE or NXDOMAIN")
        if host:
            host = host.strip().lower()
            if "/" in host:
                try:
                    ipaddress.ip_network(host, strict=False)
                except ValueError:
                    raise FilterError(f"host {host!r} is not an address block") from None
        return cls(host=host or None, port=port, protocol=protocol or None, status=status or None,
                   request_id=(request_id or "").strip() or None)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.host, self.port, self.protocol, self.status, self.request_id))

    def describe(self) -> str:
        """The filter as the output names it: "host 10.0.0.1, status 5xx"."""
        parts = [(k.replace("_", "-"), v) for k, v in (("host", self.host), ("port", self.port),
                 ("protocol", self.protocol), ("status", self.status), ("request_id", self.request_id))]
        return ", ".join(f"{k} {v}" for k, v in parts if v is not None)

    def matches(self, ex: Any) -> bool:
        """Whether an exchange (an Exchange, or the facts the graphs keep of one) passes the filter."""
        c = ex.conn
        if self.port is not None and self.port not in (c.sport, c.dport):
            return False
        if self.protocol is not None:
            proto = protocol_of(ex)
            if proto != self.protocol and not (self.protocol == "h2" and proto == "grpc"):
                return False  # gRPC rides HTTP/2: an h2 filter shows it, as Wireshark's http2 does
        if self.host is not None and not self._host_matches(ex):
            return False
        if self.status is not None and not self._status_matches(ex):
            return False
        if self.request_id is not None:
            rid = normalize_request_id(ex.headers.get("x-request-id")) if ex.headers else None
            want = normalize_request_id(self.request_id) or ""
            if not rid or not rid.startswith(want):
                return False
        return True

    def _host_matches(self, ex: Any) -> bool:
        c, want = ex.conn, self.host or ""
        if "/" in want:
            net = ipaddress.ip_network(want, strict=False)
            for addr in (c.src, c.dst):
                try:
                    if ipaddress.ip_address(addr) in net:
                        return True
                except ValueError:
                    continue
            return False
        return want in (c.src.lower(), c.dst.lower()) or want in names_of(ex)

    def _status_matches(self, ex: Any) -> bool:
        status = getattr(ex, "status", None)
        call = getattr(ex, "grpc", None)
        names = _rcodes(ex) | ({call.status.upper()} if call is not None and call.status else set())
        for part in (p.strip() for p in (self.status or "").split(",")):
            m = _STATUS.match(part)
            if m is None:
                if part.upper() in names:
                    return True
            elif isinstance(status, int):
                if part.lower().endswith("xx") and status // 100 == int(m.group(1)):
                    return True
                if part.isdigit() and status == int(part):
                    return True
        return False

    def flows(self, flows: Iterable[Flow], exchanges: Mapping[str, Any]) -> list[Flow]:
        """The flows that carry at least one matching exchange (drawn whole: the request's story)."""
        if not self:
            return list(flows)
        return [f for f in flows if any((ex := exchanges.get(x)) is not None and self.matches(ex)
                                        for x in f.exchange_ids)]

    def exchanges(self, exchanges: Iterable[Any]) -> list[Any]:
        return [ex for ex in exchanges if self.matches(ex)] if self else list(exchanges)
