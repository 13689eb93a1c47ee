"""Real HTTP/2 and gRPC captures (tests/decoders/grpc_lab.py: a network namespace, real Envoy with an
h2c listener and an h2 upstream cluster, real grpcio client and server, real curl, real tcpdump):
streams, methods, paths, statuses, gRPC statuses, request ids and proxy hops, checked against
tshark's HTTP/2 dissector and across the three backends."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

import pytest
from meshscope.decoders.analysis import analyze
from meshscope.decoders.read import read_exchanges

from tests.conftest import need_binary, need_root
from tests.decoders.grpc_lab import ENVOY, ENVOY_PORT, GRPC, GRPC_PORT, PLAIN_PORT, RETRIES, GrpcLab

pytestmark = [pytest.mark.root, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def lab_capture(tmp_path_factory):
    need_root()
    for tool in ("ip", "tcpdump", "curl"):
        need_binary(tool)
    d = tmp_path_factory.mktemp("h2lab")
    with GrpcLab(d) as lab:
        cap = lab.capture(d / "h2.pcap")
        result = lab.traffic()
        GrpcLab.stop_capture(cap)
    assert result == {"direct_ok": 1, "direct_notfound": "NOT_FOUND", "via_envoy": [1] * 6,
                      "flaky": "UNAVAILABLE", "curl_h2": "200 2", "curl_h1": "200 1.1"}, result
    return d / "h2.pcap"


@pytest.fixture(scope="module")
def decoded(lab_capture):
    stream, report = read_exchanges(lab_capture)
    return list(stream), report


def _by_rid(exchanges):
    out = defaultdict(list)
    for e in exchanges:
        out[e.request_id].append(e)
    return out


def test_grpc_calls_direct(decoded):
    exchanges, report = decoded
    assert report.damage == []
    rid = _by_rid(exchanges)
    (ok,), (nf,) = rid["direct-ok"], rid["direct-notfound"]
    assert ok.conn.key[2:] == (GRPC, GRPC_PORT) and ok.conn is not None
    for e in (ok, nf):
        assert (e.protocol, e.method, e.uri) == ("grpc", "POST", "/grpc.health.v1.Health/Check")
        assert (e.grpc.service, e.grpc.method, e.status) == ("grpc.health.v1.Health", "Check", 200)
        assert e.grpc.request_messages == 1 and e.h2.ended == "END_STREAM" and e.grpc.timeout
    assert (ok.grpc.status, ok.grpc.response_messages) == ("OK", 1)
    assert (nf.grpc.status, nf.grpc.status_code) == ("NOT_FOUND", 5)
    assert (ok.stream_id, nf.stream_id) == (1, 3)  # one channel, two streams


def test_multiplexed_calls_through_envoy_on_one_pooled_upstream(decoded):
    exchanges, _ = decoded
    rid = _by_rid(exchanges)
    down_conns, up_conns = set(), set()
    for i in range(6):
        sides = rid[f"via-envoy-{i}"]
        down = [e for e in sides if e.conn.dport == ENVOY_PORT]
        up = [e for e in sides if e.conn.dport == GRPC_PORT]
        assert len(down) == len(up) == 1, sides
        assert down[0].grpc.status == up[0].grpc.status == "OK"
        assert up[0].headers["x-envoy-attempt-count"] == "1" and up[0].conn.src == ENVOY
        down_conns.add(down[0].conn.key)
        up_conns.add(up[0].conn.key)
    assert len(down_conns) == 1 and len(up_conns) == 1  # six streams each way, one connection each


def test_proxy_hops_retries_and_protocol_changes(lab_capture):
    analysis = analyze([lab_capture])
    ex = {e.id: e for e in analysis.exchanges}  # whole Exchanges (by_id() gives stitching's facts)
    hops = {}
    for flow in analysis.flows:
        for hop in flow.hops:
            if hop.kind == "l7-proxy":
                first = ex[hop.exchange_ids[0]]
                hops[first.request_id] = (hop, [ex[i] for i in hop.exchange_ids])
    assert {f"via-envoy-{i}" for i in range(6)} | {"flaky-1", "curl-h2-1", "curl-h1-1"} <= set(hops)
    for i in range(6):
        hop, _ = hops[f"via-envoy-{i}"]
        assert "x-request-id" in hop.evidence["matched_by"] and hop.retries == 0
    flaky, _ = hops["flaky-1"]
    attempts = flaky.evidence["attempts"]
    assert flaky.retries == RETRIES
    assert [a["grpc_status"] for a in attempts] == ["UNAVAILABLE"] * (RETRIES + 1)
    assert [a["attempt_count"] for a in attempts] == [str(n) for n in range(1, RETRIES + 2)]
    assert len({a["upstream"] for a in attempts}) == 1 and len({a["stream_id"] for a in attempts}) == 3
    # h2 downstream (curl --http2-prior-knowledge) → HTTP/1 upstream, and the reverse
    _, h2_sides = hops["curl-h2-1"]
    down, up = h2_sides[0], h2_sides[-1]
    assert (down.protocol, down.stream_id, down.uri) == ("h2", 1, "/plain/")
    assert (up.protocol, up.http_version, up.conn.dport, up.uri) == (None, "HTTP/1.1", PLAIN_PORT, "/")
    _, h1_sides = hops["curl-h1-1"]
    down, up = h1_sides[0], h1_sides[-1]
    assert (down.protocol, down.http_version) == (None, "HTTP/1.1")
    assert (up.protocol, up.grpc.status, up.conn.dport) == ("grpc", "OK", GRPC_PORT)


def _as_list(v):
    return v if isinstance(v, list) else [v] if v is not None else []


def _tshark_streams(path) -> dict:
    """(client port, server port, stream id) → the facts tshark's HTTP/2 dissector shows."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-d", f"tcp.port=={ENVOY_PORT},http2",
         "-d", f"tcp.port=={GRPC_PORT},http2", "-Y", "http2.type == 1", "-T", "json", "--no-duplicate-keys",
         "-J", "tcp http2"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    streams: dict = defaultdict(dict)
    for pkt in json.loads(out):
        layers = pkt["_source"]["layers"]
        tcp = layers["tcp"][0] if isinstance(layers["tcp"], list) else layers["tcp"]
        sport, dport = int(tcp["tcp.srcport"]), int(tcp["tcp.dstport"])
        for h2 in _as_list(layers.get("http2")):
            for fr in _as_list(h2.get("http2.stream")):
                if fr.get("http2.type") != "1":
                    continue
                from_client = dport in (ENVOY_PORT, GRPC_PORT)
                key = (sport, dport, int(fr["http2.streamid"])) if from_client else \
                    (dport, sport, int(fr["http2.streamid"]))
                facts = streams[key]
                for h in _as_list(fr.get("http2.header")):
                    name, value = h.get("http2.header.name"), h.get("http2.header.value")
                    if from_client and name in (":method", ":path", ":authority", "x-request-id"):
                        facts.setdefault(name, value)
                    elif not from_client and name in (":status", "grpc-status"):
                        facts[name] = value
    return dict(streams)


@pytest.mark.tshark
def test_streams_match_tshark_http2_fields(lab_capture, decoded):
    need_binary("tshark")
    exchanges, _ = decoded
    ours = {}
    for e in exchanges:
        if e.stream_id is None:
            continue
        facts = {":method": e.method, ":path": e.uri, ":authority": e.host, "x-request-id": e.request_id,
                 ":status": str(e.status), "grpc-status": e.h2.trailers.get("grpc-status")
                 or e.response_headers.get("grpc-status")}
        ours[(e.conn.sport, e.conn.dport, e.stream_id)] = {k: v for k, v in facts.items() if v is not None}
    theirs = _tshark_streams(lab_capture)
    assert len(ours) == 6 * 2 + 2 + (RETRIES + 1) + 1 + 1 + 1  # grpc both sides, direct, flaky, curl
    assert ours == theirs


@pytest.mark.parametrize("backend", ["scapy", "pyshark"])
def test_backends_agree_on_the_real_capture(lab_capture, decoded, backend):
    if backend == "pyshark":
        need_binary("tshark")
    exchanges, _ = decoded
    stream, _ = read_exchanges(lab_capture, backend)
    assert list(stream) == exchanges
