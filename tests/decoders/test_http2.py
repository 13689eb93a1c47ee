"""HTTP/2 and gRPC in crafted captures: real frames and HPACK from python-hyper's h2 endpoints, and
hand-laid frames for the corner cases and the bad input (decoders.http2_analyzer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshscope.decoders.http2_frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
)
from meshscope.decoders.read import read_exchanges

from tests.decoders.capture_builders import Conversation, http_request, write
from tests.decoders.h2_builders import H2Pair, frame, grpc_frame

GRPC_CHECK = [(":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
              (":authority", "health:50051"), ("content-type", "application/grpc"), ("te", "trailers"),
              ("grpc-timeout", "250m"), ("x-request-id", "4f7e1c2a-0000-4000-8000-000000000001")]


def get(path: str, rid: str = "r-1", **extra: str) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "svc:8080"),
            ("x-request-id", rid), ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            *[(k.replace("_", "-"), v) for k, v in extra.items()]]


def decode(tmp_path: Path, packets, name: str = "h2.pcap", backend: str = "dpkt"):
    stream, report = read_exchanges(write(tmp_path / name, packets), backend)
    exchanges = sorted(stream, key=lambda e: (e.stream_id or 0, e.index))
    return exchanges, report


def test_multiplexed_streams_interleave_and_each_is_an_exchange(tmp_path):
    p = H2Pair(mss=200).start()
    sids = [p.request(get(f"/item/{i}", rid=f"rid-{i}")) for i in range(5)]
    for sid in reversed(sids):  # answered in the other order, bodies interleaved across segments
        p.server.send_headers(sid, [(":status", str(200 + sid)), ("content-type", "text/plain")])
    for round_ in range(3):
        for sid in sids:
            p.server.send_data(sid, bytes([65 + sid]) * 300, end_stream=round_ == 2)
    p.flush()
    p.conv.close()
    exchanges, report = decode(tmp_path, p.conv.packets)
    assert [e.stream_id for e in exchanges] == [1, 3, 5, 7, 9]
    for i, e in enumerate(exchanges):
        assert (e.protocol, e.exchange_type, e.http_version) == ("h2", "http", "HTTP/2")
        assert (e.method, e.uri, e.host, e.h2.scheme) == ("GET", f"/item/{i}", "svc:8080", "http")
        assert e.request_id == f"rid-{i}" and e.headers["x-b3-traceid"].startswith("80f1")
        assert e.status == 200 + e.stream_id and e.response_body_bytes == 900
        assert e.h2.ended == "END_STREAM" and e.index == e.stream_id and not e.damage
        assert e.request_time <= e.response_time <= e.h2.end_time
    assert report.damage == [] and report.exchanges == 5


def test_grpc_call_with_trailers_messages_and_compressed_flag(tmp_path):
    p = H2Pair().start()
    sid = p.request(GRPC_CHECK, grpc_frame(b"\x0a\x07service") + grpc_frame(b"x" * 40, compressed=True))
    p.respond(sid, [(":status", "200"), ("content-type", "application/grpc+proto")],
              grpc_frame(b"\x08\x01"), trailers=[("grpc-status", "0"), ("grpc-message", "fine%20%E2%9C%93")])
    p.conv.close()
    (e,), _ = decode(tmp_path, p.conv.packets)
    assert (e.protocol, e.grpc.service, e.grpc.method) == ("grpc", "grpc.health.v1.Health", "Check")
    assert (e.grpc.status, e.grpc.status_code, e.grpc.message) == ("OK", 0, "fine ✓")
    assert e.grpc.timeout == "250m" and e.grpc.compressed
    assert (e.grpc.request_messages, e.grpc.request_sizes) == (2, [9, 40])
    assert (e.grpc.response_messages, e.grpc.response_sizes) == (1, [2])
    assert e.h2.trailers == {"grpc-status": "0", "grpc-message": "fine%20%E2%9C%93"}
    assert e.request_body_bytes == 14 + 45 and e.status == 200


def test_server_preface_first_as_grpc_servers_send_it(tmp_path):
    p = H2Pair().start(server_first=True)
    sid = p.request(GRPC_CHECK, grpc_frame(b""))
    p.respond(sid, [(":status", "200"), ("content-type", "application/grpc")], grpc_frame(b"\x08\x01"),
              trailers=[("grpc-status", "0")])
    p.conv.close()
    assert p.conv.packets[3].sport == 8080  # the first payload is the server's SETTINGS
    (e,), report = decode(tmp_path, p.conv.packets)
    assert (e.grpc.status, e.request_id, e.stream_id) == ("OK", GRPC_CHECK[-1][1], 1)
    assert report.damage == []


def test_grpc_trailers_only_response_carries_the_status(tmp_path):
    p = H2Pair().start()
    sid = p.request(GRPC_CHECK, grpc_frame(b""))
    p.respond(sid, [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "14"),
                    ("grpc-message", "upstream connect error")])
    p.conv.close()
    (e,), _ = decode(tmp_path, p.conv.packets)
    assert (e.grpc.status, e.grpc.status_code) == ("UNAVAILABLE", 14)
    assert e.grpc.message == "upstream connect error"
    assert e.grpc.response_messages == 0 and e.h2.trailers == {} and e.h2.ended == "END_STREAM"


def test_continuation_padding_and_priority(tmp_path):
    """A request block split over HEADERS (padded, with priority) and two CONTINUATIONs; a padded DATA."""
    conv = Conversation(sport=8080).handshake()
    enc_c, enc_s = Encoder(), Encoder()
    conv.send(True, PREFACE + frame(SETTINGS, 0, 0))
    block = enc_c.encode(get("/split", rid="cont-1", x_long="v" * 300))
    a, b, c = block[:10], block[10:200], block[200:]
    priority = b"\x00\x00\x00\x00\x10"  # depends on stream 0, weight 16
    flags = PADDED | PRIORITY_FLAG | END_STREAM
    conv.send(True, frame(HEADERS, flags, 1, bytes([7]) + priority + a + b"\x00" * 7)
              + frame(CONTINUATION, 0, 1, b) + frame(CONTINUATION, END_HEADERS, 1, c))
    conv.send(False, frame(SETTINGS, 0, 0)
              + frame(HEADERS, END_HEADERS, 1, enc_s.encode([(":status", "404")]))
              + frame(DATA, PADDED | END_STREAM, 1, bytes([20]) + b"not here" + b"\x00" * 20))
    conv.close()
    (e,), report = decode(tmp_path, conv.packets)
    assert (e.uri, e.request_id, e.headers["x-long"]) == ("/split", "cont-1", "v" * 300)
    assert e.status == 404 and e.response_body_bytes == 8 and e.h2.ended == "END_STREAM"
    assert not e.damage and report.damage == []


def test_reset_mid_response_and_goaway_with_streams_in_flight(tmp_path):
    p = H2Pair().start()
    s1 = p.request(get("/slow"))
    s3 = p.request(get("/also-slow"))
    s5 = p.request(get("/never"))
    p.server.send_headers(s1, [(":status", "200")])
    p.server.send_data(s1, b"partial")
    p.flush()
    p.client.reset_stream(s1, error_code=8)  # CANCEL
    p.flush()
    p.server.send_headers(s3, [(":status", "200")])
    p.flush()
    p.raw(False, frame(GOAWAY, 0, 0, s3.to_bytes(4, "big") + b"\x00\x00\x00\x00"))  # s5 never processed
    p.server.send_data(s3, b"done", end_stream=True)
    p.flush()
    p.conv.close()
    by_sid = {e.stream_id: e for e in decode(tmp_path, p.conv.packets)[0]}
    assert by_sid[s1].h2.ended == "RST_STREAM CANCEL by client" and by_sid[s1].response_body_bytes == 7
    assert by_sid[s1].status == 200
    assert by_sid[s5].h2.ended == "GOAWAY NO_ERROR by server (last stream 3)" and by_sid[s5].status is None
    assert by_sid[s3].h2.ended == "END_STREAM" and by_sid[s3].response_body_bytes == 4


def test_open_streams_at_capture_end_say_so(tmp_path):
    p = H2Pair().start()
    p.request(get("/hanging"))
    (e,), _ = decode(tmp_path, p.conv.packets)
    assert e.h2.ended == "capture end" and e.status is None and e.uri == "/hanging"


def test_dynamic_table_size_updates_keep_the_table_in_step(tmp_path):
    """The client shrinks its encoder's table (an HPACK size update in the block), then grows it."""
    p = H2Pair().start()
    p.request(get("/one", rid="a" * 36))
    p.client.encoder.header_table_size = 64  # the next block starts with a size update to 64
    p.request(get("/two", rid="b" * 36))
    p.client.encoder.header_table_size = 4096
    p.request(get("/three", rid="a" * 36))
    for sid in (1, 3, 5):
        p.respond(sid, [(":status", "200")])
    p.conv.close()
    exchanges, report = decode(tmp_path, p.conv.packets)
    assert [(e.uri, e.request_id) for e in exchanges] == [("/one", "a" * 36), ("/two", "b" * 36),
                                                          ("/three", "a" * 36)]
    assert report.damage == []


