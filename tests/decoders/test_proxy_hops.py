"""Proxy hops from scapy-crafted captures: a pooled keep-alive upstream connection carrying two flows'
requests, retries, Envoy's sampling digit, matching without a request id (x-forwarded-for, B3),
TLS passthrough by SNI, and an upstream request that belongs to no downstream one."""

from __future__ import annotations

from meshscope.decoders.analysis import analyze

from meshscope.model import normalize_request_id
from tests.decoders.stitch_captures import (
    Conversation,
    client_hello,
    http_request,
    http_response,
    view,
    write,
)

T = 1_700_000_000.0
GW, WEBAPP = "10.10.0.6", "10.10.0.9:8080"
RID_A = "11111111-2222-4333-8444-555555555555"
RID_B = "66666666-7777-4888-9999-aaaaaaaaaaaa"


def sampled(rid: str, digit: str = "b") -> str:
    """The id as Envoy forwards it with its sampling decision in the UUID version digit."""
    return rid[:14] + digit + rid[15:]


def one_request(
    isn: int,
    t: float,
    headers: dict[str, str],
    uri: str = "/products",
    took: float = 0.05,
    status: int = 200,
    host: str = "shop.lab",
) -> Conversation:
    """A connection carrying one GET and its response."""
    req = http_request("GET", uri, headers, host=host)
    return Conversation(isn, isn + 500, t).exchange(req, http_response(status), took=took).close()


downstream = one_request


def up_headers(rid: str | None, xff: str, attempt: int = 1, **extra: str) -> dict[str, str]:
    h = {
        "x-forwarded-for": xff,
        "x-envoy-attempt-count": str(attempt),
        "x-envoy-expected-rq-timeout-ms": "15000",
    }
    if rid:
        h["x-request-id"] = rid
    return h | extra


def flows_by_root(a):
    ex = a.by_id()
    return {ex[f.exchange_ids[0]].conn.src + ":" + str(ex[f.exchange_ids[0]].conn.sport): f for f in a.flows}


def test_pooled_upstream_connection_carries_two_flows_requests(tmp_path):
    d_a = downstream(100, T, {"x-request-id": RID_A})
    d_b = downstream(200, T + 0.001, {"x-request-id": RID_B})
    # one keep-alive upstream connection; the gateway forwards B before A
    up = Conversation(300, 800, T + 0.004)
    up.exchange(
        http_request("GET", "/products", up_headers(sampled(RID_B), "172.18.0.2")),
        http_response(200),
        took=0.005,
    )
    up.exchange(
        http_request("GET", "/products", up_headers(sampled(RID_A, "9"), "172.18.0.1")),
        http_response(200),
        took=0.005,
        after=0.002,
    )
    up.close()
    pcap = write(
        tmp_path / "gw.pcap",
        view(d_a, "172.18.0.1:40001", f"{GW}:8080"),
        view(d_b, "172.18.0.2:40002", f"{GW}:8080"),
        view(up, f"{GW}:46612", WEBAPP),
    )
    a = analyze([pcap])
    flows = flows_by_root(a)
    fa, fb = flows["172.18.0.1:40001"], flows["172.18.0.2:40002"]
    (ha,), (hb,) = fa.hops, fb.hops
    assert ha.kind == hb.kind == "l7-proxy" and ha.src == hb.src == f"{GW}:46612"
    assert ha.request_ids == [RID_A, sampled(RID_A, "9")] and hb.request_ids == [RID_B, sampled(RID_B)]
    ex = a.by_id()
    assert [ex[i].index for i in ha.exchange_ids[1:]] == [1] and [
        ex[i].index for i in hb.exchange_ids[1:]
    ] == [0]
    assert fa.request_id == RID_A and fb.request_id == RID_B
    assert {"x-request-id", "x-forwarded-for"} <= set(ha.evidence["matched_by"])


