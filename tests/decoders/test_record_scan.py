"""The capture reader's skip test in C (decoders/_record_scan.c) against the Python loop it speeds up:
the same segments, records, counts, damage and offsets, whichever reads — on the decoder benchmark's
traffic, on every corner-case capture, and on crafted record streams of every frame kind, link
layer, byte order, window boundary and damage."""

from __future__ import annotations

import importlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshscope.decoders import capture_file
from meshscope.decoders.capture_file import ReadStats, read_capture
from meshscope.decoders.tcp_cut import TcpCut

from benchmarks.make_capture import write_http_tls
from tests.decoders.capture_builders import corner_cases

SHARDS = [None, (0, 2), (1, 2), (2, 3)]


def _read(path, shard, scan):
    saved = capture_file._scan
    capture_file._scan = scan
    try:
        stats, cut = ReadStats(), TcpCut(shard)
        items = list(read_capture(path, stats, None, cut))
    finally:
        capture_file._scan = saved
    return items, (stats.packets, stats.bytes, stats.truncated, stats.damage, stats.damage_count,
                   stats.offset, cut.undecodable)


def _agree(path) -> int:
    """Both ways read the same, for each shard; returns what the C way read unsharded."""
    n = 0
    for shard in SHARDS:
        with_c = _read(path, shard, capture_file._scan)
        assert with_c == _read(path, shard, None), shard
        n = n or len(with_c[0])
    return n


def test_the_extension_is_built():
    """scripts/setup.sh builds it (pip install -e .): reading without it is the slow path."""
    module = importlib.import_module("meshscope.decoders._record_scan")
    assert capture_file._scan is module.scan


def test_benchmark_traffic_across_windows(tmp_path):
    path = tmp_path / "http_tls.pcap"
    write_http_tls(path, 12_000)  # ~2.5 MB: records cross the reader's 1 MB windows
    assert _agree(path) > 6_000


def test_corner_case_captures(tmp_path):
    read = {name: _agree(path) for name, path in corner_cases(tmp_path).items() if path.suffix == ".pcap"}
    assert len(read) >= 8 and all(read.values()), read


def _frame(kind: str, sport: int, dport: int, flags: int, payload: bytes, link: int) -> bytes:
    """One frame of the kinds the skip test tells apart."""
    ihl = 6 if kind == "options" else 5
    doff = 4 if kind == "bad-tcp" else 5  # a data offset below 20 bytes: undecodable
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, doff << 4, flags, 65535, 0, 0) + payload
    frag = 0x2000 if kind == "fragment" else 0x4000
    proto = 17 if kind == "udp" else 6
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(tcp), 0, frag, 64, proto, 0,
                     b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02") + bytes((ihl - 5) * 4) + tcp
    if kind == "short":
        ip = ip[:30]
    elif kind == "short-total":  # the IP total length leaves no room for a TCP header
        ip = ip[:2] + struct.pack("!H", 30) + ip[4:]
    if link == 1:
        head = bytes(12) + (b"\x86\xdd" if kind == "ipv6-ethertype" else b"\x08\x00")
    elif link == 113:
        head = bytes(14) + b"\x08\x00"
    else:  # SLL2: protocol, reserved, ifindex, ...
        head = b"\x08\x00" + bytes(2) + struct.pack("!I", 3) + bytes(12)
    return head + ip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    link=st.sampled_from([1, 113, 276]),
    order=st.sampled_from(["<", ">"]),
    frames=st.lists(st.tuples(
        st.sampled_from(["tcp", "tcp", "tcp", "options", "fragment", "udp", "short", "ipv6-ethertype",
                         "bad-tcp", "short-total"]),
        st.integers(0, 65535), st.integers(0, 65535), st.sampled_from([0x10, 0x18, 0x02, 0x12, 0x11, 0x04]),
        st.binary(max_size=40)), max_size=40),
    cut=st.integers(0, 3000),
    absurd=st.booleans(),
)
def test_crafted_records(tmp_path, link, order, frames, cut, absurd):
    out = [struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link)]
    for i, (kind, sport, dport, flags, payload) in enumerate(frames):
        data = _frame(kind, sport, dport, flags, payload, link)
        out.append(struct.pack(order + "IIII", 1_700_000_000 + i, i, len(data), len(data) + (i % 3)) + data)
    if absurd:
        out.append(struct.pack(order + "IIII", 1, 2, 5 << 20, 5 << 20))
    raw = b"".join(out)
    path = tmp_path / "crafted.pcap"
    path.write_bytes(raw[:max(24, len(raw) - cut)] if cut % 2 else raw)  # sometimes cut mid-record
    _agree(path)


@pytest.mark.parametrize("order", ["<", ">"])
def test_scan_stops_where_the_window_ends(order):
    """A record not wholly in the window is left to the Python loop (which refills it); the Segments
    before it are TcpCut's."""
    data = _frame("tcp", 1234, 80, 0x18, b"GET / HTTP/1.1\r\n\r\n", 1)
    rec = struct.pack(order + "IIII", 1, 500_000, len(data), len(data) + 3) + data
    buf = rec * 3
    big = order == ">"
    items, pos, packets, nbytes, bad, whole = capture_file._scan(buf, 0, len(buf) - 1, big, 12, 14, -1, 0, 1,
                                                                 1e6, {}, {})
    expected = TcpCut().cut(data, 14, 34, len(data), len(data) - 14, 1.5, 3, None)
    assert items == [expected, expected] and expected[8] == b"GET / HTTP/1.1\r\n\r\n"
    assert (pos, packets, nbytes, bad, whole) == (2 * len(rec), 2, 2 * len(data), 0, 0)