def test_capture_starting_mid_connection_decodes_literals_and_reports_the_rest(tmp_path):
    p = H2Pair().start()
    for _ in range(3):
        sid = p.request(get("/warm", rid="same-id"))
        p.respond(sid, [(":status", "200"), ("server", "envoy")], b"x")
    joined_at = len(p.conv.packets)
    s7 = p.request(get("/late", rid="same-id", x_fresh="literal-value"))
    p.respond(s7, [(":status", "503"), ("server", "envoy")], b"unavailable")
    p.conv.close()
    (e,), report = decode(tmp_path, p.conv.packets[joined_at:])
    assert e.stream_id == 7 and e.protocol == "h2"
    # new literals decode; the values indexed before the capture began are not guessed
    assert e.headers.get("x-fresh") == "literal-value" and e.uri == "/late"
    assert e.status == 503 and e.h2.undecoded_headers > 0
    assert "x-request-id" not in e.headers and e.method == "GET"  # static-table entry: known
    assert any("HPACK table entries sent before the capture began" in d for d in e.damage)
    assert any("before the capture began" in d for d in report.damage)


def test_server_push(tmp_path):
    p = H2Pair().start()
    sid = p.request(get("/page"))
    p.server.push_stream(sid, 2, [(":method", "GET"), (":path", "/style.css"), (":authority", "svc:8080"),
                                  (":scheme", "http")])
    p.server.send_headers(sid, [(":status", "200")], end_stream=True)
    p.server.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    p.server.send_data(2, b"body{}", end_stream=True)
    p.flush()
    p.conv.close()
    exchanges, _ = decode(tmp_path, p.conv.packets)
    pushed = next(e for e in exchanges if e.stream_id == 2)
    assert (pushed.uri, pushed.h2.pushed_by, pushed.status) == ("/style.css", 1, 200)
    assert pushed.response_body_bytes == 6
    assert pushed.h2.ended == "END_STREAM"


