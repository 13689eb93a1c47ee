"""The short routes YAML (listeners, virtual hosts, routes, clusters, TLS by SNI, SNI passthrough)
read into dataclasses that `proxy.bootstrap` turns into an Envoy v3 bootstrap.

Schema (every key but those marked required has a default)::

    admin_port: 15000
    listeners:
      - name: ingress                 # required, unique
        port: 15001                   # required
        address: 0.0.0.0
        virtual_hosts:                # plain HTTP
          - name: all
            domains: ["*"]
            routes:
              - prefix: /
                cluster: httpbin      # required
                timeout: 1s           # "15s" default; "0s" disables it
                retry: {retry_on: 5xx, num_retries: 3, per_try_timeout: 0.5s}
        tls:                          # HTTPS: certificate and routes chosen by SNI
          - server_names: [shop.example.com]
            cert: certs/shop.crt      # relative to the YAML file (or the data dir)
            key: certs/shop.key       # or `self_signed: true`: generated at load time
            alpn: [h2, http/1.1]      # offered ALPN (default)
            client_ca: certs/ca.crt   # mutual TLS: require a client certificate signed by this CA
            tls_max: "1.3"            # "1.2" or "1.3" (Envoy's default)
            key_log: keys/gateway.keys  # DEBUG ONLY, a secret: NSS key log of these connections;
                                      # or {path, local_address_range: [CIDR], remote_address_range: [CIDR]}
                                      # (relative paths land under <data dir>/keys)
            virtual_hosts: [...]
        passthrough:                  # TLS passthrough: tcp_proxy chosen by SNI
          - server_names: [shop.example.com]
            cluster: shop-tls
    clusters:
      - name: httpbin
        endpoints: ["127.0.0.1:${MESHSCOPE_DEMO_UPSTREAM_PORT:-18080}"]   # ${NAME:-default} expands
        lb_policy: round_robin        # round_robin | least_request | random | ring_hash | maglev
        connect_timeout: 1s
        http2: false
        tls:                          # upstream TLS (origination), e.g. an Istio-style mTLS hop
          sni: outbound_.8080_._.catalog.default.svc.cluster.local
          alpn: [istio-http/1.1, istio]
          cert: certs/webapp.crt      # client certificate (mutual TLS), with key:
          key: certs/webapp.key
          ca: certs/ca.crt            # verify the server against this CA
          tls_max: "1.3"              # Envoy's upstream default is 1.2
          key_log: keys/upstream.keys # DEBUG ONLY, a secret (as above)
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshscope.errors import UserError

LB_POLICIES = ("round_robin", "least_request", "random", "ring_hash", "maglev")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
TLS_VERSIONS = {"1.2": "TLSv1_2", "1.3": "TLSv1_3"}


class RoutesError(UserError):
    """The routes YAML is malformed; the message names the offending key."""


@dataclass(slots=True)
class RetryPolicy:
    retry_on: str = "5xx"
    num_retries: int = 1
    per_try_timeout: float | None = None  # seconds


@dataclass(slots=True)
class Route:
    cluster: str
    prefix: str = "/"
    timeout: float | None = 15.0  # seconds; 0 disables Envoy's route timeout
    retry: RetryPolicy | None = None


@dataclass(slots=True)
class VirtualHost:
    name: str
    domains: list[str] = field(default_factory=lambda: ["*"])
    routes: list[Route] = field(default_factory=list)


@dataclass(slots=True)
class KeyLogSpec:
    """Envoy's ``CommonTlsContext.key_log`` (TlsKeyLog): where Envoy appends NSS key-log lines, and
    optionally only for connections whose local / remote address lies in these CIDR ranges.
    A key log is a secret that decrypts the traffic: for debugging only."""

    path: Path
    local_address_range: list[str] = field(default_factory=list)
    remote_address_range: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TlsChain:
    """One HTTPS filter chain: the certificate served and the routes used for these SNI names."""

    server_names: list[str]
    cert: Path
    key: Path
    virtual_hosts: list[VirtualHost] = field(default_factory=list)
    alpn: list[str] = field(default_factory=lambda: ["h2", "http/1.1"])
    client_ca: Path | None = None  # set: mutual TLS, a client certificate signed by this CA is required
    tls_max: str | None = None  # "1.2" / "1.3"
    key_log: KeyLogSpec | None = None


@dataclass(slots=True)
class UpstreamTls:
    """TLS from Envoy to a cluster's endpoints (an mTLS hop when a client certificate is given)."""

    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    tls_max: str | None = None
    key_log: KeyLogSpec | None = None


