"""Scapy-crafted captures for exact stitching corner cases.

A `Conversation` is one TCP connection as abstract segments (time, direction, flags, payload, with
real sequence numbers from given ISNs); `view()` renders it as packets for one 5-tuple as seen at
one capture point (before or after a NAT, on some interface), so the same connection can be put
on both sides of a NAT, or twice on two interfaces as `tcpdump -i any` records a routed packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import CookedLinuxV2, Ether
from scapy.layers.tls.extensions import ProtocolName, ServerName, TLS_Ext_ALPN, TLS_Ext_ServerName
from scapy.layers.tls.handshake import TLSClientHello
from scapy.layers.tls.record import TLS
from scapy.utils import wrpcap

MSS = 1400


@dataclass
class Segment:
    t: float
    from_client: bool
    flags: str
    payload: bytes = b""
    seq: int = 0
    ack: int = 0


@dataclass
class Conversation:
    """One TCP connection's segments with sequence numbers that follow from the ISNs."""

    client_isn: int
    server_isn: int
    t: float
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cseq, self.sseq = self.client_isn + 1, self.server_isn + 1
        c, s, t = self.client_isn, self.server_isn, self.t
        self.segments += [Segment(t, True, "S", seq=c), Segment(t + 0.0002, False, "SA", seq=s, ack=c + 1),
                          Segment(t + 0.0003, True, "A", seq=c + 1, ack=s + 1)]
        self.now = t + 0.0003

    def send(self, from_client: bool, data: bytes, after: float = 0.001) -> Conversation:
        """Data from one side (split at the MSS), acknowledged by the other."""
        self.now += after
        for i in range(0, len(data), MSS):
            chunk = data[i:i + MSS]
            if from_client:
                self.segments.append(Segment(self.now, True, "PA", chunk, self.cseq, self.sseq))
                self.cseq += len(chunk)
                self.segments.append(Segment(self.now + 0.00005, False, "A", seq=self.sseq, ack=self.cseq))
            else:
                self.segments.append(Segment(self.now, False, "PA", chunk, self.sseq, self.cseq))
                self.sseq += len(chunk)
                self.segments.append(Segment(self.now + 0.00005, True, "A", seq=self.cseq, ack=self.sseq))
        return self

    def exchange(self, request: bytes, response: bytes, took: float = 0.01,
                 after: float = 0.001) -> Conversation:
        return self.send(True, request, after).send(False, response, took)

    def wait(self, seconds: float) -> Conversation:
        self.now += seconds
        return self

    def close(self, after: float = 0.001) -> Conversation:
        self.now += after
        self.segments += [Segment(self.now, True, "FA", seq=self.cseq, ack=self.sseq),
                          Segment(self.now + 0.0001, False, "FA", seq=self.sseq, ack=self.cseq + 1),
                          Segment(self.now + 0.0002, True, "A", seq=self.cseq + 1, ack=self.sseq + 1)]
        self.cseq += 1
        self.sseq += 1
        return self


def _split(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def view(conv: Conversation, client: str, server: str, *, delay: float = 0.0, ifindex: int | None = None,
         handshake: bool = True) -> list:
    """Packets of the conversation between these endpoints, `delay` seconds later than its clock;
    with ifindex, as Linux cooked v2 frames (`tcpdump -i any`), else Ethernet. Without
    handshake, the capture started after the connection opened."""
    (cip, cport), (sip, sport) = _split(client), _split(server)
    out = []
    for s in conv.segments if handshake else conv.segments[3:]:
        ip = IP(src=cip, dst=sip) if s.from_client else IP(src=sip, dst=cip)
        tcp = TCP(sport=cport if s.from_client else sport, dport=sport if s.from_client else cport,
                  flags=s.flags, seq=s.seq % 2**32, ack=s.ack % 2**32 if "A" in s.flags else 0, window=65535)
        link = CookedLinuxV2(ifindex=ifindex, proto=0x0800, pkttype=0, lladdrlen=6) if ifindex is not None \
            else Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        pkt = link / ip / tcp / s.payload if s.payload else link / ip / tcp
        pkt.time = s.t + delay
        out.append(pkt)
    return out


def write(path: Path, *views: list) -> Path:
    """Merge views in time order into one pcap."""
    packets = sorted((p for v in views for p in v), key=lambda p: float(p.time))
    wrpcap(str(path), packets)
    return path


def http_request(method: str, uri: str, headers: dict[str, str] | None = None,
                 host: str = "shop.lab") -> bytes:
    lines = [f"{method} {uri} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_response(status: int = 200, body: bytes = b"ok", headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 503: "Service Unavailable"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def client_hello(sni: str, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> bytes:
    """A TLS ClientHello record carrying SNI and ALPN."""
    ext = [TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())]),
           TLS_Ext_ALPN(protocols=[ProtocolName(protocol=p.encode()) for p in alpn])]
    return bytes(TLS(msg=[TLSClientHello(ciphers=[0x1301, 0xC02F], ext=ext)]))