def test_h2c_upgrade_makes_the_request_stream_one(tmp_path):
    conv = Conversation(sport=8080).handshake()
    conv.send(True, http_request("GET", "/up", host="svc", connection="Upgrade, HTTP2-Settings",
                                 upgrade="h2c", http2_settings="AAMAAABkAARAAAAAAAIAAAAA",
                                 x_request_id="u-1"))
    server = frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, Encoder().encode([(":status", "200")])) \
        + frame(DATA, END_STREAM, 1, b"upgraded!")
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    conv.send(False, switching + server)
    enc = Encoder()
    conv.send(True, PREFACE + frame(SETTINGS, 0, 0)
              + frame(HEADERS, END_HEADERS | END_STREAM, 3, enc.encode(get("/next", rid="u-2"))))
    conv.send(False, frame(HEADERS, END_HEADERS | END_STREAM, 3, Encoder().encode([(":status", "204")])))
    conv.close()
    exchanges, report = decode(tmp_path, conv.packets)
    assert [(e.stream_id, e.uri, e.status, e.request_id, e.protocol) for e in exchanges] == [
        (1, "/up", 200, "u-1", "h2"), (3, "/next", 204, "u-2", "h2")]
    assert exchanges[0].response_body_bytes == 9 and report.damage == []


# -- bad input: bounded and reported --------------------------------------------------------------
def _h2_conv(*client_frames: bytes, server: bytes = b"") -> Conversation:
    conv = Conversation(sport=8080).handshake()
    conv.send(True, PREFACE + frame(SETTINGS, 0, 0) + b"".join(client_frames))
    if server:
        conv.send(False, server)
    return conv


def test_hpack_bomb_table_size_update_is_refused(tmp_path):
    bomb = b"\x3f\xe1\xff\xff\x7f"  # size update to 2**28 + 30, far above the 4096 allowed
    conv = _h2_conv(frame(HEADERS, END_HEADERS | END_STREAM, 1, bomb + Encoder().encode(get("/x"))))
    conv.close()
    exchanges, report = decode(tmp_path, conv.packets)
    assert any("table size update" in d and "above the allowed" in d for d in report.damage)
    assert all(e.uri is None for e in exchanges)


