"""Write a big synthetic HTTP/2 + gRPC capture fast: struct-level frames and packets (make_capture's
PcapWriter), header blocks from the `hpack` encoder, one encoder per connection and direction, so
the dynamic table is really used (every header after a stream's first is an index into it, as from
a real client).

Each connection opens with the client preface and SETTINGS exchange, then carries its streams a few
at a time: requests sent together, answered in another order (streams interleaved on the
connection), every segment ACKed by the peer. Two of three connections speak gRPC (unary calls:
request HEADERS + a length-prefixed DATA message, response HEADERS, DATA, trailers with grpc-status;
some answers trailers-only), the others plain h2 GETs. Each TCP segment carries frames of one stream,
so tshark's per-packet fields name one stream each (tests compare them with the decoder's).

    python -m benchmarks.make_h2_capture OUT.pcap --packets 1000000"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from hpack import Encoder

from benchmarks.make_capture import ACK, FIN, PSH, SYN, PcapWriter

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8
END_STREAM, END_HEADERS, SETTINGS_ACK = 0x1, 0x4, 0x1
GRPC_PORT, H2_PORT = 50051, 8080
STREAMS_PER_CONNECTION = 12
IN_FLIGHT = 3  # streams open at once on a connection
GRPC_METHODS = ["/shop.Catalog/GetItem", "/shop.Catalog/ListItems", "/shop.Cart/AddItem",
                "/grpc.health.v1.Health/Check", "/shop.Checkout/PlaceOrder"]
GRPC_STATUSES = [0] * 8 + [5, 14]  # most calls OK; NOT_FOUND, UNAVAILABLE
GRPC_MESSAGES = {0: "", 5: "item not found", 14: "upstream connect error"}
_FRAME = struct.Struct("!BHBBI")  # length (3 bytes: high byte + low short), type, flags, stream id


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 16, n & 0xFFFF, ftype, flags, stream) + payload


def grpc_message(body: bytes) -> bytes:
    """One length-prefixed gRPC message, uncompressed."""
    return b"\x00" + struct.pack("!I", len(body)) + body


@dataclass(slots=True)
class Stream:
    """What a stream's request and answer said: the facts tests and tshark compare."""

    client: str
    cport: int
    server: str
    sport: int
    stream_id: int
    method: str
    path: str
    authority: str
    request_id: str
    status: int
    grpc_status: int | None


class _Conn:
    """One connection's sequence numbers and HPACK encoders."""

    def __init__(self, w: PcapWriter, cli: bytes, srv: bytes, cport: int, sport: int,
                 rnd: random.Random) -> None:
        self.w, self.cli, self.srv, self.cport, self.sport = w, cli, srv, cport, sport
        self.c, self.s = rnd.getrandbits(32), rnd.getrandbits(32)
        self.enc_c, self.enc_s = Encoder(), Encoder()

    def handshake(self) -> None:
        w = self.w
        w.tcp(self.cli, self.srv, self.cport, self.sport, self.c, 0, SYN)
        w.tcp(self.srv, self.cli, self.sport, self.cport, self.s, self.c + 1, SYN | ACK)
        self.c += 1
        self.s += 1
        w.tcp(self.cli, self.srv, self.cport, self.sport, self.c, self.s, ACK)

    def send(self, from_client: bool, data: bytes) -> None:
        """One segment and the peer's ACK of it."""
        w = self.w
        if from_client:
            w.tcp(self.cli, self.srv, self.cport, self.sport, self.c, self.s, PSH | ACK, data)
            self.c += len(data)
            w.tcp(self.srv, self.cli, self.sport, self.cport, self.s, self.c, ACK)
        else:
            w.tcp(self.srv, self.cli, self.sport, self.cport, self.s, self.c, PSH | ACK, data)
            self.s += len(data)
            w.tcp(self.cli, self.srv, self.cport, self.sport, self.c, self.s, ACK)

    def close(self) -> None:
        w = self.w
        w.tcp(self.cli, self.srv, self.cport, self.sport, self.c, self.s, FIN | ACK)
        w.tcp(self.srv, self.cli, self.sport, self.cport, self.s, self.c + 1, FIN | ACK)
        w.tcp(self.cli, self.srv, self.cport, self.sport, self.c + 1, self.s + 1, ACK)


def _addr(i: int) -> bytes:
    return socket.inet_aton(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}")