@dataclass(slots=True)
class PassthroughChain:
    """One passthrough filter chain: TLS bytes for these SNI names go untouched to a cluster."""

    server_names: list[str]
    cluster: str


@dataclass(slots=True)
class Listener:
    name: str
    port: int
    address: str = "0.0.0.0"
    virtual_hosts: list[VirtualHost] = field(default_factory=list)
    tls: list[TlsChain] = field(default_factory=list)
    passthrough: list[PassthroughChain] = field(default_factory=list)


@dataclass(slots=True)
class Endpoint:
    host: str
    port: int


@dataclass(slots=True)
class Cluster:
    name: str
    endpoints: list[Endpoint]
    lb_policy: str = "round_robin"
    connect_timeout: float = 1.0
    http2: bool = False
    tls: UpstreamTls | None = None


@dataclass(slots=True)
class Routes:
    listeners: list[Listener]
    clusters: list[Cluster]
    admin_port: int = 15000

    def listener(self, name: str) -> Listener:
        """The listener called `name` (KeyError if none)."""
        for lst in self.listeners:
            if lst.name == name:
                return lst
        raise KeyError(name)

    def cluster(self, name: str) -> Cluster:
        """The cluster called `name` (KeyError if none)."""
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)


def parse_duration(value: Any, where: str) -> float:
    """'1s', '250ms', '2m' or a number of seconds → seconds (float)."""
    if isinstance(value, bool):
        raise RoutesError(f"{where}: expected a duration like 1s or 250ms, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value).strip())
        if not m:
            raise RoutesError(f"{where}: expected a duration like 1s or 250ms, got {value!r}")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]
    if seconds < 0:
        raise RoutesError(f"{where}: duration must not be negative")
    return seconds


def load_routes(
    path: str | Path, *, data_dir: str | Path | None = None, variables: Mapping[str, object] | None = None
) -> Routes:
    """Read a routes YAML file. Relative cert paths resolve against the file's folder;
    `self_signed: true` chains get a certificate generated under ``data_dir/certs`` (default: a
    ``certs`` folder next to the file). ``${NAME}`` / ``${NAME:-default}`` in the text are
    replaced from `variables`, then the environment."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RoutesError(f"cannot read routes file {path}: {exc.strerror or exc}") from exc
    cert_dir = Path(data_dir) / "certs" if data_dir is not None else path.parent / "certs"
    key_log_dir = Path(data_dir) / "keys" if data_dir is not None else path.parent / "keys"
    return parse_routes(text, base_dir=path.parent, cert_dir=cert_dir, source=str(path), variables=variables,
                        key_log_dir=key_log_dir)


def parse_routes(
    text: str | dict,
    *,
    base_dir: Path | None = None,
    cert_dir: Path | None = None,
    source: str = "routes",
    variables: Mapping[str, object] | None = None,
    key_log_dir: Path | None = None,
) -> Routes:
    """Parse routes YAML text (or an already-loaded mapping) into `Routes`, checking references.
    Relative ``key_log`` paths land under ``key_log_dir`` (default: ``keys`` beside ``cert_dir``)."""
    if isinstance(text, dict):
        doc: Any = text
    else:
        try:
            doc = yaml.safe_load(expand_variables(text, variables, source))
        except yaml.YAMLError as exc:
            raise RoutesError(f"{source}: not valid YAML: {exc}") from exc
    if key_log_dir is None and cert_dir is not None:
        key_log_dir = cert_dir.parent / "keys"
    return _Parser(source, base_dir or Path.cwd(), cert_dir, key_log_dir).routes(doc)


def expand_variables(text: str, variables: Mapping[str, object] | None = None, source: str = "routes") -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` from `variables`, then os.environ, then the default."""

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if variables is not None and name in variables:
            return str(variables[name])
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise RoutesError(f"{source}: ${{{name}}} is not set and has no default (write ${{{name}:-value}})")

    return _VARIABLE.sub(value, text)