def test_hpack_bomb_header_list_past_any_sane_size(tmp_path):
    """One 4 KB literal indexed once, then referenced thousands of times: 1 byte each on the wire."""
    enc = Encoder()
    first = enc.encode([("x-big", "y" * 4000)])
    refs = b"\xbe" * 5000  # index 62: the entry just added
    conv = _h2_conv(frame(HEADERS, END_HEADERS | END_STREAM, 1, first + refs))
    conv.close()
    _, report = decode(tmp_path, conv.packets)
    assert any("header list over" in d for d in report.damage)


def test_endless_continuation_is_cut_off(tmp_path):
    start = frame(HEADERS, 0, 1, Encoder().encode(get("/c")))
    conts = b"".join(frame(CONTINUATION, 0, 1, b"\x00\x01a\x01b") for _ in range(600))
    after = frame(HEADERS, END_HEADERS | END_STREAM, 3,
                  Encoder().encode([(":method", "GET"), (":path", "/after")]))
    conv = _h2_conv(start, conts, after)
    conv.close()
    exchanges, report = decode(tmp_path, conv.packets)
    assert any("CONTINUATION frames: not decoded" in d for d in report.damage)
    # the connection goes on: the next stream is seen (its literal fields decode)
    assert [e.uri for e in exchanges if e.stream_id == 3] == ["/after"]


def test_frame_over_the_negotiated_maximum_is_skipped(tmp_path):
    conv = _h2_conv(frame(HEADERS, END_HEADERS, 1, Encoder().encode(get("/big", rid="big-1"))),
                    frame(DATA, 0, 1, b"z" * 20000), frame(DATA, END_STREAM, 1, b"tail"),
                    server=frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                                         Encoder().encode([(":status", "413")])))
    conv.close()
    (e,), report = decode(tmp_path, conv.packets)
    assert any("DATA frame of 20000 bytes over the maximum of 16384" in d for d in report.damage)
    assert (e.request_id, e.status, e.request_body_bytes, e.h2.ended) == ("big-1", 413, 4, "END_STREAM")


def test_length_past_the_end_of_the_capture(tmp_path):
    conv = _h2_conv(frame(HEADERS, END_HEADERS, 1, Encoder().encode(get("/cut"))))
    conv.send(True, frame(DATA, END_STREAM, 1, b"q" * 100)[:9 + 10])  # the frame claims 100, 10 arrive
    exchanges, report = decode(tmp_path, conv.packets)
    (e,) = exchanges
    assert e.uri == "/cut" and e.request_body_bytes == 10 and e.h2.ended == "capture end"


def test_reset_codes_and_goaway_by_name(tmp_path):
    conv = _h2_conv(frame(HEADERS, END_HEADERS | END_STREAM, 1, Encoder().encode(get("/r"))),
                    server=frame(SETTINGS, 0, 0) + frame(RST_STREAM, 0, 1, (7).to_bytes(4, "big"))
                    + frame(GOAWAY, 0, 0, (1).to_bytes(4, "big") + (11).to_bytes(4, "big")))
    conv.close()
    (e,), _ = decode(tmp_path, conv.packets)
    assert e.h2.ended == "RST_STREAM REFUSED_STREAM by server"


def _fuzz_capture(tmp_path: Path, client: bytes, server: bytes, mss: int) -> Path:
    conv = Conversation(sport=8080).handshake()
    conv.send(True, PREFACE + client, mss)
    conv.send(False, server, mss)
    conv.close()
    return write(tmp_path / "fuzz.pcap", conv.packets)


_frames = st.lists(st.tuples(st.integers(0, 11), st.integers(0, 255), st.integers(0, 9),
                             st.binary(max_size=60)), max_size=12)


def _lay(frames: list[tuple[int, int, int, bytes]]) -> bytes:
    return b"".join(frame(t, f, s, p) for t, f, s, p in frames)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client=_frames, server=_frames, noise=st.binary(max_size=40), mss=st.integers(1, 200))
def test_fuzzed_frames_and_header_blocks_never_crash(tmp_path, client, server, noise, mss):
    path = _fuzz_capture(tmp_path, _lay(client) + noise, _lay(server), mss)
    for backend in ("dpkt",):
        stream, report = read_exchanges(path, backend)
        exchanges = list(stream)
        assert len(exchanges) <= len(client) + len(server) + 1
        assert all(e.protocol == "h2" or e.protocol == "grpc" for e in exchanges)
        assert report.packets == len(list(_count_packets(path)))


def _count_packets(path: Path):
    from meshscope.decoders.capture_file import ReadStats, read_capture

    yield from read_capture(path, ReadStats())


