"""Write big synthetic captures fast (struct templates, not scapy per packet): HTTP keep-alive and TLS
connections for the decoder benchmark, or a flood of one-packet connections for the memory test.

    python -m benchmarks.make_capture OUT.pcap --packets 1000000
    python -m benchmarks.make_capture OUT.pcap --syn-flood 1000000"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import uuid
from pathlib import Path

ETH = bytes.fromhex("0200000000020200000000010800")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_REC = struct.Struct("<IIII")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


class PcapWriter:
    """Ethernet/IPv4/TCP packets into a pcap, one struct.pack per header."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb", buffering=1 << 22)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        self.packets = 0
        self.t = 1_700_000_000.0

    def tcp(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
    ) -> None:
        self.t += 0.00001
        ip = _IP.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
        tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        n = 14 + 40 + len(payload)
        sec = int(self.t)
        self.f.write(_REC.pack(sec, int((self.t - sec) * 1e6), n, n))
        self.f.write(ETH + ip + tcp + payload)
        self.packets += 1

    def close(self) -> None:
        self.f.close()


def client_hello(sni: str) -> bytes:
    """A TLS 1.3-style ClientHello record with SNI, ALPN and supported_versions."""
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    alpn = b"\x02h2\x08http/1.1"
    alpn_ext = struct.pack("!HHH", 16, len(alpn) + 2, len(alpn)) + alpn
    sv_ext = struct.pack("!HHB", 43, 5, 4) + b"\x03\x04\x03\x03"
    ks_ext = struct.pack("!HHHHH", 51, 38, 36, 29, 32) + bytes(32)
    exts = sni_ext + alpn_ext + sv_ext + ks_ext
    body = b"\x03\x03" + bytes(32) + b"\x20" + bytes(32) + b"\x00\x04\x13\x01\x13\x02" + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_flight() -> bytes:
    """ServerHello choosing TLS 1.3 (supported_versions), then encrypted-looking records."""
    exts = struct.pack("!HHH", 43, 2, 0x0304) + struct.pack("!HHHH", 51, 36, 29, 32) + bytes(32)
    body = (
        b"\x03\x03" + bytes(32) + b"\x20" + bytes(32) + b"\x13\x01\x00" + struct.pack("!H", len(exts)) + exts
    )
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    sh = b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs
    return sh + b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x04\x00" + bytes(1024)


def _addr(i: int) -> bytes:
    return socket.inet_aton(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}")


def write_http_tls(path: Path, packets: int, seed: int = 1) -> int:
    """HTTP keep-alive connections (3 requests each) and TLS connections, alternately, until
    ``packets`` packets are written. Returns the number written."""
    rnd = random.Random(seed)
    w = PcapWriter(path)
    sflight = server_flight()
    hellos = [client_hello(f"svc{i}.shop.example.com") for i in range(50)]
    server_http, server_tls = socket.inet_aton("10.200.0.2"), socket.inet_aton("10.200.0.3")
    conn = 0
    while w.packets < packets:
        conn += 1
        cli = _addr(conn % 60000 + 1)
        cport = 10000 + conn % 50000
        tls = conn % 3 == 0
        srv, sport = (server_tls, 443) if tls else (server_http, 8080)
        c, s = rnd.getrandbits(32), rnd.getrandbits(32)
        w.tcp(cli, srv, cport, sport, c, 0, SYN)
        w.tcp(srv, cli, sport, cport, s, c + 1, SYN | ACK)
        c += 1
        s += 1
        w.tcp(cli, srv, cport, sport, c, s, ACK)
        if tls:
            msgs = [
                (True, hellos[conn % 50]),
                (False, sflight),
                (True, b"\x17\x03\x03\x00\x40" + bytes(64)),
                (False, b"\x17\x03\x03\x02\x00" + bytes(512)),
            ]
        else:
            msgs = []
            for k in range(3):
                rid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
                body = b"x" * rnd.randint(100, 900)
                req = (
                    f"GET /api/items/{conn}/{k} HTTP/1.1\r\nHost: webapp.shop:8080\r\n"
                    f"User-Agent: curl/8.5.0\r\nAccept: */*\r\nX-Request-Id: {rid}\r\n"
                    f"X-Forwarded-For: 172.18.0.{conn % 250 + 1}\r\n"
                    f"X-B3-TraceId: {rnd.getrandbits(64):016x}\r\n"
                    f"X-B3-SpanId: {rnd.getrandbits(64):016x}\r\nX-B3-Sampled: 1\r\n\r\n"
                ).encode()
                resp = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"x-envoy-upstream-service-time: 3\r\n\r\n" % len(body)
                ) + body
                msgs += [(True, req), (False, resp)]
        for from_client, data in msgs:
            if from_client:
                w.tcp(cli, srv, cport, sport, c, s, PSH | ACK, data)
                c += len(data)
                w.tcp(srv, cli, sport, cport, s, c, ACK)
            else:
                w.tcp(srv, cli, sport, cport, s, c, PSH | ACK, data)
                s += len(data)
                w.tcp(cli, srv, cport, sport, c, s, ACK)
        w.tcp(cli, srv, cport, sport, c, s, FIN | ACK)
        w.tcp(srv, cli, sport, cport, s, c + 1, FIN | ACK)
        w.tcp(cli, srv, cport, sport, c + 1, s + 1, ACK)
    w.close()
    return w.packets


def write_syn_flood(path: Path, connections: int) -> int:
    """``connections`` one-packet connections (a SYN each, never answered)."""
    w = PcapWriter(path)
    dst = socket.inet_aton("10.200.0.2")
    for i in range(connections):
        w.tcp(_addr(i // 50000 + 1), dst, 1024 + i % 50000, 80, i * 7919, 0, SYN)
    w.close()
    return w.packets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--syn-flood", type=int, metavar="N", help="write N one-packet connections instead")
    a = ap.parse_args()
    n = write_syn_flood(a.out, a.syn_flood) if a.syn_flood else write_http_tls(a.out, a.packets)
    print(f"wrote {n} packets to {a.out}")


if __name__ == "__main__":
    main()
