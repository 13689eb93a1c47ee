"""The struct-level IPv4/TCP cut: inside the capture reader's loop (pcap, fixed-length link layers)
and frame by frame in the dpkt backend (everything else) it gives the same segments, shard by shard,
on every corner case and on frames made odd on purpose."""

from __future__ import annotations

import pytest
from meshscope.decoders.backends.dpkt_backend import DpktBackend
from meshscope.decoders.capture_file import ReadStats
from scapy.layers.inet import IP, TCP, IPOption_NOP
from scapy.packet import Raw

from tests.decoders.capture_builders import LINKS, T0, Conversation, corner_cases, frame, write, write_frames


def _segments(path, cut_in_reader: bool, shard=None) -> tuple[list, list[str]]:
    backend = DpktBackend()
    backend.cut_in_reader = cut_in_reader
    backend.shard = shard
    stats = ReadStats()
    return list(backend.segments(path, stats, None)), stats.damage


def _odd_frames(link: str) -> list[tuple[float, bytes, int]]:
    """IPv4/TCP frames the reader's cut must pass over or get exactly right."""
    base = IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=40100, dport=80, flags="PA", seq=7, ack=9)
    packets = [
        base / Raw(b"GET /plain HTTP/1.1\r\n\r\n"),
        IP(src="10.1.0.1", dst="10.1.0.2", options=[IPOption_NOP()] * 4)
        / TCP(sport=40100, dport=80, flags="PA", seq=30, ack=9) / Raw(b"with IPv4 options"),
        IP(src="10.1.0.1", dst="10.1.0.2", len=0) / TCP(sport=40101, dport=80, flags="PA", seq=1, ack=1)
        / Raw(b"total length 0, as TSO captures show it"),
        IP(src="10.1.0.1", dst="10.1.0.2", flags="MF") / TCP(sport=40102, dport=80, flags="PA")
        / Raw(b"frag"),
        IP(src="10.1.0.1", dst="10.1.0.2", frag=5) / Raw(b"a later fragment, no TCP header at all"),
        IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=40103, dport=80, flags="A", seq=5, ack=5),
        IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=40103, dport=80, flags="FA", seq=5, ack=5),
        IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=40104, dport=80, flags="S", seq=5, dataofs=3),
        IP(src="10.1.0.1", dst="10.1.0.2", proto=17) / Raw(b"\x00\x35\x00\x35" + b"u" * 30),
        IP(src="10.1.0.2", dst="10.1.0.1") / TCP(sport=80, dport=40105, flags="PA", seq=3, ack=4)
        / Raw(b"HTTP/1.1 200 OK\r\n\r\n" + b"b" * 200),
    ]
    out = []
    for i, p in enumerate(packets):
        raw = bytes(frame(p, link))
        out.append((T0 + i / 1000, raw, len(raw)))
    raw = bytes(frame(packets[-1], link))
    out.append((T0 + 1, raw[:len(raw) - 150], len(raw)))  # cut by the snaplen inside the payload
    out.append((T0 + 2, raw[:50], len(raw)))  # cut inside the TCP header (Ethernet: 16 of its bytes)
    return out


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    d = tmp_path_factory.mktemp("cut")
    paths = list(corner_cases(d).values())
    for link in LINKS:
        c = Conversation(cport=41000).handshake()
        c.send(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        paths.append(write(d / f"{link}.pcap", c.close().packets, link))
    for link, linktype in (("ether", 1), ("sll", 113), ("sll2", 276), ("raw", 101)):
        paths.append(write_frames(d / f"odd_{link}.pcap", _odd_frames(link), linktype))
    return paths


@pytest.mark.parametrize("shard", [None, (0, 2), (1, 2), (2, 3)])
def test_the_readers_cut_gives_what_the_per_frame_cut_gives(captures, shard):
    for path in captures:
        in_reader = _segments(path, True, shard)
        per_frame = _segments(path, False, shard)
        assert in_reader == per_frame, path.name


def test_the_shards_split_the_segments_between_them(captures):
    for path in captures:
        whole = _segments(path, True)[0]
        parts = [s for i in range(3) for s in _segments(path, True, (i, 3))[0]]
        assert sorted(parts, key=repr) == sorted(whole, key=repr), path.name


def test_linux_even_client_ports_still_split_evenly():
    """Linux gives connect() even ephemeral ports: with an even server port (8443, 10000) the ports'
    parity is the same for every connection, so a shard rule on bit 0 sent them all to one worker
    (a real TLS capture decoded on one core)."""
    from meshscope.decoders.tcp_cut import TcpCut

    for server_port in (8443, 10000, 443, 8081):
        for count in (2, 3):
            shares = [sum(TcpCut((i, count)).mine(port, server_port) for port in range(32768, 60999, 2))
                      for i in range(count)]
            assert min(shares) > 0.9 * max(shares), (server_port, count, shares)


def test_odd_frames_are_cut_as_tcp_says(captures):
    path = next(p for p in captures if p.name == "odd_ether.pcap")
    segments, damage = _segments(path, True)
    by_port = {}
    for s in segments:
        by_port.setdefault(s[2] if s[2] != 80 else s[4], []).append(s)
    assert [s[8] for s in by_port[40100]] == [b"GET /plain HTTP/1.1\r\n\r\n", b"with IPv4 options"]
    assert by_port[40101][0][8] == b"total length 0, as TSO captures show it"
    assert 40102 not in by_port  # a fragment: TCP is not reassembled from fragments
    assert [s[7] for s in by_port[40103]] == [0x11]  # the pure ACK dropped, the FIN kept
    body = by_port[40105]
    assert len(body) == 2 and body[0][9] == 0
    assert len(body[1][8]) == len(body[0][8]) - 150 and body[1][9] == 150  # what the snaplen cut
    # the SYN claiming a 12-byte TCP header, and the frame cut inside its TCP header
    assert damage == ["2 packets dpkt could not dissect"]