def test_retries_by_attempt_count_on_two_upstream_connections(tmp_path):
    d = downstream(100, T, {"x-request-id": RID_A}, uri="/flaky")
    first = one_request(
        300, T + 0.003, up_headers(sampled(RID_A), "172.18.0.1"), uri="/flaky", took=0.004, status=503
    )
    second = one_request(
        400,
        T + 0.015,
        up_headers(sampled(RID_A), "172.18.0.1", attempt=2),
        uri="/flaky",
        took=0.004,
        status=200,
    )
    pcap = write(
        tmp_path / "gw.pcap",
        view(d, "172.18.0.1:40001", f"{GW}:8080"),
        view(first, f"{GW}:46612", WEBAPP),
        view(second, f"{GW}:46620", WEBAPP),
    )
    (flow,) = analyze([pcap]).flows
    (hop,) = flow.hops
    assert hop.kind == "l7-proxy" and hop.retries == 1
    assert [at["status"] for at in hop.evidence["attempts"]] == [503, 200]
    assert [at["attempt_count"] for at in hop.evidence["attempts"]] == ["1", "2"]
    assert [at["upstream"].split(" → ")[0] for at in hop.evidence["attempts"]] == [
        f"{GW}:46612",
        f"{GW}:46620",
    ]


def test_same_request_id_sent_again_counts_as_a_retry(tmp_path):
    d = downstream(100, T, {"x-request-id": RID_A}, uri="/pay")
    up = Conversation(300, 900, T + 0.003)
    for _ in range(3):  # a proxy without attempt counts re-sends the request on its keep-alive connection
        up.exchange(
            http_request("GET", "/pay", {"x-request-id": RID_A, "x-forwarded-for": "172.18.0.1"}),
            http_response(503),
            took=0.003,
        )
    up.close()
    pcap = write(
        tmp_path / "gw.pcap", view(d, "172.18.0.1:40001", f"{GW}:8080"), view(up, f"{GW}:46612", WEBAPP)
    )
    (flow,) = analyze([pcap]).flows
    assert [h.kind for h in flow.hops] == ["l7-proxy"] and flow.hops[0].retries == 2


def test_no_request_id_downstream_matches_by_forwarded_for(tmp_path):
    # two clients at the same moment, neither sends an id: Envoy generates one per request
    d1 = downstream(100, T, {})
    d2 = downstream(200, T, {})
    u2 = one_request(
        300, T + 0.003, up_headers(sampled(RID_B), "192.168.7.2"), uri="/products", took=0.004, status=200
    )
    u1 = one_request(
        400, T + 0.0031, up_headers(sampled(RID_A), "192.168.7.1"), uri="/products", took=0.004, status=200
    )
    pcap = write(
        tmp_path / "gw.pcap",
        view(d1, "192.168.7.1:5000", f"{GW}:8080"),
        view(d2, "192.168.7.2:5000", f"{GW}:8080"),
        view(u2, f"{GW}:46612", WEBAPP),
        view(u1, f"{GW}:46613", WEBAPP),
    )
    flows = flows_by_root(analyze([pcap]))
    assert flows["192.168.7.1:5000"].hops[0].src == f"{GW}:46613"
    assert flows["192.168.7.2:5000"].hops[0].src == f"{GW}:46612"
    assert flows["192.168.7.1:5000"].request_id == normalize_request_id(RID_A)  # the id Envoy generated
    assert "x-request-id" not in flows["192.168.7.1:5000"].hops[0].evidence["matched_by"]


