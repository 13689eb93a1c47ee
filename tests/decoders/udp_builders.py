"""Scapy-crafted DNS conversations and QUIC datagrams for the UDP decoder tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.packet import Packet

T0 = 1_700_000_000.0


@dataclass
class Resolver:
    """A client's resolver and its DNS server: queries and answers at chosen times."""

    client: str = "10.1.0.5"
    server: str = "10.96.0.10"
    cport: int = 41000
    packets: list[Packet] = field(default_factory=list)

    def _add(self, p: Packet, t: float) -> Packet:
        p.time = T0 + t
        self.packets.append(p)
        return p

    def query(self, t: float, qid: int, name: str, qtype: str = "A", cport: int | None = None) -> Packet:
        return self._add(IP(src=self.client, dst=self.server)
                         / UDP(sport=cport or self.cport, dport=53)
                         / DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=qtype)), t)

    def answer(self, t: float, qid: int, name: str, rcode: int = 0, addrs: tuple[str, ...] = (),
               qtype: str = "A", cport: int | None = None) -> Packet:
        an = [DNSRR(rrname=name, type=qtype, rdata=a, ttl=30) for a in addrs]
        return self._add(IP(src=self.server, dst=self.client)
                         / UDP(sport=53, dport=cport or self.cport)
                         / DNS(id=qid, qr=1, rd=1, ra=1, rcode=rcode, qd=DNSQR(qname=name, qtype=qtype),
                               an=an), t)


def datagram(t: float, src: str, sport: int, dst: str, dport: int, payload: bytes) -> Packet:
    p = IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload
    p.time = T0 + t
    return p
