"""Which protocol a connection speaks, from the first bytes either side sends (Zeek's PIA, in small):
the one place a connection is given its analyzer, and the one place a new protocol is added.

Also which side is the client, for a connection whose handshake was not captured."""

from __future__ import annotations

from meshscope.decoders.analyzer import Analyzer, Host, Opaque
from meshscope.decoders.dns_tcp_analyzer import DnsTcpAnalyzer
from meshscope.decoders.http1 import looks_like_request, looks_like_response
from meshscope.decoders.http1_analyzer import Http1Analyzer
from meshscope.decoders.http2_analyzer import Http2Analyzer
from meshscope.decoders.http2_frames import PREFACE, plausible_frames
from meshscope.decoders.tls_analyzer import TlsAnalyzer
from meshscope.decoders.tls_hello import looks_like_handshake

DNS_PORT = 53


def choose_analyzer(host: Host, from_client: bool, payload: bytes) -> Analyzer:
    """The analyzer for a connection whose first payload (in capture order) is ``payload``."""
    midstream = not host.conn.handshake_seen
    conn = host.conn
    if conn.dport == DNS_PORT or conn.sport == DNS_PORT:
        table = getattr(host, "table", None)
        lookups = getattr(table, "dns", None)
        if lookups is not None:
            return DnsTcpAnalyzer(host, lookups)
    if looks_like_handshake(payload) and (from_client or payload[5:6] == b"\x02"):
        keylog = getattr(host, "keylog", None)
        if keylog is not None:  # keys were given: read through the records
            from meshscope.decoders.tls_decrypting_analyzer import DecryptingTlsAnalyzer
            return DecryptingTlsAnalyzer(host, keylog, client_hello_seen=from_client)
        return TlsAnalyzer(host, client_hello_seen=from_client)
    if from_client and len(payload) >= 3 and PREFACE.startswith(payload[:len(PREFACE)]):
        return Http2Analyzer(host)
    if not from_client and payload[3:4] == b"\x04" and plausible_frames(payload, False):
        # the server's preface (a SETTINGS frame) may come first: gRPC servers send it on accept
        return Http2Analyzer(host, midstream=midstream)
    if looks_like_request(payload) if from_client else looks_like_response(payload):
        return Http1Analyzer(host)
    if midstream and plausible_frames(payload, from_client):
        return Http2Analyzer(host, midstream=True)
    if midstream and not (len(payload) >= 3 and 20 <= payload[0] <= 23 and payload[1] == 3):
        # joined mid-stream, perhaps inside a body: look for the next HTTP/1 message
        return Http1Analyzer(host, hunting=True)
    return Opaque(host)


def first_is_client(payload: bytes, sport: int, dport: int) -> bool:
    """Whether the sender of the first captured payload (no SYN seen) is the client."""
    if payload:
        if looks_like_request(payload) or payload[:3] == b"PRI" or (
                looks_like_handshake(payload) and payload[5:6] == b"\x01"):
            return True
        if looks_like_response(payload) or (looks_like_handshake(payload) and payload[5:6] == b"\x02"):
            return False
    return sport >= dport  # no clue in the bytes: the server is the side with the lower (well-known) port
