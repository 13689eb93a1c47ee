"""Alert rules from YAML: the bundled file loads; every mistake names the rule and the field."""

from __future__ import annotations

import pytest
from meshscope.pipelines.alerts.rules import load_rules, parse_duration, parse_rules

from meshscope.errors import UserError
from tests.pipelines.traffic import access


def test_bundled_rules_are_a_5xx_and_a_retry_spike_per_cluster():
    rules = {r.name: r for r in load_rules()}
    assert set(rules) == {"upstream-5xx-spike", "upstream-retry-spike"}
    assert all(r.type == "spike" and r.query_key == "upstream_cluster" for r in rules.values())
    five, retry = rules["upstream-5xx-spike"], rules["upstream-retry-spike"]
    assert five.matches(access(1, code=503)) and not five.matches(access(1, code=404))
    assert retry.matches(access(1, attempts=2)) and retry.matches(access(1, flags=("URX",)))
    assert not retry.matches(access(1))


@pytest.mark.parametrize("value, seconds", [(30, 30), ("30s", 30), ("500ms", 0.5), ("5m", 300),
                                            ("1h", 3600), ({"minutes": 2, "seconds": 5}, 125)])
def test_durations(value, seconds):
    assert parse_duration(value, "x") == pytest.approx(seconds)


def test_filters_combine():
    [rule] = parse_rules({"rules": [{
        "name": "gw-flags", "type": "threshold", "threshold": 3, "timeframe": "10s", "query_key": "authority",
        "filter": {"status": [503, 504], "response_flags": ["UF", "UO"], "upstream_cluster": ["catalog"]},
    }]})
    assert rule.matches(access(1, code=503, flags=("UF",)))
    assert not rule.matches(access(1, code=503))  # no flag
    assert not rule.matches(access(1, code=500, flags=("UF",)))  # other status
    assert not rule.matches(access(1, code=503, flags=("UF",), cluster="webapp"))


@pytest.mark.parametrize("rule, message", [
    ({"type": "spike", "timeframe": 1}, "needs a name"),
    ({"name": "a", "type": "frequency", "timeframe": 1}, "a.*type: expected one of threshold, spike"),
    ({"name": "a", "type": "spike", "timeframe": "3q"}, "'a'.timeframe: expected a duration"),
    ({"name": "a", "type": "spike", "timeframe": 0}, "must be positive"),
    ({"name": "a", "type": "spike", "timeframe": 5, "spike_height": 1}, "spike_height: must be above 1"),
    ({"name": "a", "type": "spike", "timeframe": 5, "threshold": 3}, "unknown field.*threshold"),
    ({"name": "a", "type": "threshold", "timeframe": 5}, "needs a threshold"),
    ({"name": "a", "type": "threshold", "timeframe": 5, "threshold": 2, "metric": "ratio"},
     "between 0 and 1"),
    ({"name": "a", "type": "threshold", "timeframe": 5, "threshold": 1, "query_key": "colour"}, "query_key"),
    ({"name": "a", "type": "threshold", "timeframe": 5, "threshold": 1, "filter": {"colour": "red"}},
     "filter.colour: unknown filter"),
    ({"name": "a", "type": "threshold", "timeframe": 5, "threshold": 1, "filter": {"status_class": "5xx"}},
     "status_class: expected a int"),
    ({"name": "a", "type": "threshold", "timeframe": 5, "threshold": 1, "filter": {"retried": "yes"}},
     "retried: expected true or false"),
])
def test_mistakes_are_reported_with_rule_and_field(rule, message):
    with pytest.raises(UserError, match=message):
        parse_rules({"rules": [rule]})


def test_file_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read alert rules"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [name: {")
    with pytest.raises(UserError, match="cannot read alert rules"):
        load_rules(bad)
    bad.write_text("rules: 3")
    with pytest.raises(UserError, match="expected `rules:`"):
        load_rules(bad)
    twice = {"name": "a", "type": "threshold", "timeframe": 5, "threshold": 1}
    with pytest.raises(UserError, match="unique: a"):
        parse_rules({"rules": [twice, twice]})
