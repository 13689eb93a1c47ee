"""The streaming alert engine on its own: spike and threshold semantics, grouping, realert, resolution.

Times are explicit event times, so these tests are exact and take no wall time.
"""

from __future__ import annotations

import time

from meshscope.pipelines.alerts.engine import AlertEngine
from meshscope.pipelines.alerts.rules import parse_rules

from tests.pipelines.traffic import access

T0 = float(int(time.time()) // 3600 * 3600 - 3600)  # an hour boundary in the past: the event clock
# never runs ahead of the wall clock (issue 12)


def engine(**rule) -> AlertEngine:
    base = {"name": "r", "timeframe": 10, "realert": "1h", "filter": {"status_class": 5}}
    return AlertEngine(parse_rules({"rules": [{**base, **rule}]}))


def steady(start: float, seconds: int, per_second: int, code: int = 200, cluster: str = "catalog", tag="s"):
    return [access(i * per_second + j, code=code, cluster=cluster, t=start + i + j / per_second, tag=tag)
            for i in range(seconds) for j in range(per_second)]


def test_spike_fires_once_for_the_spiking_group_and_resolves():
    e = engine(type="spike", spike_height=3, threshold_cur=10, threshold_ref=0)
    # a steady background: 1 5xx/s from catalog and from webapp
    e.observe(steady(T0, 30, 1, code=500) + steady(T0, 30, 1, code=500, cluster="webapp", tag="w"))
    assert e.evaluate(T0 + 30) == []
    e.observe(steady(T0 + 30, 2, 20, code=503, tag="burst"))  # 40 in 2 s for catalog only
    [fired] = e.evaluate(T0 + 32)
    assert (fired.state, fired.group_key, fired.rule) == ("firing", "upstream_cluster=catalog", "r")
    assert fired.observed >= 40 and fired.baseline <= 10
    assert all(rid.startswith("burst-") for rid in fired.sample_request_ids) and fired.sample_request_ids
    assert fired.labels == {"alertname": "r", "severity": "warning", "upstream_cluster": "catalog"}
    assert e.evaluate(T0 + 33) == []  # still firing: no repeat before realert
    [resolved] = e.evaluate(T0 + 43)  # the burst left the current window
    assert resolved.state == "resolved" and resolved.first_seen == fired.first_seen
    assert resolved.id != fired.id and resolved.last_seen == T0 + 43
    assert e.evaluate(T0 + 60) == []


def test_spike_needs_both_minimum_counts():
    e = engine(type="spike", spike_height=2, threshold_cur=5, threshold_ref=5)
    e.observe(steady(T0, 10, 0) + [access(i, code=500, t=T0 + 12) for i in range(50)])
    assert e.evaluate(T0 + 15) == []  # reference window held fewer than 5: no baseline, no spike
    e2 = engine(type="spike", spike_height=2, threshold_cur=5, threshold_ref=5)
    e2.observe([access(i, code=500, t=T0 + 1 + i / 10) for i in range(6)])  # 6 in the reference window
    e2.observe([access(100 + i, code=500, t=T0 + 12) for i in range(4)])  # only 4 now
    assert e2.evaluate(T0 + 15) == []
    e2.observe([access(200 + i, code=500, t=T0 + 13) for i in range(10)])  # 14 ≥ 2 × 6
    assert [a.state for a in e2.evaluate(T0 + 15)] == ["firing"]


def test_spike_down():
    e = engine(type="spike", spike_type="down", spike_height=4, threshold_ref=20, filter={})
    e.observe(steady(T0, 10, 5))  # 50 requests in the reference window
    e.observe(steady(T0 + 10, 10, 1, tag="late"))  # 10 in the current window: a dip below 50 / 4
    [dip] = e.evaluate(T0 + 20)
    assert dip.state == "firing" and dip.observed == 10 and dip.baseline == 50


def test_threshold_count_rate_and_ratio():
    count = engine(type="threshold", threshold=5)
    count.observe([access(i, code=502, t=T0 + i / 10) for i in range(5)])
    assert [a.observed for a in count.evaluate(T0 + 1)] == [5]
    rate = engine(type="threshold", metric="rate", threshold=2)
    rate.observe([access(i, code=502, t=T0 + i / 10) for i in range(19)])
    assert rate.evaluate(T0 + 2) == []  # 1.9/s over 10 s
    rate.observe([access(99, code=502, t=T0 + 2)])
    assert [a.observed for a in rate.evaluate(T0 + 2)] == [2.0]
    ratio = engine(type="threshold", metric="ratio", threshold=0.5, min_count=10)
    ratio.observe([access(i, code=500, t=T0) for i in range(6)])
    assert ratio.evaluate(T0 + 1) == []  # 6 records: below min_count
    ratio.observe([access(10 + i, t=T0) for i in range(6)])
    assert ratio.evaluate(T0 + 1)[0].observed == 0.5


def test_retries_grouped_by_route_and_realert():
    e = engine(type="threshold", threshold=3, query_key="route_name", filter={"retried": True}, realert="5s")
    e.observe([access(i, attempts=2, t=T0) for i in range(2)] + [access(9, flags=("URX",), t=T0)])
    e.observe([access(20 + i, attempts=3, cluster="webapp", t=T0) for i in range(2)])
    [fired] = e.evaluate(T0 + 1)
    assert fired.group_key == "route_name=route-catalog"
    e.observe([access(30 + i, attempts=2, t=T0 + 6) for i in range(3)])
    [again] = e.evaluate(T0 + 6.5)  # still above threshold after realert: notified again, same alert
    assert again.state == "firing" and again.id == fired.id and again.last_seen == T0 + 6.5


def test_event_clock_runs_on_between_records():
    e = engine(type="threshold", threshold=1)
    e.observe([access(1, code=500, t=T0)])
    assert e.now() >= T0
    assert [a.state for a in e.evaluate()] == ["firing"]
    assert [a.state for a in e.evaluate(e.now() + 11)] == ["resolved"]


def test_a_redelivered_batch_is_counted_once():
    e = engine(type="threshold", threshold=10)
    batch = [access(i, code=500, t=T0) for i in range(6)]
    e.observe(batch)
    e.observe(batch)  # the bus delivered it again (at-least-once)
    assert e.evaluate(T0 + 1) == []
    e.observe([access(i, code=500, t=T0) for i in range(6, 10)])
    assert [a.observed for a in e.evaluate(T0 + 1)] == [10]


def test_no_spike_before_a_reference_window_was_watched():
    quiet = engine(type="spike", spike_height=3, threshold_cur=10)
    quiet.observe([access(i, code=500, t=T0 + 1) for i in range(20)])  # 5xx from the very start
    assert quiet.evaluate(T0 + 2) == []  # could be the normal rate: no history yet
    eager = engine(type="spike", spike_height=3, threshold_cur=10, alert_on_new_data=True)
    eager.observe([access(i, code=500, t=T0 + 1) for i in range(20)])
    assert [a.state for a in eager.evaluate(T0 + 2)] == ["firing"]


def test_one_record_dated_years_ahead_does_not_move_the_clock():
    """Issue 12: an entry ten years ahead resolved a firing alert at once and hid the 503s after it."""
    e = engine(type="threshold", threshold=5)
    now = time.time()
    e.observe([access(i, code=503, t=now - 1 + i / 100) for i in range(6)])
    assert [a.state for a in e.evaluate()] == ["firing"]
    e.observe([access(99, code=200, t=now + 10 * 365 * 86400)])
    assert e.now() <= time.time() + 5
    assert e.evaluate() == []  # still firing, not resolved by a clock ten years ahead
    e.observe([access(100 + i, code=503, t=time.time()) for i in range(40)])
    assert e.evaluate() == []  # counted in the current window: the alert stays open, nothing resolved
    assert e.now() <= time.time() + 5


def test_records_older_than_max_age_are_not_alerted_on():
    """An imported log's past (a 5xx burst yesterday) neither fires nor turns the event clock back, nor
    makes a spike rule's reference window look watched; the same burst dated now fires."""
    now = time.time()
    rule = {"name": "r", "type": "threshold", "threshold": 10, "timeframe": 10, "filter": {"status_class": 5}}
    e = AlertEngine(parse_rules({"rules": [rule]}), max_age=900)
    e.observe([access(i, code=503, t=now - 86400 + i / 10) for i in range(20)])
    assert e.evaluate() == [] and e.now() >= now
    e.observe([access(100 + i, code=503, t=time.time() - 1 + i / 100) for i in range(20)])
    assert [a.state for a in e.evaluate()] == ["firing"]
    spike = AlertEngine(parse_rules({"rules": [{"name": "s", "type": "spike", "spike_height": 3,
                                                "threshold_cur": 10, "timeframe": 10}]}), max_age=900)
    spike.observe([access(i, code=200, t=now - 86400 + i) for i in range(20)])
    spike.observe([access(100 + i, code=200, t=time.time()) for i in range(20)])
    assert spike.evaluate() == []  # no reference window was watched: yesterday does not count
