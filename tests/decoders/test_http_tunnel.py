"""HTTP CONNECT tunnels (decoders.http_tunnel): after a 2xx the tunnel's bytes are a new stream —
TLS hellos, HTTP/1 — on scapy-crafted captures read by all three backends. (Real curl through a
real proxy: test_udp_lab.py.)"""

from __future__ import annotations

import pytest
from meshscope.decoders import get_backend

from tests.decoders.capture_builders import Conversation, http_request, http_response, tls_hellos, write

BACKENDS = ["dpkt", "scapy", "pyshark"]
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def _decode(path, backend):
    return list(get_backend(backend).decode(path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_hellos_inside_a_tunnel(tmp_path, backend):
    client_hello, server_flight = tls_hellos("api.partner.example", ("h2", "http/1.1"))
    conv = Conversation(sport=3128).handshake()
    conv.send(True, http_request("CONNECT", "api.partner.example:443", host="api.partner.example:443"))
    conv.send(False, ESTABLISHED)
    conv.send(True, client_hello)
    conv.send(False, server_flight)
    exchanges = _decode(write(tmp_path / "t.pcap", conv.close().packets), backend)
    assert [(ex.exchange_type, ex.index, ex.tunnel) for ex in exchanges] == [
        ("http", 0, None), ("tls", 1, "CONNECT api.partner.example:443")]
    connect, tls = exchanges
    assert (connect.method, connect.uri, connect.status) == ("CONNECT", "api.partner.example:443", 200)
    assert (tls.sni, tls.alpn, tls.tls_version) == ("api.partner.example", ["h2", "http/1.1"], "TLS 1.3")
    assert tls.conn.key == connect.conn.key and not tls.damage


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_tunnel_bytes_in_the_same_segment_as_the_200(tmp_path, backend):
    """A proxy that passes the server's first bytes with its 200 (one segment): they choose the
    tunnel's analyzer, as a new connection's first bytes would."""
    conv = Conversation(sport=3128).handshake()
    conv.send(True, http_request("CONNECT", "10.9.9.9:80", host="10.9.9.9:80"))
    conv.send(False, ESTABLISHED + b"SSH-2.0-OpenSSH_9.2\r\n")  # a server that speaks first
    conv.send(True, b"SSH-2.0-curious\r\n")
    conv.send(True, http_request(uri="/inside"))
    b = get_backend(backend)
    summaries = []
    b.on_connection = summaries.append
    exchanges = list(b.decode(write(tmp_path / "t.pcap", conv.close().packets)))
    assert [(ex.method, ex.uri, ex.status) for ex in exchanges] == [("CONNECT", "10.9.9.9:80", 200)]
    # the server's banner chose the tunnel's analyzer: not HTTP, so nothing more is read as HTTP
    assert [(s.protocol, s.exchanges) for s in summaries] == [("other", 1)]


def test_a_refused_connect_is_no_tunnel(tmp_path):
    conv = Conversation(sport=3128).handshake()
    conv.send(True, http_request("CONNECT", "blocked.example:443", host="blocked.example:443"))
    conv.send(False, http_response(407, b"auth first", proxy_authenticate="Basic"))
    conv.send(True, http_request("CONNECT", "blocked.example:443", host="blocked.example:443",
                                 proxy_authorization="Basic dTpw"))
    conv.send(False, ESTABLISHED)
    client_hello, _ = tls_hellos("blocked.example")
    conv.send(True, client_hello)
    exchanges = _decode(write(tmp_path / "t.pcap", conv.close().packets), "dpkt")
    assert [(ex.exchange_type, ex.status, ex.tunnel) for ex in exchanges] == [
        ("http", 407, None), ("http", 200, None), ("tls", None, "CONNECT blocked.example:443")]
    assert exchanges[2].sni == "blocked.example" and exchanges[2].index == 2
