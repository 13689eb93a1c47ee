"""DNS message parsing: decoders.dns_message.parse_dns against dpkt.dns.DNS (the peer) on the same
messages (queries, NXDOMAIN answers, answers with A/AAAA/CNAME records and name compression),
measured in the same run; plus QUIC client Initials opened per second (RFC 9001 A.2's packet).

    .venv/bin/python benchmarks/bench_dns.py [--messages 50000]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dpkt
from scapy.layers.dns import DNS, DNSQR, DNSRR

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meshscope.decoders.dns_message import parse_dns  # noqa: E402
from meshscope.decoders.quic_initial import V1, InitialKeys, crypto_frames, long_packets, open_initial  # noqa: E402

from tests.decoders.quic_vectors import CLIENT_INITIAL, DCID  # noqa: E402


def messages() -> list[bytes]:
    name = "catalog.default.svc.cluster.local"
    return [
        bytes(DNS(id=1, rd=1, qd=DNSQR(qname=name))),
        bytes(DNS(id=2, qr=1, rcode=3, qd=DNSQR(qname="catalog.default.web.svc.cluster.local"))),
        bytes(DNS(id=3, qr=1, qd=DNSQR(qname=name), an=DNSRR(rrname=name, rdata="10.0.0.8"))),
        bytes(DNS(id=4, qr=1, qd=DNSQR(qname="www.example.com"),
                  an=[DNSRR(rrname="www.example.com", type="CNAME", rdata="edge.example.net"),
                      DNSRR(rrname="edge.example.net", rdata="192.0.2.1"),
                      DNSRR(rrname="edge.example.net", rdata="192.0.2.2")])),
        bytes(DNS(id=5, qr=1, qd=DNSQR(qname=name, qtype="AAAA"),
                  an=DNSRR(rrname=name, type="AAAA", rdata="2001:db8::8"))),
    ]


def timed(fn, msgs: list[bytes], n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(msgs[i % len(msgs)])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=50_000)
    args = ap.parse_args()
    msgs = messages()
    for m in msgs:  # the same reading from both
        ours, theirs = parse_dns(m), dpkt.dns.DNS(m)
        assert ours.id == theirs.id and ours.name == theirs.qd[0].name and len(ours.answers) == len(theirs.an)
    n = args.messages
    ours = min(timed(parse_dns, msgs, n) for _ in range(3))
    peer = min(timed(dpkt.dns.DNS, msgs, n) for _ in range(3))
    print(f"DNS messages: parse_dns {n / ours:,.0f}/s, dpkt.dns {n / peer:,.0f}/s; "
          f"ratio ours/dpkt {peer / ours:.2f}x")
    pkt = next(long_packets(CLIENT_INITIAL))
    k = 2000
    t = time.perf_counter()
    for _ in range(k):
        crypto_frames(open_initial(CLIENT_INITIAL, pkt, InitialKeys.derive(DCID, V1)))
    el = time.perf_counter() - t
    print(f"QUIC client Initials (keys derived each time, opened, frames read): {k / el:,.0f}/s")


if __name__ == "__main__":
    main()