def test_b3_ids_link_an_app_call_without_request_id(tmp_path):
    trace = "80f198ee56343ba864fe8b2a57d3eff7"
    d = downstream(100, T, {"x-b3-traceid": trace, "x-b3-spanid": "e457b5a2e4d86bd1", "x-b3-sampled": "1"})
    call = (
        Conversation(300, 900, T + 0.003)
        .exchange(
            http_request(
                "GET",
                "/items",
                {
                    "x-b3-traceid": trace,
                    "x-b3-spanid": "05e3ac9a4f6e3b90",
                    "x-b3-parentspanid": "e457b5a2e4d86bd1",
                },
                host="catalog:3000",
            ),
            http_response(200),
            took=0.004,
        )
        .close()
    )
    other = (
        Conversation(400, 950, T + 0.004)
        .exchange(  # concurrent, another trace: not this flow's
            http_request(
                "GET", "/items", {"x-b3-traceid": "1" * 32, "x-b3-spanid": "1" * 16}, host="catalog:3000"
            ),
            http_response(200),
            took=0.004,
        )
        .close()
    )
    pcap = write(
        tmp_path / "webapp.pcap",
        view(d, "10.10.0.6:46612", WEBAPP),
        view(call, "10.10.0.9:40000", "10.10.0.8:3000"),
        view(other, "10.10.0.9:40001", "10.10.0.8:3000"),
    )
    flows = flows_by_root(analyze([pcap]))
    (hop,) = flows["10.10.0.6:46612"].hops
    assert hop.kind == "app-call" and hop.src == "10.10.0.9:40000"
    assert {"b3-traceid", "b3-parent"} <= set(hop.evidence["matched_by"])
    assert set(flows) == {"10.10.0.6:46612"}  # the other trace's call stands alone


def test_tls_passthrough_is_one_hop_labelled_with_its_sni(tmp_path):
    convs = []
    for i, sni in enumerate(("a.lab", "b.lab")):
        down = Conversation(100 + i, 500 + i, T + i * 0.0005).send(True, client_hello(sni)).close(after=0.02)
        up = (
            Conversation(300 + i, 900 + i, T + 0.002 + i * 0.0005)
            .send(True, client_hello(sni))
            .close(after=0.01)
        )
        convs += [
            view(down, f"172.18.0.1:{5000 + i}", f"{GW}:8443"),
            view(up, f"{GW}:{47000 + i}", "10.10.0.9:8443"),
        ]
    flows = flows_by_root(analyze([write(tmp_path / "tls.pcap", *convs)]))
    for i, sni in enumerate(("a.lab", "b.lab")):
        (hop,) = flows[f"172.18.0.1:{5000 + i}"].hops
        assert hop.kind == "tls-passthrough" and hop.sni == sni and hop.src == f"{GW}:{47000 + i}"
        assert hop.evidence["sni"] == sni


def test_a_different_request_id_is_never_matched(tmp_path):
    d = downstream(100, T, {"x-request-id": RID_A})
    up = one_request(
        300, T + 0.003, up_headers(sampled(RID_B), "172.18.0.1"), uri="/products", took=0.004, status=200
    )
    a = analyze(
        [
            write(
                tmp_path / "gw.pcap",
                view(d, "172.18.0.1:40001", f"{GW}:8080"),
                view(up, f"{GW}:46612", WEBAPP),
            )
        ]
    )
    assert a.flows == [] and len(a.exchanges) == 2


def test_istio_sidecar_in_a_pod_capture_talks_to_its_app_over_loopback(tmp_path):
    # `tcpdump -i any` in the webapp pod: the client's request arrives on eth0, the sidecar hands it to
    # the app from 127.0.0.6, the app calls catalog through the sidecar's 127.0.0.1:15001, and the
    # sidecar calls the catalog pod from the pod's own address
    pod = "10.10.0.9"
    rid = {"x-request-id": RID_A}
    inbound = one_request(10, T, rid, took=0.05)
    to_app = one_request(20, T + 0.002, rid | {"x-forwarded-for": "10.0.0.1"}, took=0.04)
    app_call = one_request(30, T + 0.005, rid, uri="/items", took=0.02, host="catalog:3000")
    outbound = one_request(
        40,
        T + 0.007,
        up_headers(sampled(RID_A), "", attempt=1) | rid,
        uri="/items",
        took=0.01,
        host="catalog:3000",
    )
    pcap = write(
        tmp_path / "pod.pcap",
        view(inbound, "10.0.0.1:5000", f"{pod}:8080", ifindex=2),
        view(to_app, "127.0.0.6:40001", f"{pod}:8080", ifindex=1),
        view(app_call, f"{pod}:41000", "127.0.0.1:15001", ifindex=1),
        view(outbound, f"{pod}:42000", "10.10.0.8:3000", ifindex=2),
    )
    (flow,) = analyze([pcap]).flows
    assert [(h.kind, h.src, h.dst) for h in flow.hops] == [
        ("l7-proxy", "127.0.0.6:40001", f"{pod}:8080"),
        ("app-call", f"{pod}:41000", "127.0.0.1:15001"),
        ("l7-proxy", f"{pod}:42000", "10.10.0.8:3000"),
    ]


