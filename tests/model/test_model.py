"""The record model: deterministic ids, JSON round trips, request-id normalisation."""

from hypothesis import given
from hypothesis import strategies as st

from meshscope.model import (
    AccessRecord,
    Connection,
    Exchange,
    Flow,
    Hop,
    Span,
    normalize_request_id,
    record_id,
)


def test_envoy_sampling_digit_is_normalised():
    raw = ["4c3f9e1a-2b7d-4e11-8a9f-0d3c5b6a7e81", "4c3f9e1a-2b7d-9e11-8a9f-0d3c5b6a7e81",
           "4C3F9E1A-2B7D-AE11-8A9F-0D3C5B6A7E81", "4c3f9e1a-2b7d-be11-8a9f-0d3c5b6a7e81"]
    assert {normalize_request_id(r) for r in raw} == {"4c3f9e1a-2b7d-4e11-8a9f-0d3c5b6a7e81"}
    assert normalize_request_id("not-a-uuid") == "not-a-uuid"
    assert normalize_request_id(None) is None


def test_same_record_same_id_and_json_round_trip():
    a = AccessRecord(start_time=1700000000.123456, node_id="gw", request_id="r1", path="/x")
    b = AccessRecord(start_time=1700000000.123456, node_id="gw", request_id="r1", path="/x")
    assert a.id == b.id and len(a.id) == 32
    assert AccessRecord.from_json(a.to_json()) == a
    assert AccessRecord(start_time=1.0, node_id="other").id != a.id


def test_nested_records_round_trip():
    e = Exchange(exchange_type="tls", conn=Connection(src="10.0.0.1", sport=1, dst="10.0.0.2", dport=443),
                 sni="shop.example")
    assert Exchange.from_json(e.to_json()) == e
    f = Flow(hops=[Hop(kind="nat-dnat", src="a:1", dst="b:2", nodeport=30000)], request_id="r")
    back = Flow.from_dict(f.to_dict())
    assert back == f and isinstance(back.hops[0], Hop)
    s = Span(trace_id="t", span_id="s", tags={"guid:x-request-id": "4c3f9e1a-2b7d-9e11-8a9f-0d3c5b6a7e81"})
    assert s.request_id_norm == "4c3f9e1a-2b7d-4e11-8a9f-0d3c5b6a7e81"
    assert Span.from_json(s.to_json()) == s


def test_a_reused_port_pair_is_another_exchange():
    """Same 5-tuple and times but another initial sequence number: another connection, another id
    (stitching relies on ids being unique; hypothesis found two flows rooted on one id)."""
    def on(isn: int) -> Exchange:
        c = Connection(src="10.0.0.1", sport=1000, dst="10.0.0.2", dport=80, client_isn=isn, syn_time=1.0)
        return Exchange(exchange_type="http", conn=c, index=1, request_time=1.001)

    assert on(1).id != on(2).id
    assert on(1).id == on(1).id


@given(capture=st.text(max_size=8), interface=st.none() | st.text(max_size=4), sport=st.integers(0, 65535),
       isn=st.none() | st.integers(0, 2**32 - 1), syn=st.none() | st.floats(allow_nan=False),
       kind=st.sampled_from(["http", "tls"]), index=st.integers(0, 2**31),
       at=st.none() | st.floats(allow_nan=False))
def test_an_exchange_id_is_record_id_of_its_parts(capture, interface, sport, isn, syn, kind, index, at):
    # Exchange.compute_id writes record_id's text out by hand (speed): both must give the same id
    c = Connection(src="10.0.0.1", sport=sport, dst="10.0.0.2", dport=80, capture=capture,
                   interface=interface, client_isn=isn, syn_time=syn)
    ex = Exchange(exchange_type=kind, conn=c, index=index, request_time=at)
    assert ex.id == record_id("exchange", capture, interface, "10.0.0.1", sport, "10.0.0.2", 80, isn, syn,
                              kind, index, at)


_opt_text = st.none() | st.text(max_size=12)


@given(node=st.text(max_size=8), log=st.text(max_size=8), protocol=st.sampled_from(["HTTP", "TCP"]),
       start=st.floats(0, 4e9, allow_nan=False), remote=_opt_text, local=_opt_text, rid=_opt_text,
       path=_opt_text, kind=st.sampled_from([None, "DownstreamEnd", "NotSet", "DownstreamPeriodic"]),
       duration=st.none() | st.floats(0, 1e6))
def test_an_access_id_is_record_id_of_its_parts(node, log, protocol, start, remote, local, rid, path, kind,
                                                duration):
    # AccessRecord.compute_id writes record_id's text out by hand for final entries (every collected
    # entry gets an id): both must give the same id, and other entries keep their type and duration in it
    r = AccessRecord(start_time=start, node_id=node, log_name=log, protocol=protocol,
                     downstream_remote=remote, upstream_local=local, request_id=rid, path=path,
                     access_log_type=kind, duration_ms=duration)
    parts = ("access", node, log, protocol, f"{start:.6f}", remote, local, rid, path)
    if kind == "DownstreamPeriodic":
        parts += (kind, duration)
    assert r.id == record_id(*parts)


@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["", " ", "a/b", "x" * 201, "x" * 200]))))
def test_request_ids_all_fine_is_request_id_problem_over_a_list(ids):
    from meshscope.model.ids import request_id_problem, request_ids_all_fine

    assert request_ids_all_fine(ids) == all(request_id_problem(i) is None for i in ids)
