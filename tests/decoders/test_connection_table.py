"""The connection table: bounded in connections and memory (a million one-packet connections),
evicts the least recently active, orients connections without a handshake, and summarises every
connection, also those without HTTP or TLS."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.connection_table import ConnectionTable
from meshscope.decoders.read import read_exchanges
from meshscope.decoders.tcp_flags import SYN

from benchmarks.make_capture import write_syn_flood
from tests.decoders.capture_builders import Conversation, http_request, http_response, write

# The child's own peak (VmHWM): ru_maxrss would also count the pytest process it was forked from,
# because Linux keeps the pre-exec high-water mark in it.
CHILD = """
import json, sys
from meshscope.decoders.read import read_exchanges
stream, report = read_exchanges(sys.argv[1])
n = sum(1 for _ in stream)
status = open("/proc/self/status").read().split("VmHWM:")[1]
rss_mb = int(status.split()[0]) / 1024
print(json.dumps({"exchanges": n, "connections": report.connections, "packets": report.packets,
                  "damage": report.damage, "rss_mb": rss_mb}))
"""


@pytest.mark.slow
def test_a_million_one_packet_connections_stay_bounded(tmp_path):
    path = tmp_path / "flood.pcap"
    write_syn_flood(path, 1_000_000)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=240, check=True
    )
    r = json.loads(out.stdout)
    assert r["packets"] == 1_000_000 and r["connections"] == 1_000_000 and r["exchanges"] == 0
    assert any("evicted" in d for d in r["damage"])
    assert r["rss_mb"] < 300, r


def test_eviction_keeps_active_connections_and_emits_the_evicted(tmp_path):
    table = ConnectionTable("t", max_connections=3)
    req = http_request("GET", "/busy")
    table.segment(1.0, "10.0.0.1", 1000, "10.0.0.2", 80, 0, 0, SYN, b"")
    table.segment(1.1, "10.0.0.1", 1000, "10.0.0.2", 80, 1, 0, 0x18, req)  # waiting for a response
    for i in range(5):  # newer idle connections push the table over its bound
        table.segment(2.0 + i, "10.0.0.9", 2000 + i, "10.0.0.2", 80, 0, 0, SYN, b"")
    assert len(table.conns) == 3 and table.evicted == 3
    assert [e.uri for e in table.ready] == ["/busy"]
    assert "connection evicted" in table.ready[0].damage[0]


def test_connection_summaries_include_non_http(tmp_path):
    c = Conversation(sport=5432).handshake()
    c.send(True, b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # a PostgreSQL SSLRequest: neither HTTP nor TLS
    c.send(False, b"N")
    d = Conversation(cport=40100).handshake()
    d.send(True, http_request("GET", "/x"))
    d.send(False, http_response(200))
    summaries = []
    stream, _ = read_exchanges(
        write(tmp_path / "mixed.pcap", c.close().packets + d.close().packets), on_connection=summaries.append
    )
    assert [e.uri for e in stream] == ["/x"]
    by_port = {s.conn.dport: s for s in summaries}
    assert by_port[5432].protocol == "other" and by_port[5432].client_bytes == 8
    assert by_port[5432].server_bytes == 1 and by_port[5432].closed == "fin"
    assert by_port[80].protocol == "http" and by_port[80].exchanges == 1


def test_orientation_without_handshake_by_port_when_bytes_say_nothing():
    table = ConnectionTable("t")
    table.segment(1.0, "10.0.0.2", 443, "10.0.0.1", 50000, 7, 0, 0x18, b"\x17\x03\x03\x00\x01x")
    (tc,) = table.conns.values()
    assert tc.conn.key == ("10.0.0.1", 50000, "10.0.0.2", 443)


SEGMENT = st.tuples(
    st.sampled_from(
        [
            ("10.0.0.1", 1000, "10.0.0.2", 80),
            ("10.0.0.2", 80, "10.0.0.1", 1000),
            ("10.0.0.3", 443, "10.0.0.1", 2000),
        ]
    ),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0x3F),
    st.one_of(
        st.binary(max_size=120),
        st.sampled_from(
            [
                http_request("GET", "/f"),
                http_response(200),
                b"\x16\x03\x01\x00\x10\x01\x00\x00\x0c",
                b"HTTP/1.1 1",
            ]
        ),
    ),
    st.integers(0, 3000),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(SEGMENT, max_size=25), st.integers(1, 3))
def test_fuzz_table_with_arbitrary_segments(segments, max_connections):
    table = ConnectionTable("fuzz", max_connections=max_connections)
    for i, ((src, sport, dst, dport), seq, ack, flags, payload, missing) in enumerate(segments):
        table.segment(float(i), src, sport, dst, dport, seq, ack, flags, payload, missing % 7)
    table.finish()
    assert not table.conns and all(e.conn.capture == "fuzz" for e in table.ready)


def test_bytes_held_across_connections_are_bounded():
    """Heads that never end, on many connections: the table sheds the oldest, not memory."""
    table = ConnectionTable("t", max_buffered=1 << 20)
    endless = b"GET / HTTP/1.1\r\nX-Junk: " + b"j" * 1400
    for i in range(2000):
        table.segment(float(i), "10.0.0.1", 1024 + i, "10.0.0.2", 80, 100, 0, 0x18, endless)
        assert table.buffered <= (1 << 20)
    assert table.evicted > 1000 and len(table.conns) < 1000
    assert sum(tc.buffered for tc in table.conns.values()) == table.buffered


def test_exchange_ids_hashed_once_per_connection_are_those_of_compute_id(tmp_path):
    # the analyzers hash a connection's part of the id once and finish a copy per exchange
    # (Analyzer.new_exchange): every id must be what Exchange.compute_id gives, with and without a
    # handshake (no ISN, no SYN time), over several exchanges of one connection
    import dataclasses

    with_syn = Conversation(cport=40200).handshake()
    mid = Conversation(cport=40201)
    for c in (with_syn, mid):
        for i in range(3):
            c.send(True, http_request("GET", f"/item/{i}"))
            c.send(False, http_response(200))
    stream, _ = read_exchanges(write(tmp_path / "ids.pcap", with_syn.close().packets + mid.close().packets))
    exchanges = [e for e in stream if e.exchange_type == "http"]
    assert len(exchanges) == 6
    assert {e.conn.client_isn is None for e in exchanges} == {True, False}
    for e in exchanges:
        assert e.id == dataclasses.replace(e, id="").id  # recomputed by compute_id
    assert len({e.id for e in exchanges}) == 6