def test_a_proxy_on_one_loopback_is_a_hop_from_the_request_to_its_forward(tmp_path):
    # client, Envoy and upstream all on 127.0.0.1 (``meshscope up`` and its demo upstream), one capture:
    # Envoy forwards each request within a millisecond over a pooled connection, the id's sampling digit
    # changed. The forward starts after the request (one clock), so it is never taken for its cause.
    client = Conversation(10, 510, T)
    client.exchange(http_request("GET", "/headers", {"x-request-id": RID_A}), http_response(200), took=0.003)
    client.exchange(http_request("GET", "/status/503", {"x-request-id": RID_A}), http_response(503),
                    took=0.003, after=0.001)
    client.close()
    pooled = Conversation(20, 520, T + 0.0005)
    pooled.exchange(http_request("GET", "/headers", up_headers(sampled(RID_A, "9"), "192.0.2.2")),
                    http_response(200), took=0.001)
    pooled.close()
    fresh = one_request(30, T + 0.0045, up_headers(sampled(RID_A, "9"), "192.0.2.2"), uri="/status/503",
                        took=0.001, status=503)
    a = analyze([write(tmp_path / "lo.pcap", view(client, "127.0.0.1:40350", "127.0.0.1:10000"),
                       view(pooled, "127.0.0.1:58740", "127.0.0.1:34329", handshake=False),
                       view(fresh, "127.0.0.1:58832", "127.0.0.1:34329"))])
    ex = a.by_id()
    assert [(ex[f.exchange_ids[0]].uri, [(h.kind, h.src) for h in f.hops]) for f in a.flows] == [
        ("/headers", [("l7-proxy", "127.0.0.1:58740")]),
        ("/status/503", [("l7-proxy", "127.0.0.1:58832")]),
    ]


def test_concurrent_requests_on_loopback_without_ids_are_not_chained(tmp_path):
    # a load generator and a server on one host, no ids: requests overlap but none caused another
    convs = [
        view(one_request(100 + i, T + i * 0.001, {}, took=0.05), f"127.0.0.1:{5000 + i}", "127.0.0.1:8080")
        for i in range(5)
    ]
    a = analyze([write(tmp_path / "lo.pcap", *convs)])
    assert a.flows == [] and len(a.exchanges) == 5


def test_timing_alone_links_an_app_call_when_one_request_was_open(tmp_path):
    down = one_request(10, T, {}, took=0.05)
    call = one_request(20, T + 0.003, {}, uri="/items", took=0.01, host="catalog:3000")
    a = analyze(
        [
            write(
                tmp_path / "app.pcap",
                view(down, "10.0.0.1:5000", "10.10.0.9:8080"),
                view(call, "10.10.0.9:41000", "10.10.0.8:3000"),
            )
        ]
    )
    (flow,) = a.flows
    assert [h.kind for h in flow.hops] == ["app-call"] and flow.hops[0].evidence["matched_by"] == ["timing"]
    # a second request open at the same time makes timing alone ambiguous: no guess
    other = one_request(30, T + 0.001, {}, took=0.05)
    a = analyze(
        [
            write(
                tmp_path / "busy.pcap",
                view(down, "10.0.0.1:5000", "10.10.0.9:8080"),
                view(other, "10.0.0.2:5000", "10.10.0.9:8080"),
                view(call, "10.10.0.9:41000", "10.10.0.8:3000"),
            )
        ]
    )
    assert a.flows == []