class _Parser:
    """Walks the YAML document; every error names its path (``listeners[0].tls[1].cert``)."""

    def __init__(self, source: str, base_dir: Path, cert_dir: Path | None,
                 key_log_dir: Path | None = None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.cert_dir = cert_dir
        self.key_log_dir = key_log_dir

    def fail(self, where: str, message: str) -> RoutesError:
        return RoutesError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                where,
                f"unknown key(s) {', '.join(map(str, unknown))} (allowed: {', '.join(sorted(allowed))})",
            )
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(where, f"missing required key(s) {', '.join(missing)}")
        return value

    def items(self, value: Any, where: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def strings(self, value: Any, where: str) -> list[str]:
        if isinstance(value, str):
            value = [value]
        values = self.items(value, where)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise self.fail(where, "expected a non-empty list of strings")
        return values

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(where, f"expected an integer in {low}..{high}, got {value!r}")
        return value

    def name(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
            raise self.fail(where, f"expected a name of letters, digits, '_', '-', '.', got {value!r}")
        return value

    def routes(self, doc: Any) -> Routes:
        doc = self.mapping(doc, "top level", {"admin_port", "listeners", "clusters"}, {"listeners"})
        clusters = [
            self.cluster(c, f"clusters[{i}]")
            for i, c in enumerate(self.items(doc.get("clusters"), "clusters"))
        ]
        listeners = [
            self.listener(x, f"listeners[{i}]")
            for i, x in enumerate(self.items(doc["listeners"], "listeners"))
        ]
        if not listeners:
            raise self.fail("listeners", "at least one listener is required")
        routes = Routes(
            listeners, clusters, self.integer(doc.get("admin_port", 15000), "admin_port", 0, 65535)
        )
        self.check_references(routes)
        return routes

    def check_references(self, routes: Routes) -> None:
        for kind, names in (
            ("listener", [x.name for x in routes.listeners]),
            ("cluster", [c.name for c in routes.clusters]),
        ):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise self.fail(f"{kind}s", f"duplicate {kind} name(s) {', '.join(dup)}")
        known = {c.name for c in routes.clusters}
        for lst in routes.listeners:
            hosts = lst.virtual_hosts + [vh for chain in lst.tls for vh in chain.virtual_hosts]
            used = [r.cluster for vh in hosts for r in vh.routes] + [p.cluster for p in lst.passthrough]
            for cluster in used:
                if cluster not in known:
                    raise self.fail(
                        f"listener {lst.name}",
                        f"route to unknown cluster {cluster!r} "
                        f"(defined: {', '.join(sorted(known)) or 'none'})",
                    )

    def listener(self, value: Any, where: str) -> Listener:
        v = self.mapping(
            value, where, {"name", "port", "address", "virtual_hosts", "tls", "passthrough"}, {"name", "port"}
        )
        lst = Listener(
            name=self.name(v["name"], f"{where}.name"),
            port=self.integer(v["port"], f"{where}.port", 0, 65535),
            address=str(v.get("address", "0.0.0.0")),
            virtual_hosts=self.virtual_hosts(v.get("virtual_hosts"), f"{where}.virtual_hosts"),
            tls=[
                self.tls(c, f"{where}.tls[{i}]")
                for i, c in enumerate(self.items(v.get("tls"), f"{where}.tls"))
            ],
            passthrough=[
                self.passthrough(c, f"{where}.passthrough[{i}]")
                for i, c in enumerate(self.items(v.get("passthrough"), f"{where}.passthrough"))
            ],
        )
        kinds = sum(bool(x) for x in (lst.virtual_hosts, lst.tls, lst.passthrough))
        if kinds != 1:
            raise self.fail(
                where,
                "give exactly one of virtual_hosts (HTTP), tls (HTTPS by SNI) "
                "or passthrough (TLS passthrough by SNI)",
            )
        return lst

    def virtual_hosts(self, value: Any, where: str) -> list[VirtualHost]:
        hosts = []
        for i, h in enumerate(self.items(value, where)):
            w = f"{where}[{i}]"
            h = self.mapping(h, w, {"name", "domains", "routes"}, {"routes"})
            routes = [
                self.route(r, f"{w}.routes[{j}]")
                for j, r in enumerate(self.items(h["routes"], f"{w}.routes"))
            ]
            if not routes:
                raise self.fail(f"{w}.routes", "at least one route is required")
            hosts.append(
                VirtualHost(
                    self.name(h.get("name", f"vh{i}"), f"{w}.name"),
                    self.strings(h.get("domains", ["*"]), f"{w}.domains"),
                    routes,
                )
            )
        return hosts

    def route(self, value: Any, where: str) -> Route:
        r = self.mapping(value, where, {"prefix", "cluster", "timeout", "retry"}, {"cluster"})
        prefix = r.get("prefix", "/")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise self.fail(f"{where}.prefix", f"expected a path starting with '/', got {prefix!r}")
        retry = None
        if r.get("retry") is not None:
            p = self.mapping(r["retry"], f"{where}.retry", {"retry_on", "num_retries", "per_try_timeout"})
            retry = RetryPolicy(
                retry_on=",".join(self.strings(p.get("retry_on", "5xx"), f"{where}.retry.retry_on")),
                num_retries=self.integer(p.get("num_retries", 1), f"{where}.retry.num_retries", 0, 100),
                per_try_timeout=(
                    parse_duration(p["per_try_timeout"], f"{self.source}: {where}.retry.per_try_timeout")
                    if p.get("per_try_timeout") is not None
                    else None
                ),
            )
        timeout = parse_duration(r.get("timeout", "15s"), f"{self.source}: {where}.timeout")
        return Route(
            cluster=self.name(r["cluster"], f"{where}.cluster"), prefix=prefix, timeout=timeout, retry=retry
        )

    def tls(self, value: Any, where: str) -> TlsChain:
        c = self.mapping(
            value,
            where,
            {"server_names", "cert", "key", "self_signed", "virtual_hosts", "alpn", "client_ca", "tls_max",
             "key_log"},
            {"server_names", "virtual_hosts"},
        )
        names = self.strings(c["server_names"], f"{where}.server_names")
        if c.get("self_signed"):
            if "cert" in c or "key" in c:
                raise self.fail(where, "give either cert/key or self_signed: true, not both")
            if self.cert_dir is None:
                raise self.fail(where, "self_signed needs a data dir to write the certificate to")
            from meshscope.proxy.certs import self_signed_pair

            cert, key = self_signed_pair(self.cert_dir, names)
        else:
            if "cert" not in c or "key" not in c:
                raise self.fail(where, "give cert and key file paths (or self_signed: true)")
            cert, key = (self.file(c[k], f"{where}.{k}") for k in ("cert", "key"))
        hosts = self.virtual_hosts(c["virtual_hosts"], f"{where}.virtual_hosts")
        if not hosts:
            raise self.fail(f"{where}.virtual_hosts", "at least one virtual host is required")
        return TlsChain(
            names, cert, key, hosts,
            alpn=self.strings(c.get("alpn", ["h2", "http/1.1"]), f"{where}.alpn"),
            client_ca=self.file(c["client_ca"], f"{where}.client_ca") if "client_ca" in c else None,
            tls_max=self.tls_version(c.get("tls_max"), f"{where}.tls_max"),
            key_log=self.key_log(c.get("key_log"), f"{where}.key_log"),
        )

    def tls_version(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if str(value) not in TLS_VERSIONS:
            raise self.fail(where, f"expected one of {', '.join(TLS_VERSIONS)}, got {value!r}")
        return str(value)

    def key_log(self, value: Any, where: str) -> KeyLogSpec | None:
        """A key-log path (string) or {path, local_address_range, remote_address_range}; the folder
        is created (owner-only: key logs are secrets)."""
        if value is None:
            return None
        if isinstance(value, str):
            value = {"path": value}
        v = self.mapping(value, where, {"path", "local_address_range", "remote_address_range"}, {"path"})
        if not isinstance(v["path"], str) or not v["path"]:
            raise self.fail(f"{where}.path", f"expected a file path, got {v['path']!r}")
        p = Path(v["path"])
        if not p.is_absolute():
            if self.key_log_dir is None:
                raise self.fail(f"{where}.path",
                                "a relative key-log path needs a data dir (or give an absolute path)")
            p = self.key_log_dir / p
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise self.fail(f"{where}.path", f"cannot create {p.parent}: {exc.strerror or exc}") from None
        ranges = {}
        for k in ("local_address_range", "remote_address_range"):
            cidrs = self.strings(v[k], f"{where}.{k}") if k in v else []
            for i, cidr in enumerate(cidrs):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise self.fail(f"{where}.{k}[{i}]",
                                    f"expected a CIDR range like 10.0.0.0/8, got {cidr!r}") from None
            ranges[k] = cidrs
        return KeyLogSpec(p, **ranges)

    def upstream_tls(self, value: Any, where: str) -> UpstreamTls | None:
        if value is None or value is False:
            return None
        if value is True:
            value = {}
        c = self.mapping(value, where, {"sni", "alpn", "cert", "key", "ca", "tls_max", "key_log"})
        if ("cert" in c) != ("key" in c):
            raise self.fail(where, "give both cert and key (a client certificate) or neither")
        return UpstreamTls(
            sni=str(c["sni"]) if c.get("sni") else None,
            alpn=self.strings(c["alpn"], f"{where}.alpn") if "alpn" in c else [],
            cert=self.file(c["cert"], f"{where}.cert") if "cert" in c else None,
            key=self.file(c["key"], f"{where}.key") if "key" in c else None,
            ca=self.file(c["ca"], f"{where}.ca") if "ca" in c else None,
            tls_max=self.tls_version(c.get("tls_max"), f"{where}.tls_max"),
            key_log=self.key_log(c.get("key_log"), f"{where}.key_log"),
        )

    def file(self, value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a file path, got {value!r}")
        p = Path(value)
        p = p if p.is_absolute() else self.base_dir / p
        if not p.is_file():
            raise self.fail(where, f"no such file {p}")
        return p

    def passthrough(self, value: Any, where: str) -> PassthroughChain:
        c = self.mapping(value, where, {"server_names", "cluster"}, {"server_names", "cluster"})
        return PassthroughChain(
            self.strings(c["server_names"], f"{where}.server_names"),
            self.name(c["cluster"], f"{where}.cluster"),
        )

    def cluster(self, value: Any, where: str) -> Cluster:
        c = self.mapping(
            value,
            where,
            {"name", "endpoints", "lb_policy", "connect_timeout", "http2", "tls"},
            {"name", "endpoints"},
        )
        endpoints = [
            self.endpoint(e, f"{where}.endpoints[{i}]")
            for i, e in enumerate(self.strings(c["endpoints"], f"{where}.endpoints"))
        ]
        lb = str(c.get("lb_policy", "round_robin")).lower()
        if lb not in LB_POLICIES:
            raise self.fail(f"{where}.lb_policy", f"expected one of {', '.join(LB_POLICIES)}, got {lb!r}")
        return Cluster(
            self.name(c["name"], f"{where}.name"),
            endpoints,
            lb,
            parse_duration(c.get("connect_timeout", "1s"), f"{self.source}: {where}.connect_timeout"),
            bool(c.get("http2", False)),
            self.upstream_tls(c.get("tls"), f"{where}.tls"),
        )

    def endpoint(self, value: str, where: str) -> Endpoint:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.fail(where, f"expected host:port, got {value!r}")
        return Endpoint(host.strip("[]"), int(port))
