"""Streaming alert evaluation: counts per rule, group and time bucket, updated as records pass.

Time is event time (``AccessRecord.start_time``); between records the clock runs on with the wall
clock, so a window closes (and an alert resolves) without new records arriving. ``observe`` is
called with every batch and ``evaluate`` after it and on a timer tick; both are cheap.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshscope.pipelines.alerts.rules import Rule

from meshscope.model import AccessRecord, Alert, Record

SAMPLES = 5
SKEW = 5.0  # seconds the event clock may run ahead of this machine's wall clock (proxies' clocks drift)


@dataclass(slots=True)
class _Group:
    """One group of one rule: [matching, total] per bucket, recent sample ids, the open alert."""

    buckets: dict[int, list[int]] = field(default_factory=dict)
    samples: deque = field(default_factory=lambda: deque(maxlen=SAMPLES))
    firing: Alert | None = None
    notified: float = 0.0


@dataclass(slots=True)
class _RuleState:
    rule: Rule
    width: float  # bucket width, seconds
    span: int  # buckets per timeframe
    groups: dict[str, _Group] = field(default_factory=dict)


def _bucket_width(timeframe: float) -> float:
    """Twenty buckets per window, between 0.1 s and 1 s wide: fine enough for the 5 s bound."""
    return max(0.1, min(1.0, timeframe / 20))


class AlertEngine:
    """Evaluates rules on the record stream; ``evaluate`` returns new firings and resolutions."""

    def __init__(self, rules: Iterable[Rule], remember: int = 100_000, max_age: float | None = None) -> None:
        self.rules = list(rules)
        self.remember = remember  # record ids kept for deduplication: more than a redelivered batch
        # records older than this behind the wall clock (an imported log's past, a replay after a long
        # outage) are not counted: they would set the event clock back and fire alerts about the past
        self.max_age = max_age
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._states = []
        for rule in self.rules:
            width = _bucket_width(rule.timeframe)
            self._states.append(_RuleState(rule, width, max(1, round(rule.timeframe / width))))
        self._max_event: float | None = None
        self._first_event: float | None = None  # a spike needs a reference window seen whole
        self._max_event_at = 0.0  # monotonic time when _max_event last advanced

    def now(self) -> float:
        """Event-time clock: the newest record's time, advanced by the wall time since it arrived; never
        more than SKEW ahead of the wall clock, so one record dated in the future cannot resolve what
        fires or hide what follows."""
        wall = time.time()
        if self._max_event is None:
            return wall
        return min(self._max_event + (time.monotonic() - self._max_event_at), wall + SKEW)

    def observe(self, records: Iterable[Record]) -> None:
        """Count access records into every rule's buckets, each record once: a batch the bus
        delivers again (at-least-once) is not counted twice."""
        seen = self._seen
        access = []
        floor = -math.inf if self.max_age is None else time.time() - self.max_age
        for r in records:
            if isinstance(r, AccessRecord) and r.start_time >= floor and r.id not in seen:
                seen[r.id] = None
                access.append(r)
        while len(seen) > self.remember:
            seen.popitem(last=False)
        if not access:
            return
        newest = min(max(r.start_time for r in access), time.time() + SKEW)
        oldest = min(r.start_time for r in access)
        if self._first_event is None or oldest < self._first_event:
            self._first_event = oldest
        if self._max_event is None or newest > self.now():
            self._max_event, self._max_event_at = newest, time.monotonic()
        for state in self._states:
            rule, width, groups = state.rule, state.width, state.groups
            matches, key = rule.matches, rule.query_key
            need_total = rule.type == "threshold" and rule.metric == "ratio"
            for r in access:
                hit = matches(r)
                if not hit and not need_total:
                    continue
                name = (getattr(r, key) or "") if key else ""
                group = groups.get(name)
                if group is None:
                    group = groups[name] = _Group()
                b = int(r.start_time // width)
                cell = group.buckets.get(b)
                if cell is None:
                    cell = group.buckets[b] = [0, 0]
                cell[1] += 1
                if hit:
                    cell[0] += 1
                    if r.request_id:
                        group.samples.append(r.request_id)

    def evaluate(self, now: float | None = None) -> list[Alert]:
        """Close windows at ``now`` (default: the event clock); return alerts to store and send."""
        now = self.now() if now is None else now
        out: list[Alert] = []
        for state in self._states:
            # the bucket holding `now` is partial, so the current window is that bucket and the
            # `span` before it: it always covers [now - timeframe, now]
            cur_from = math.floor(now / state.width) - state.span
            ref_from = cur_from - state.span
            for name in list(state.groups):
                group = state.groups[name]
                cur = [0, 0]
                ref = [0, 0]
                for b in [b for b in group.buckets if b < ref_from]:
                    del group.buckets[b]
                for b, (m, t) in group.buckets.items():
                    into = cur if b >= cur_from else ref
                    into[0] += m
                    into[1] += t
                alert = self._decide(state.rule, name, group, cur, ref, now)
                if alert is not None:
                    out.append(alert)
                if not group.buckets and group.firing is None:
                    del state.groups[name]
        return out

    def _decide(self, rule: Rule, name: str, group: _Group, cur: list[int], ref: list[int],
                now: float) -> Alert | None:
        firing, observed, baseline = _condition(rule, cur, ref)
        if (firing and group.firing is None and rule.type == "spike" and not rule.alert_on_new_data
                and (self._first_event is None or now - self._first_event < rule.timeframe)):
            # as ElastAlert: no spike against a reference window that was not watched yet
            firing = False
        if firing and group.firing is None:
            group.firing = self._alert(rule, name, group, "firing", now, now, observed, baseline)
            group.notified = now
            return group.firing
        if firing and group.firing is not None and now - group.notified >= rule.realert:
            group.notified = now  # re-notification: same alert (same id), newer figures
            group.firing = self._alert(rule, name, group, "firing", group.firing.first_seen, now,
                                       observed, baseline)
            return group.firing
        if not firing and group.firing is not None:
            opened, group.firing = group.firing, None
            return self._alert(rule, name, group, "resolved", opened.first_seen, now, observed, baseline,
                               samples=opened.sample_request_ids)
        return None

    @staticmethod
    def _alert(rule: Rule, name: str, group: _Group, state: str, first: float, last: float,
               observed: float, baseline: float | None, samples: list[str] | None = None) -> Alert:
        group_key = f"{rule.query_key}={name}" if rule.query_key else "all"
        labels = {"alertname": rule.name, "severity": rule.severity, **rule.labels}
        if rule.query_key:
            labels[rule.query_key] = name
        return Alert(
            rule=rule.name, group_key=group_key, state=state, window_s=rule.timeframe,
            observed=observed, baseline=baseline, first_seen=first, last_seen=last,
            sample_request_ids=list(group.samples) if samples is None else samples,
            labels=labels, description=_describe(rule, group_key, observed, baseline),
        )


def _condition(rule: Rule, cur: list[int], ref: list[int]) -> tuple[bool, float, float | None]:
    """(holds, observed value, baseline) for one group's current and reference windows."""
    if rule.type == "spike":
        c, r = cur[0], ref[0]
        if c < rule.threshold_cur or r < rule.threshold_ref:
            return False, c, r
        up = c > 0 and c >= r * rule.spike_height
        down = r > 0 and c <= r / rule.spike_height
        holds = {"up": up, "down": down, "both": up or down}[rule.spike_type]
        return holds, c, r
    if rule.metric == "count":
        return cur[0] >= rule.threshold and cur[0] > 0, cur[0], rule.threshold
    if rule.metric == "rate":
        rate = cur[0] / rule.timeframe
        return rate >= rule.threshold and cur[0] > 0, rate, rule.threshold
    total = cur[1]
    ratio = cur[0] / total if total else 0.0
    return total >= max(rule.min_count, 1) and ratio >= rule.threshold and cur[0] > 0, ratio, rule.threshold


def _describe(rule: Rule, group_key: str, observed: float, baseline: float | None) -> str:
    window = f"{rule.timeframe:g} s"
    if rule.type == "spike":
        spike = f"spike {rule.spike_type} ×{rule.spike_height:g}"
        return (f"{rule.description or rule.name}: {group_key}: {observed:g} in the last {window} "
                f"against {baseline:g} in the {window} before ({spike})")
    unit = {"count": "", "rate": "/s", "ratio": " of requests"}[rule.metric]
    return (f"{rule.description or rule.name}: {group_key}: {observed:g}{unit} over {window} "
            f"(threshold {rule.threshold:g}{unit})")