@pytest.mark.parametrize("backend", ["scapy", "pyshark"])
def test_other_backends_agree_on_http2(tmp_path, backend):
    p = H2Pair().start()
    sid = p.request(GRPC_CHECK, grpc_frame(b"\x0a\x00"))
    p.respond(sid, [(":status", "200"), ("content-type", "application/grpc")], grpc_frame(b"\x08\x01"),
              trailers=[("grpc-status", "0")])
    sid = p.request(get("/plain"))
    p.respond(sid, [(":status", "302")])
    p.conv.close()
    ref, _ = decode(tmp_path, p.conv.packets)
    other, _ = decode(tmp_path, p.conv.packets, backend=backend)
    assert [e.to_dict() if hasattr(e, "to_dict") else e for e in other] == \
        [e.to_dict() if hasattr(e, "to_dict") else e for e in ref]
    assert [e.grpc and e.grpc.status for e in other] == ["OK", None]


# -- stitching over HTTP/2 -------------------------------------------------------------------------
def test_proxy_hops_over_h2_by_b3_xff_and_normalised_request_id(tmp_path):
    """An h2 downstream connection with two streams into a proxy at 10.0.0.5, which sends both on one
    pooled h2 upstream connection: one matched by the request id Envoy re-stamped (sampling digit),
    the other, without an id, by its B3 ids and the x-forwarded-for it extended."""
    from meshscope.decoders.analysis import analyze

    rid = "11111111-2222-4333-8444-555555555555"
    down = H2Pair(Conversation(client="10.0.0.1", server="10.0.0.5", sport=8080)).start()
    up = H2Pair(Conversation(client="10.0.0.5", server="10.0.0.9", sport=50051, cport=41000, cisn=7000,
                             sisn=90000)).start()
    s_a = down.request(get("/a", rid=rid))
    s_b = down.request([(":method", "GET"), (":scheme", "http"), (":path", "/b"), (":authority", "svc"),
                        ("x-b3-traceid", "00000000000000007e57"), ("x-b3-spanid", "00000000000000a1")])
    up.conv.t = down.conv.t
    u_a = up.request(get("/a", rid=rid[:14] + "b" + rid[15:], x_forwarded_for="10.0.0.1",
                         x_envoy_attempt_count="1"))
    u_b = up.request([(":method", "GET"), (":scheme", "http"), (":path", "/b"), (":authority", "svc"),
                      ("x-b3-traceid", "7e57"), ("x-b3-spanid", "00000000000000b2"),
                      ("x-b3-parentspanid", "00000000000000a1"), ("x-forwarded-for", "10.0.0.1"),
                      ("x-envoy-attempt-count", "1")])
    for sid in (u_b, u_a):
        up.respond(sid, [(":status", "200")], b"ok")
    down.conv.t = up.conv.t  # the proxy answers downstream once the upstream answered
    for sid in (s_b, s_a):
        down.respond(sid, [(":status", "200")], b"ok")
    down.conv.close()
    up.conv.close()
    packets = sorted(down.conv.packets + up.conv.packets, key=lambda p: float(p.time))
    analysis = analyze([write(tmp_path / "hops.pcap", packets)])
    hops = {}
    for flow in analysis.flows:
        for hop in flow.hops:
            if hop.kind == "l7-proxy":
                hops[hop.evidence["attempts"][0]["stream_id"]] = hop
    assert set(hops) == {u_a, u_b}
    assert "x-request-id" in hops[u_a].evidence["matched_by"]
    assert hops[u_a].evidence["request_id"]["normalised"] == rid
    assert {"b3-traceid", "b3-parent", "x-forwarded-for"} <= set(hops[u_b].evidence["matched_by"])
    assert len({hop.evidence["attempts"][0]["upstream"] for hop in hops.values()}) == 1  # one pooled conn.


def test_frame_plausibility_tells_http2_from_other_bytes():
    from meshscope.decoders.http2_frames import plausible_frames

    h2 = frame(HEADERS, END_HEADERS, 5, Encoder().encode(get("/x"))) + frame(DATA, 0, 5, b"abc")
    assert plausible_frames(h2, True) and plausible_frames(h2[:-2], True)  # the last frame continues
    assert not plausible_frames(frame(HEADERS, END_HEADERS, 4, b"\x82"), True)  # clients open odd streams
    for other in (http_request("GET", "/"), b"HTTP/1.1 200 OK\r\n\r\n", b"\x16\x03\x01\x02\x00\x01",
                  b"{\"json\": true, \"body\": [1, 2, 3]}", bytes(range(256))):
        assert not plausible_frames(other, True) and not plausible_frames(other, False)
