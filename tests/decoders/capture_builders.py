"""Scapy-crafted TCP conversations for the decoder tests: exact corner cases, written with scapy's
own pcap / pcapng writers in any link type."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether, Loopback
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, wrpcap

T0 = 1_700_000_000.0


@dataclass
class Conversation:
    """One TCP connection whose packets are built in order; seq/ack kept right unless a test
    deliberately breaks them (drop, reorder, duplicate the returned packets)."""

    client: str = "10.0.0.1"
    server: str = "10.0.0.2"
    cport: int = 40000
    sport: int = 80
    cisn: int = 1000
    sisn: int = 5000
    t: float = T0
    packets: list[Packet] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cseq = self.cisn + 1
        self.sseq = self.sisn + 1

    def _ip(self, from_client: bool) -> Packet:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        return (IPv6 if ":" in src else IP)(src=src, dst=dst)

    def _add(self, p: Packet) -> Packet:
        self.t += 0.001
        p.time = self.t
        self.packets.append(p)
        return p

    def tcp(self, from_client: bool, flags: str, seq: int, ack: int, data: bytes = b"") -> Packet:
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        p = self._ip(from_client) / TCP(sport=sp, dport=dp, flags=flags, seq=seq % 2**32, ack=ack % 2**32)
        if data:
            p = p / Raw(data)
        return self._add(p)

    def handshake(self) -> Conversation:
        self.tcp(True, "S", self.cisn, 0)
        self.tcp(False, "SA", self.sisn, self.cisn + 1)
        self.tcp(True, "A", self.cseq, self.sseq)
        return self

    def send(self, from_client: bool, data: bytes, mss: int = 1400) -> list[Packet]:
        """Data in segments of at most ``mss`` bytes, each acknowledged by the peer."""
        out = []
        for i in range(0, len(data), mss):
            chunk = data[i : i + mss]
            if from_client:
                out.append(self.tcp(True, "PA", self.cseq, self.sseq, chunk))
                self.cseq += len(chunk)
                self.tcp(False, "A", self.sseq, self.cseq)
            else:
                out.append(self.tcp(False, "PA", self.sseq, self.cseq, chunk))
                self.sseq += len(chunk)
                self.tcp(True, "A", self.cseq, self.sseq)
        return out

    def close(self) -> Conversation:
        self.tcp(True, "FA", self.cseq, self.sseq)
        self.cseq += 1
        self.tcp(False, "FA", self.sseq, self.cseq)
        self.sseq += 1
        self.tcp(True, "A", self.cseq, self.sseq)
        return self


def http_request(
    method: str = "GET", uri: str = "/", host: str = "svc", body: bytes = b"", **headers: str
) -> bytes:
    lines = [f"{method} {uri} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_response(status: int = 200, body: bytes = b"ok", chunked: bool = False, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        enc = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
        )
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + enc + b"0\r\n\r\n"
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def tls_hellos(
    sni: str = "shop.example.com", alpn: tuple[str, ...] = ("h2", "http/1.1"),
    server_max: ssl.TLSVersion | None = None,
) -> tuple[bytes, bytes]:
    """A real ClientHello (OpenSSL's, via the ssl module) and the real server's first flight."""
    with tempfile.TemporaryDirectory() as d:
        cert, key = write_cert(Path(d), sni)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)
        sctx.set_alpn_protocols(list(alpn))
        if server_max is not None:
            sctx.maximum_version = server_max
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.set_alpn_protocols(list(alpn))
    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(cin, cout, server_hostname=sni)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = cout.read()
    sin.write(hello)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return hello, sout.read()


def write_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for ``name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


LINKS = ("ether", "vlan", "sll", "sll2", "raw", "null")


def frame(p: Packet, link: str, ifindex: int = 7) -> Packet:
    """Wrap an IP packet in a link layer, keeping its timestamp."""
    if link == "ether":
        f = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p
    elif link == "vlan":
        f = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=42) / p
    elif link == "sll":
        f = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\1\0\0") / p
    elif link == "sll2":
        f = (
            CookedLinuxV2(ifindex=ifindex, lladdrtype=1, pkttype=0, lladdrlen=6, src=b"\x02\0\0\0\0\1\0\0")
            / p
        )
    elif link == "null":
        f = Loopback(type=2 if isinstance(p, IP) else 30) / p
    elif link == "raw":
        f = p
    else:
        raise ValueError(link)
    f.time = p.time
    return f


LINKTYPES = {"ether": 1, "vlan": 1, "sll": 113, "sll2": 276, "raw": 101, "null": 0}


def write(path: Path, packets: list[Packet], link: str = "ether") -> Path:
    """A pcap in the given link type."""
    wrpcap(str(path), [frame(p, link) for p in packets], linktype=LINKTYPES[link])
    return path


def write_pcapng(path: Path, packets_by_interface: dict[str, list[Packet]]) -> Path:
    """A pcapng with one interface per key (Ethernet), packets merged in time order."""
    tagged = []
    for name, pkts in packets_by_interface.items():
        for p in pkts:
            f = frame(p, "ether")
            f.sniffed_on = name
            tagged.append(f)
    tagged.sort(key=lambda f: float(f.time))
    with PcapNgWriter(str(path)) as w:
        for f in tagged:
            w.write(f)
    return path


def write_frames(
    path: Path, frames: list[tuple[float, bytes, int]], linktype: int = 1, snaplen: int = 262144
) -> Path:
    """A pcap written record by record: (time, captured bytes, wire length) — for cut frames."""
    import struct

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data, wire in frames:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(data), wire) + data)
    path.write_bytes(b"".join(out))
    return path


def corner_cases(directory: Path) -> dict[str, Path]:
    """Every HTTP/TLS/TCP corner case the decoder handles, one capture each."""
    d = directory
    out: dict[str, Path] = {}
    from meshscope.decoders.peer_metadata import encode_peer_metadata

    meta_c = encode_peer_metadata("webapp-7f9c", "shop", WORKLOAD_NAME="webapp")
    meta_s = encode_peer_metadata("catalog-5d4b", "shop")

    # keep-alive: several requests one after another, HEAD and 204 without bodies
    c = Conversation().handshake()
    c.send(
        True,
        http_request(
            "GET",
            "/one",
            x_request_id="id-1",
            x_forwarded_for="1.2.3.4",
            x_b3_traceid="a" * 32,
            x_b3_spanid="b" * 16,
            x_b3_sampled="1",
        ),
    )
    c.send(False, http_response(200, b"x" * 3000), mss=1000)
    c.send(True, http_request("POST", "/two", body=b"form=data", x_request_id="id-2"))
    c.send(False, http_response(201, b"created", chunked=True))
    c.send(True, http_request("HEAD", "/three", x_request_id="id-3"))
    c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n")
    c.send(True, http_request("DELETE", "/four", x_request_id="id-4", x_envoy_peer_metadata=meta_c))
    c.send(
        False, http_response(204, b"", x_envoy_peer_metadata=meta_s).replace(b"Content-Length: 0\r\n", b"")
    )
    out["keepalive"] = write(d / "keepalive.pcap", c.close().packets)

    # pipelined: three requests in one segment, answers (one after 100 Continue) in one segment
    c = Conversation(cport=40001).handshake()
    c.send(
        True,
        http_request("GET", "/p1", x_request_id="p-1")
        + http_request("GET", "/p2", x_request_id="p-2")
        + http_request("PUT", "/p3", body=b"12345", x_request_id="p-3"),
    )
    c.send(
        False,
        http_response(200, b"first")
        + http_response(404, b"nope", chunked=True)
        + b"HTTP/1.1 100 Continue\r\n\r\n"
        + http_response(200, b"third"),
    )
    out["pipelined"] = write(d / "pipelined.pcap", c.close().packets)

    # retransmissions (exact and overlapping) and out-of-order segments
    c = Conversation(cport=40002).handshake()
    segs = c.send(True, http_request("GET", "/retrans", x_request_id="r-1", x_pad="p" * 200), mss=40)
    c.packets.insert(c.packets.index(segs[2]) + 1, segs[2].copy())  # exact retransmission
    overl = segs[3].copy()
    overl[TCP].seq -= 10
    overl[Raw].load = bytes(segs[2][Raw].load)[-10:] + bytes(segs[3][Raw].load)
    c.packets.insert(c.packets.index(segs[3]) + 1, overl)
    i, j = c.packets.index(segs[4]), c.packets.index(segs[5])
    c.packets[i], c.packets[j] = c.packets[j], c.packets[i]  # out of order
    c.send(False, http_response(200, b"ok"))
    out["retrans"] = write(d / "retrans.pcap", c.close().packets)

    # lost segments: one inside a framed body (framing survives), one holding a request head (resync)
    c = Conversation(cport=40003).handshake()
    c.send(True, http_request("GET", "/big", x_request_id="l-1"))
    body = c.send(False, http_response(200, b"y" * 5000), mss=1000)
    c.packets.remove(body[2])
    c.send(True, http_request("GET", "/after-body-gap", x_request_id="l-2"))
    c.send(False, http_response(200, b"fine"))
    lost = c.send(True, http_request("GET", "/lost-head", x_request_id="l-3"))
    c.packets.remove(lost[0])
    c.send(True, http_request("GET", "/after-head-gap", x_request_id="l-4"))
    c.send(False, http_response(200, b"for l-3") + http_response(200, b"for l-4"))
    out["lost"] = write(d / "lost.pcap", c.close().packets)

    # mid-stream: no handshake, the capture starts inside a response body
    c = Conversation(cport=40004)
    c.send(True, http_request("GET", "/before-capture", x_request_id="m-0"))
    c.send(False, http_response(200, b"z" * 2000), mss=700)
    c.send(True, http_request("GET", "/seen", x_request_id="m-1"))
    c.send(False, http_response(200, b"whole"))
    c.close()
    out["midstream"] = write(d / "midstream.pcap", c.packets[4:])

    # TLS: the ClientHello spread over many small segments; sequence numbers wrapping past 2**32
    hello, server_flight = tls_hellos("shop.example.com")
    c = Conversation(cport=40005, sport=443, cisn=2**32 - 300, sisn=2**32 - 20).handshake()
    c.send(True, hello, mss=90)
    c.send(False, server_flight, mss=300)
    c.send(True, b"\x17\x03\x03\x00\x20" + b"e" * 32)
    out["tls_split"] = write(d / "tls_split.pcap", c.close().packets)

    # IPv6, reset before the answer
    c = Conversation(client="fd00::1", server="fd00::2", cport=40006, sport=8080).handshake()
    c.send(True, http_request("GET", "/v6", host="[fd00::2]:8080", x_request_id="v6-1"))
    c.send(False, http_response(200, b"six"))
    c.send(True, http_request("GET", "/reset", host="[fd00::2]:8080", x_request_id="v6-2"))
    c.tcp(False, "R", c.sseq, 0)
    out["ipv6_rst"] = write(d / "ipv6_rst.pcap", c.packets)

    # several interfaces in one pcapng: the same request before and after a DNAT
    a = Conversation(client="172.18.0.1", server="172.18.0.2", cport=57536, sport=30000).handshake()
    a.send(True, http_request("GET", "/nodeport", x_request_id="n-1"))
    a.send(False, http_response(200, b"np"))
    b = Conversation(
        client="172.18.0.1", server="10.10.0.6", cport=57536, sport=8080, t=T0 + 0.0005
    ).handshake()
    b.send(True, http_request("GET", "/nodeport", x_request_id="n-1"))
    b.send(False, http_response(200, b"np"))
    out["multi_iface"] = write_pcapng(
        d / "multi_iface.pcapng", {"eth0": a.close().packets, "veth-gw": b.close().packets}
    )

    # frames cut by a small snaplen in the middle of a response body
    c = Conversation(cport=40007).handshake()
    c.send(True, http_request("GET", "/cut", x_request_id="s-1"))
    c.send(False, http_response(200, b"w" * 3000), mss=1400)
    c.send(True, http_request("GET", "/cut2", x_request_id="s-2"))
    c.send(False, http_response(200, b"small"))
    frames = []
    for p in c.close().packets:
        raw = bytes(frame(p, "ether"))
        frames.append((float(p.time), raw[:400], len(raw)))
    out["snaplen"] = write_frames(d / "snaplen.pcap", frames, snaplen=400)
    return out
