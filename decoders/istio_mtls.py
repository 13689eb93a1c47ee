"""What an Istio mesh writes on its mTLS legs, read without keys: the SNI a sidecar sends names the
destination (``outbound_.8080_.v1_.catalog.default.svc.cluster.local``: direction, port, subset,
service), Istio's ALPN values mark a leg as mesh mTLS, and the certificates' URI SANs carry SPIFFE
identities (``spiffe://cluster.local/ns/NS/sa/SA``). Also the loopback addresses and ports of
sidecar interception (127.0.0.6, 15001, 15006), which join a pod's loopback leg to its eth0 leg.

Istio: pilot/pkg/model/service.go (BuildDNSSrvSubsetKey), pilot/pkg/networking/util (ALPN lists),
tools/istio-iptables (15001 outbound, 15006 inbound, 127.0.0.6 inbound passthrough source)."""

from __future__ import annotations

from dataclasses import dataclass

# ALPN values Istio's sidecars offer on mesh mTLS (ALPNInMeshWithMxc, ALPNInMesh, ALPNInMeshH2, …)
MESH_ALPNS = frozenset({"istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2", "istio"})
ALPN_APP_PROTOCOL = {"istio-http/1.0": "http/1.0", "istio-http/1.1": "http/1.1", "istio-h2": "h2"}
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"


@dataclass(frozen=True, slots=True)
class IstioSni:
    """An Istio cluster name carried as SNI."""

    direction: str  # "outbound" / "inbound"
    port: int
    subset: str | None
    host: str  # catalog.default.svc.cluster.local

    @property
    def service(self) -> str:
        """``catalog.default`` for a Kubernetes service host, else the host itself."""
        parts = self.host.split(".")
        if len(parts) >= 3 and parts[2] == "svc":
            return f"{parts[0]}.{parts[1]}"
        return self.host

    @property
    def namespace(self) -> str | None:
        parts = self.host.split(".")
        return parts[1] if len(parts) >= 3 and parts[2] == "svc" else None

    @property
    def label(self) -> str:
        """How graphs name the destination: ``catalog.shop:8080`` (`` v1`` for a subset)."""
        return f"{self.service}:{self.port}" + (f" {self.subset}" if self.subset else "")


def parse_istio_sni(sni: str | None) -> IstioSni | None:
    """``outbound_.8080_._.catalog.default.svc.cluster.local`` → IstioSni; None for any other name."""
    if not sni:
        return None
    parts = sni.split("_.", 3)
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound") or not parts[1].isdigit():
        return None
    port = int(parts[1])
    if not 0 < port < 65536 or not parts[3]:
        return None
    return IstioSni(parts[0], port, parts[2] or None, parts[3])


def is_mesh_alpn(alpn: list[str] | tuple[str, ...] | str | None) -> bool:
    """Whether the offered (or chosen) ALPN marks an Istio mesh mTLS leg."""
    if not alpn:
        return False
    if isinstance(alpn, str):
        alpn = [alpn]
    return any(a in MESH_ALPNS for a in alpn)


def inner_protocol(alpn: list[str] | None) -> str | None:
    """The application protocol an Istio ALPN list promises inside the tunnel (h2, http/1.1)."""
    for a in alpn or ():
        if a in ALPN_APP_PROTOCOL:
            return ALPN_APP_PROTOCOL[a]
    return None


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    namespace: str | None
    service_account: str | None
    uri: str

    @property
    def label(self) -> str:
        """How graphs name an end: ``SPIFFE ns shop, sa webapp`` (the URI for other SPIFFE paths)."""
        if self.namespace is None:
            return f"SPIFFE {self.uri}"
        return f"SPIFFE ns {self.namespace}, sa {self.service_account}"


def parse_spiffe(uri: str) -> SpiffeId | None:
    """``spiffe://cluster.local/ns/NS/sa/SA`` → SpiffeId (any other SPIFFE path keeps only the domain)."""
    if not uri.startswith("spiffe://"):
        return None
    domain, _, path = uri[len("spiffe://"):].partition("/")
    if not domain:
        return None
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "ns" and parts[2] == "sa" and parts[1] and parts[3]:
        return SpiffeId(domain, parts[1], parts[3], uri)
    return SpiffeId(domain, None, None, uri)


def spiffe_ids(der: bytes) -> list[SpiffeId]:
    """The SPIFFE identities in a DER certificate's URI SANs; [] for certificates without (or unreadable)."""
    # imported here: a tenth of the CLI's start-up, and only certificates seen in a handshake need it
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [s for s in (parse_spiffe(u) for u in uris) if s is not None]


def leaf_identity(chain: list[bytes]) -> SpiffeId | None:
    """The identity of a Certificate message's leaf (the first certificate)."""
    ids = spiffe_ids(chain[0]) if chain else []
    return ids[0] if ids else None


@dataclass(frozen=True, slots=True)
class MeshLeg:
    """Labels for one TLS leg of a mesh: where it goes and who is at each end (as far as visible)."""

    mesh_mtls: bool
    destination: IstioSni | None
    client: SpiffeId | None
    server: SpiffeId | None
    inner_protocol: str | None


def label_leg(sni: str | None, alpn_offered: list[str], alpn_chosen: str | None,
              client_certificates: list[bytes], server_certificates: list[bytes]) -> MeshLeg:
    """Everything the handshake says about a leg (a TlsReport's fields go in)."""
    client, server = leaf_identity(client_certificates), leaf_identity(server_certificates)
    return exchange_leg(sni, [*alpn_offered, *([alpn_chosen] if alpn_chosen else [])],
                        client and client.uri, server and server.uri)


def exchange_leg(sni: str | None, alpn: list[str], client_identity: str | None,
                 server_identity: str | None) -> MeshLeg:
    """The labels of a leg from what an Exchange keeps of its handshake (the SPIFFE URIs, not the
    certificates): what the flow graphs and listings draw."""
    dest = parse_istio_sni(sni)
    client = parse_spiffe(client_identity) if client_identity else None
    server = parse_spiffe(server_identity) if server_identity else None
    mesh = is_mesh_alpn(alpn) or (dest is not None and (client is not None or server is not None))
    return MeshLeg(mesh, dest, client, server, inner_protocol(alpn))


def sidecar_loopback_role(src: str, sport: int, dst: str, dport: int) -> str | None:
    """The part a loopback connection plays in sidecar interception, from addresses alone:
    ``inbound-to-app`` (Envoy → app, from 127.0.0.6), ``inbound-capture`` (redirected to 15006),
    ``outbound-capture`` (redirected to 15001), or None."""
    if src == INBOUND_PASSTHROUGH_SOURCE:
        return "inbound-to-app"
    if dport == INBOUND_CAPTURE_PORT:
        return "inbound-capture"
    if dport == OUTBOUND_CAPTURE_PORT:
        return "outbound-capture"
    return None
