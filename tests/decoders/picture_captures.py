"""Scapy-crafted captures for the capture pictures: an ordinary capture with nothing to stitch (HTTP/1
keep-alive with a 503, a TLS handshake, a gRPC call over HTTP/2) and a busy one too big to draw one
exchange at a time."""

from __future__ import annotations

from pathlib import Path

from tests.decoders.capture_builders import T0, Conversation, http_request, http_response, tls_hellos, write
from tests.decoders.h2_builders import H2Pair, grpc_frame

RID = "0b9f6a2c-1d3e-4f50-9a8b-7c6d5e4f3a21"
GRPC_CALL = [(":method", "POST"), (":scheme", "http"), (":path", "/shop.v1.Catalog/List"),
             (":authority", "catalog"), ("content-type", "application/grpc"), ("x-request-id", "grpc-call-7")]


def ordinary_capture(path: Path) -> Path:
    """Three connections from 10.0.0.1, none a hop of another: HTTP/1 keep-alive to 10.0.0.2:80 (a 200
    carrying RID, then a 503 on a long path), TLS to 10.0.0.3:443 (secure.example.com), and a gRPC call
    to 10.0.0.4:50051 answered UNAVAILABLE."""
    web = Conversation(client="10.0.0.1", server="10.0.0.2", cport=40001, cisn=1000, sisn=5000).handshake()
    web.send(True, http_request("GET", "/products", host="shop", x_request_id=RID))
    web.send(False, http_response(200))
    web.send(True, http_request("POST", "/cart/items/" + "x" * 60 + "?coupon=SPRING&gift=1", host="shop"))
    web.send(False, http_response(503))
    web.close()
    hello, flight = tls_hellos("secure.example.com")
    tls = Conversation(client="10.0.0.1", server="10.0.0.3", cport=40002, sport=443, cisn=22000, sisn=33000,
                       t=web.t + 0.05).handshake()
    tls.send(True, hello)
    tls.send(False, flight)
    rpc = H2Pair(Conversation(client="10.0.0.1", server="10.0.0.4", cport=40003, sport=50051, cisn=70000,
                              sisn=90000, t=tls.t + 0.05)).start()
    sid = rpc.request(GRPC_CALL, grpc_frame(b""))
    rpc.respond(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14")])
    packets = web.packets + tls.packets + rpc.conv.packets
    return write(path, sorted(packets, key=lambda p: float(p.time)))


def busy_capture(path: Path, clients: int = 30, per_client: int = 8) -> Path:
    """``clients`` hosts (10.1.0.x) each making ``per_client`` one-request connections to one of three
    services (10.2.0.1-3); every 10th request to 10.2.0.3 is answered 503, all of 10.2.0.2's 404."""
    packets = []
    n = 0
    for c in range(clients):
        for k in range(per_client):
            server = f"10.2.0.{1 + (c + k) % 3}"
            status = 404 if server.endswith(".2") else 503 if server.endswith(".3") and n % 10 == 0 else 200
            conv = Conversation(client=f"10.1.0.{c + 1}", server=server, cport=30000 + k,
                                cisn=1000 + 7919 * n, sisn=500000 + 104729 * n, t=T0 + n * 0.01).handshake()
            conv.send(True, http_request("GET", f"/item/{n}", host="svc"))
            conv.send(False, http_response(status))
            packets += conv.packets
            n += 1
    return write(path, sorted(packets, key=lambda p: float(p.time)))
