"""HTTP/1.x: keep-alive and pipelined pairing, bodies skipped by framing, gaps, mid-stream starts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.http1 import HttpStreamParser, parse_head
from meshscope.decoders.read import read_exchanges

from tests.decoders.capture_builders import corner_cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return corner_cases(tmp_path_factory.mktemp("http"))


def exchanges(path):
    stream, report = read_exchanges(path)
    return list(stream), report


def test_keepalive_pairs_requests_with_their_responses(cases):
    exs, report = exchanges(cases["keepalive"])
    got = [
        (e.index, e.method, e.uri, e.status, e.request_id, e.request_body_bytes, e.response_body_bytes)
        for e in exs
    ]
    assert got == [
        (0, "GET", "/one", 200, "id-1", 0, 3000),
        (1, "POST", "/two", 201, "id-2", 9, 7),  # chunked response: 7 body bytes over two chunks
        (2, "HEAD", "/three", 200, "id-3", 0, 0),  # Content-Length 12345 but no body after HEAD
        (3, "DELETE", "/four", 204, "id-4", 0, 0),
    ]
    first = exs[0]
    assert first.host == "svc" and first.http_version == "HTTP/1.1"
    assert first.headers["x-forwarded-for"] == "1.2.3.4"
    assert first.headers["x-b3-traceid"] == "a" * 32 and first.headers["x-b3-sampled"] == "1"
    assert first.response_time > first.request_time
    assert first.conn.handshake_seen and first.conn.client_isn == 1000 and first.conn.server_isn == 5000
    assert first.conn.syn_time < first.request_time
    assert report.exchanges == 4 and report.connections == 1 and not report.damage


def test_peer_metadata_labels_both_ends(cases):
    last = exchanges(cases["keepalive"])[0][-1]
    assert (last.peer_workload, last.peer_namespace) == ("webapp", "shop")
    assert (last.server_peer_workload, last.server_peer_namespace) == ("catalog-5d4b", "shop")


def test_pipelined_requests_and_100_continue(cases):
    exs, _ = exchanges(cases["pipelined"])
    assert [(e.uri, e.status, e.response_body_bytes) for e in exs] == [
        ("/p1", 200, 5),
        ("/p2", 404, 4),
        ("/p3", 200, 5),
    ]
    assert [e.request_id for e in exs] == ["p-1", "p-2", "p-3"]


def test_lost_body_segment_keeps_framing_and_lost_head_resynchronises(cases):
    exs, report = exchanges(cases["lost"])
    assert [(e.uri, e.status, e.response_body_bytes) for e in exs] == [
        ("/big", 200, 5000),
        ("/after-body-gap", 200, 4),
        (None, 200, 7),
        ("/after-head-gap", 200, 7),
    ]
    assert "1000 bytes lost inside a body (framing kept)" in exs[0].damage
    assert "request lost in a gap" in exs[2].damage
    assert exs[1].damage == [] and exs[3].damage == []
    assert any("lost" in d for d in report.damage)


def test_mid_stream_connection_without_handshake(cases):
    exs, _ = exchanges(cases["midstream"])
    assert [(e.uri, e.status, e.request_id) for e in exs] == [("/seen", 200, "m-1")]
    assert exs[0].conn.handshake_seen is False and exs[0].conn.client_isn is None
    assert exs[0].conn.key == ("10.0.0.1", 40004, "10.0.0.2", 80)  # oriented by the request


def test_snaplen_cut_frames_are_gaps_inside_the_body(cases):
    exs, _ = exchanges(cases["snaplen"])
    assert [(e.uri, e.status, e.response_body_bytes) for e in exs] == [("/cut", 200, 3000), ("/cut2", 200, 5)]
    assert exs[0].damage and not exs[1].damage


def test_reset_emits_the_unanswered_request(cases):
    exs, _ = exchanges(cases["ipv6_rst"])
    assert [(e.uri, e.status) for e in exs] == [("/v6", 200), ("/reset", None)]
    assert exs[0].conn.src == "fd00::1"


def _run(is_request: bool, chunks: list[bytes]) -> list:
    events: list = []
    p = HttpStreamParser(
        is_request,
        lambda h: events.append(("head", h.method or h.status)) or True,
        lambda n, ts: events.append(("end", n)),
        lambda t: events.append(("damage", t)),
    )
    for c in chunks:
        p.feed(c, 0.0)
    p.close(0.0)
    return events


STREAM = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    b"HTTP/1.0 200 OK\r\n\r\nuntil the connection closes"
)


def test_response_framings_byte_by_byte_equal_whole():
    whole = _run(False, [STREAM])
    assert whole == [("head", 200), ("end", 5), ("head", 200), ("end", 3), ("head", 200), ("end", 27)]
    assert _run(False, [STREAM[i : i + 1] for i in range(len(STREAM))]) == whole


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_any_split_of_a_stream_gives_the_same_messages(cuts):
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(STREAM[pos : pos + n])
        pos += n
    chunks.append(STREAM[pos:])
    assert _run(False, chunks) == _run(False, [STREAM])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=200), max_size=8), st.booleans(), st.lists(st.integers(0, 500), max_size=3)
)
def test_fuzz_parser_never_raises(chunks, is_request, gaps):
    p = HttpStreamParser(is_request, lambda h: True, lambda n, ts: None, lambda t: None)
    for i, c in enumerate(chunks):
        p.feed(c, 0.0)
        if i < len(gaps):
            p.gap(gaps[i], 0.0)
    p.close(0.0)
    assert len(p.buf) <= 64 * 1024 + 200 * 8


def test_parse_head_rejects_non_http():
    assert parse_head(b"SSH-2.0-OpenSSH", True, 0.0) is None
    assert parse_head(b"HTTP/1.1 abc", False, 0.0) is None
    head = parse_head(b"GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\nHost: h", True, 0.0)
    assert head.headers == {"x-a": "1 folded", "host": "h"}
    twice = parse_head(b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2", True, 0.0)
    assert twice.headers == {"x-forwarded-for": "1.1.1.1, 2.2.2.2"}


def test_protocol_switch_stops_parsing(tmp_path):
    from tests.decoders.capture_builders import Conversation, http_request, write

    c = Conversation().handshake()
    c.send(True, http_request("GET", "/ws", upgrade="websocket", connection="Upgrade", x_request_id="ws-1"))
    c.send(False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    c.send(True, b"\x81\x85GET / HTTP/1.1 not a request")  # WebSocket frames, not HTTP
    c.send(False, b"\x81\x05HTTP/1.1 200")
    exs, report = exchanges(write(tmp_path / "ws.pcap", c.close().packets))
    assert [(e.uri, e.status, e.request_id) for e in exs] == [("/ws", 101, "ws-1")]
    assert not report.damage


_LINE_BYTES = st.sampled_from([b"a", b"Z", b"-", b":", b" ", b"\t", b"\r", b"\xa0", b"\x85", b"\x1f", b"\xc4",
                               b"\xff", b"x-request-id", b"Host", b"HOST", b"1.2.3.4", b"\n", b"\x0b"])


@settings(max_examples=400, deadline=None)
@given(start=st.lists(_LINE_BYTES, max_size=6), lines=st.lists(st.lists(_LINE_BYTES, max_size=8), max_size=8))
def test_parse_head_in_c_reads_as_the_python_loop(start, lines):
    """decoders/_http1_head.c answers for well-formed heads only, and then as the Python loop does:
    folded lines, blank-ended or repeated names, non-ASCII names and stray bytes all included."""
    from meshscope.decoders import http1

    assert http1._fields is not None  # built by scripts/setup.sh
    raw = b"GET / HTTP/1.1" + b"".join(start) + b"".join(b"\r\n" + b"".join(line) for line in lines)
    for is_request in (True, False):
        for head in (raw, b"HTTP/1.1 200 OK" + raw[14:]):
            with_c = parse_head(head, is_request, 1.0)
            saved, http1._fields = http1._fields, None
            try:
                assert with_c == parse_head(head, is_request, 1.0)
            finally:
                http1._fields = saved


def test_parse_head_in_c_takes_well_formed_heads():
    from meshscope.decoders import http1

    fields = http1._fields(b"GET /a HTTP/1.1\r\r\nHost: h:80 \r\nX-Request-Id:\t\xa0id\xa0\r\nEmpty:")
    assert fields == ("GET /a HTTP/1.1", {"host": "h:80", "x-request-id": "id", "empty": ""})
    for other in (b"GET / HTTP/1.1\r\nA: 1\r\n folded", b"GET / HTTP/1.1\r\nA: 1\r\nA: 2",
                  b"GET / HTTP/1.1\r\nA : 1", b"GET / HTTP/1.1\r\n\xc4: 1", b"GET / HTTP/1.1\r\nno colon",
                  b"GET / HTTP/1.1\r\n"):
        assert http1._fields(other) is None, other
