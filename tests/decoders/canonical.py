"""A canonical, comparable form of an Exchange, for checking that backends agree."""

from __future__ import annotations

from meshscope.model import Exchange


def _t(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def canonical(ex: Exchange) -> tuple:
    c = ex.conn
    return (
        ex.id, ex.exchange_type, c.key, c.capture, c.interface, c.client_isn, c.server_isn, _t(c.syn_time),
        c.handshake_seen, ex.index, _t(ex.request_time), _t(ex.response_time), ex.method, ex.uri, ex.host,
        ex.http_version, ex.status, ex.reason, tuple(sorted(ex.headers.items())),
        tuple(sorted(ex.response_headers.items())), ex.request_body_bytes, ex.response_body_bytes,
        ex.peer_workload, ex.peer_namespace, ex.server_peer_workload, ex.server_peer_namespace, ex.sni,
        tuple(ex.alpn), tuple(ex.tls_offered_versions), ex.tls_version, tuple(ex.damage),
        type(c.src), type(c.dst), type(c.interface),  # plain str, not a backend's str subclass
    )
