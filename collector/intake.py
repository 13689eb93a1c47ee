"""Record sanity at intake: one bad record must not blind the alerts, bloat the store or hide itself.

Every receiver's records pass ``IntakeCheck.apply`` (in the publisher) before anything else sees them:
- a time outside the window around the collector's clock (default 1 h ahead, 30 days behind) is
  clamped to the window's edge, or the record rejected (``time_policy``); either way it is counted and
  a clamped record carries a note with the time it claimed;
- a request id the lookup could never find (``/`` in it, longer than 200 characters) is moved into a
  note, so the record stays visible without a dangling id;
- a text field longer than ``max_field`` is cut, with a note; an entry still larger than
  ``max_entry`` is rejected. Everything is counted in ``meshscope_collector_intake``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from meshscope.model import AccessRecord, Record, Span
from meshscope.model.ids import request_id_problem, request_ids_all_fine
from meshscope.model.rows import row_shape

ACCESS_TEXT = ("path", "authority", "user_agent", "x_forwarded_for", "response_code_details",
               "upstream_failure_reason", "connection_termination_details", "route_name", "sni",
               "trace_id", "span_id", "parent_span_id", "upstream_cluster", "node_id", "node_cluster")
_access_text = attrgetter(*ACCESS_TEXT)
_access_widest = row_shape(AccessRecord).widest(ACCESS_TEXT)  # a record's text length, longest in a batch


@dataclass(slots=True, kw_only=True)
class IntakeLimits:
    max_ahead: float = 3600.0  # seconds a record may claim to be in the future
    max_behind: float = 30 * 86400.0  # seconds a record may be old
    time_policy: str = "clamp"  # "clamp" or "reject"
    max_field: int = 16 * 1024  # characters in one text field (path, header value, tag value)
    max_entry: int = 64 * 1024  # characters in all of a record's text together

    def __post_init__(self) -> None:
        if self.time_policy not in ("clamp", "reject"):
            raise ValueError(f"intake time policy must be 'clamp' or 'reject', not {self.time_policy!r}")


class IntakeCheck:
    """Applies IntakeLimits to record batches; ``count(protocol, reason, n)`` records what it did."""

    def __init__(self, limits: IntakeLimits | None = None,
                 count: Callable[[str, str, int], None] = lambda p, r, n: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or IntakeLimits()
        self.count = count
        self.clock = clock

    def apply(self, records: Sequence[Record], protocol: str, *, history: bool = False) -> list[Record]:
        """The records to publish: fixed in place where they can be, without the rejected ones.
        ``history``: records known to be old (an imported log file): no bound behind the clock."""
        now = self.clock()
        lim = self.limits
        low, high = (float("-inf") if history else now - lim.max_behind), now + lim.max_ahead
        if _access_batch_clean(records, low, high, lim.max_field):
            return list(records)
        return self.apply_each(records, protocol, low, high)

    def apply_each(self, records: Sequence[Record], protocol: str, low: float, high: float) -> list[Record]:
        """``apply`` record by record (the reference the batch test in ``apply`` must agree with)."""
        kept: list[Record] = []
        for r in records:
            if isinstance(r, AccessRecord):
                ok = self._access(r, low, high, protocol)
            elif isinstance(r, Span):
                ok = self._span(r, low, high, protocol)
            else:
                ok = True
            if ok:
                kept.append(r)
        return kept

    # ---- per kind ------------------------------------------------------------------------------
    def _time(self, r: Record, t: float, low: float, high: float, protocol: str, field: str) -> float | None:
        """The time to keep (None: reject the record)."""
        if low <= t <= high:
            return t
        reason = "time_ahead" if t > high else "time_behind"
        if self.limits.time_policy == "reject":
            self.count(protocol, reason, 1)
            return None
        self.count(protocol, reason + "_clamped", 1)
        edge = high if t > high else low
        _note(r, f"{field} {t!r} was outside the intake window ({self.limits.max_ahead / 3600:g} h ahead, "
                 f"{self.limits.max_behind / 86400:g} d behind the collector's clock); clamped to {edge:.3f}")
        return edge

    def _access(self, r: AccessRecord, low: float, high: float, protocol: str) -> bool:
        t = r.start_time
        if not (low <= t <= high):
            t = self._time(r, t if t == t else 0.0, low, high, protocol, "start_time")  # NaN → 0
            if t is None:
                return False
            r.start_time = t
        if r.request_id is not None and (problem := request_id_problem(r.request_id)):
            self.count(protocol, "request_id", 1)
            _note(r, f"request id not kept ({problem}): {r.request_id[:200]!r}…"
                  if len(r.request_id) > 200 else f"request id not kept ({problem}): {r.request_id!r}")
            r.request_id = None
        if sum(map(len, filter(None, _access_text(r)))) > self.limits.max_field:  # then look at each field
            total = 0
            for name in ACCESS_TEXT:
                value = getattr(r, name)
                if value is not None and len(value) > self.limits.max_field:
                    self.count(protocol, "field_cut", 1)
                    _note(r, f"{name} cut from {len(value)} to {self.limits.max_field} characters")
                    value = value[: self.limits.max_field]
                    setattr(r, name, value)
                total += len(value or "")
            if total > self.limits.max_entry:
                self.count(protocol, "entry_too_large", 1)
                return False
        return True

    def _span(self, s: Span, low: float, high: float, protocol: str) -> bool:
        if s.timestamp is not None:
            t = s.timestamp / 1e6
            if not (low <= t <= high):
                kept = self._time(s, t, low, high, protocol, "timestamp")
                if kept is None:
                    return False
                s.timestamp = int(kept * 1e6)
        rid = s.tags.get("guid:x-request-id")
        if rid is not None and (problem := request_id_problem(rid)):
            self.count(protocol, "request_id", 1)
            _note(s, f"request id not kept ({problem}): {rid[:200]!r}")
            del s.tags["guid:x-request-id"]
        lim = self.limits
        total = sum(len(k) + len(v) for k, v in s.tags.items()) + len(s.name or "")
        if total > lim.max_field:
            for k, v in list(s.tags.items()):
                if len(v) > lim.max_field and k != "meshscope.intake":
                    self.count(protocol, "field_cut", 1)
                    s.tags[k] = v[: lim.max_field]
                    _note(s, f"tag {k[:100]!r} cut from {len(v)} to {lim.max_field} characters")
            if s.name and len(s.name) > lim.max_field:
                self.count(protocol, "field_cut", 1)
                s.name = s.name[: lim.max_field]
            total = sum(len(k) + len(v) for k, v in s.tags.items()) + len(s.name or "")
            if total > lim.max_entry:
                self.count(protocol, "entry_too_large", 1)
                return False
        return True


_start_time, _request_id = attrgetter("start_time"), attrgetter("request_id")


def _access_batch_clean(records: Sequence[Record], low: float, high: float, max_field: int) -> bool:
    """True when a batch of AccessRecords needs nothing from intake, found with a few whole-batch
    passes at C speed instead of a look at each record (the common case: about a third of the cost):
    every time inside the window (their sum is NaN if one is), every request id one the lookup finds,
    no record whose text fields pass ``max_field`` together (the test ``_access`` makes, in one C
    call: RowShape.widest, which also refuses a record that is not exactly an AccessRecord; that, or a
    value that is not a str, sends the batch record by record)."""
    try:
        if not records or _access_widest(records) > max_field:
            return False
    except TypeError:
        return False
    times = list(map(_start_time, records))
    total = sum(times)
    if not (total == total and low <= min(times) and max(times) <= high):
        return False
    return request_ids_all_fine([rid for rid in map(_request_id, records) if rid is not None])


def _note(r: Record, text: str) -> None:
    """A note on the record saying what intake changed (AccessRecord.notes; a Span's tag)."""
    if isinstance(r, Span):
        prior = r.tags.get("meshscope.intake")
        r.tags["meshscope.intake"] = f"{prior}; {text}" if prior else text
    else:
        r.notes.append(text)  # type: ignore[attr-defined]