def write_h2_grpc(path: Path, packets: int, seed: int = 1,
                  streams_per_connection: int = STREAMS_PER_CONNECTION) -> list[Stream]:
    """Connections until ``packets`` packets are written (the last one finished). Returns every
    stream's facts, in the order the requests were sent."""
    rnd = random.Random(seed)
    w = PcapWriter(path)
    out: list[Stream] = []
    server_grpc, server_h2 = socket.inet_aton("10.201.0.2"), socket.inet_aton("10.201.0.3")
    client_settings = frame(SETTINGS, 0, 0, struct.pack("!HIHI", 2, 0, 4, 4194304)) \
        + frame(WINDOW_UPDATE, 0, 0, struct.pack("!I", 4128769))
    server_settings = frame(SETTINGS, 0, 0, struct.pack("!HIHI", 3, 100, 5, 16384)) \
        + frame(SETTINGS, SETTINGS_ACK, 0)
    settings_ack = frame(SETTINGS, SETTINGS_ACK, 0)
    conn_no = 0
    while w.packets < packets:
        conn_no += 1
        grpc = conn_no % 3 != 0
        cli = _addr(conn_no % 60000 + 1)
        cport = 10000 + conn_no % 50000
        srv, sport = (server_grpc, GRPC_PORT) if grpc else (server_h2, H2_PORT)
        c = _Conn(w, cli, srv, cport, sport, rnd)
        c.handshake()
        c.send(True, PREFACE + client_settings)
        c.send(False, server_settings)
        c.send(True, settings_ack)
        authority = f"{'catalog' if grpc else 'web'}-{conn_no % 40}.shop.svc.cluster.local:{sport}"
        client_ip, server_ip = socket.inet_ntoa(cli), socket.inet_ntoa(srv)
        sid = 1
        for _ in range(0, streams_per_connection, IN_FLIGHT):
            batch: list[Stream] = []
            for _ in range(IN_FLIGHT):
                rid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
                if grpc:
                    method, path_ = "POST", GRPC_METHODS[rnd.randrange(len(GRPC_METHODS))]
                    headers = [(":method", "POST"), (":scheme", "http"), (":path", path_),
                               (":authority", authority), ("content-type", "application/grpc"),
                               ("te", "trailers"), ("user-agent", "grpc-python/1.66.1"),
                               ("grpc-accept-encoding", "identity,deflate,gzip"),
                               ("grpc-timeout", "5S"), ("x-request-id", rid)]
                    block = c.enc_c.encode(headers)
                    body = grpc_message(rnd.randbytes(rnd.randint(8, 120)))
                    c.send(True, frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body))
                    gs = GRPC_STATUSES[rnd.randrange(len(GRPC_STATUSES))]
                    batch.append(Stream(client_ip, cport, server_ip, sport, sid, method, path_, authority,
                                        rid, 200, gs))
                else:
                    method, path_ = "GET", f"/api/items/{conn_no}/{sid}"
                    headers = [(":method", "GET"), (":scheme", "http"), (":path", path_),
                               (":authority", authority), ("user-agent", "curl/8.5.0"), ("accept", "*/*"),
                               ("x-request-id", rid),
                               ("x-forwarded-for", f"172.18.{conn_no % 250}.{sid % 250 + 1}")]
                    c.send(True, frame(HEADERS, END_HEADERS | END_STREAM, sid, c.enc_c.encode(headers)))
                    status = 404 if rnd.random() < 0.1 else 200
                    batch.append(Stream(client_ip, cport, server_ip, sport, sid, method, path_, authority,
                                        rid, status, None))
                sid += 2
            out.extend(batch)
            rnd.shuffle(batch)  # answered in another order than asked
            for st in batch:
                _answer(c, st, rnd)
        c.close()
    w.close()
    return out


def _answer(c: _Conn, st: Stream, rnd: random.Random) -> None:
    enc, sid = c.enc_s, st.stream_id
    if st.grpc_status is None:  # plain h2
        head = enc.encode([(":status", str(st.status)), ("content-type", "application/json"),
                           ("server", "envoy"), ("x-envoy-upstream-service-time", str(rnd.randint(1, 9)))])
        c.send(False, frame(HEADERS, END_HEADERS, sid, head))
        c.send(False, frame(DATA, END_STREAM, sid, b"x" * rnd.randint(40, 600)))
        return
    message = GRPC_MESSAGES[st.grpc_status]
    trailers = [("grpc-status", str(st.grpc_status))] + ([("grpc-message", message)] if message else [])
    if st.grpc_status and rnd.random() < 0.5:  # trailers-only: one HEADERS, END_STREAM
        block = enc.encode([(":status", "200"), ("content-type", "application/grpc")] + trailers)
        c.send(False, frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
        return
    head = enc.encode([(":status", "200"), ("content-type", "application/grpc"),
                       ("grpc-accept-encoding", "identity,deflate,gzip")])
    c.send(False, frame(HEADERS, END_HEADERS, sid, head))
    body = frame(DATA, 0, sid, grpc_message(rnd.randbytes(rnd.randint(20, 400))))
    c.send(False, body + frame(HEADERS, END_HEADERS | END_STREAM, sid, enc.encode(trailers)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--packets", type=int, default=1_000_000)
    a = ap.parse_args()
    streams = write_h2_grpc(a.out, a.packets)
    print(f"wrote {len(streams)} streams to {a.out}")


if __name__ == "__main__":
    main()
