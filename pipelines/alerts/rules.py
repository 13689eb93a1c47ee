"""Alert rules from YAML: ``threshold`` and ``spike`` (ElastAlert's spike rule) over record filters.

A rules file holds ``rules: [ … ]``; each rule names its filter (5xx, retried, response flags,
upstream cluster / authority / route), its ``query_key`` (the field alerts are grouped by) and its
window. Every mistake is reported with the rule's name and the field, never half-loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshscope.errors import UserError
from meshscope.model import AccessRecord

QUERY_KEYS = ("upstream_cluster", "route_name", "authority", "node_cluster", "node_id")
MATCH_FIELDS = ("upstream_cluster", "route_name", "authority", "node_cluster", "method")
METRICS = ("count", "rate", "ratio")
SPIKE_TYPES = ("up", "down", "both")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ELASTALERT_UNIT = {"milliseconds": 0.001, "seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}

Predicate = Callable[[AccessRecord], bool]


@dataclass(slots=True, kw_only=True)
class Rule:
    """One validated rule. Durations are seconds."""

    name: str
    type: str  # "threshold" or "spike"
    timeframe: float
    query_key: str | None = "upstream_cluster"
    filter: dict[str, Any] = field(default_factory=dict)
    # threshold
    metric: str = "count"  # count in the window, rate per second, or ratio of all the group's records
    threshold: float = 0.0
    min_count: int = 0  # ratio: the group needs this many records in the window
    # spike (ElastAlert): current window against the one before it
    spike_height: float = 2.0
    spike_type: str = "up"
    threshold_ref: int = 0
    threshold_cur: int = 0
    alert_on_new_data: bool = False  # fire before a whole reference window has been seen
    # notifications
    realert: float = 300.0
    severity: str = "warning"
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    matches: Predicate = field(default=lambda r: True, repr=False, compare=False)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from 30, "30s", "500ms", "5m", "1h" or ElastAlert's {minutes: 5}."""
    if isinstance(value, bool):
        raise UserError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    elif isinstance(value, dict) and value and set(value) <= set(_ELASTALERT_UNIT):
        seconds = sum(float(v) * _ELASTALERT_UNIT[k] for k, v in value.items())
    else:
        raise UserError(f"{where}: expected a duration like 30s, 5m or {{minutes: 5}}, got {value!r}")
    if seconds <= 0:
        raise UserError(f"{where}: duration must be positive, got {value!r}")
    return seconds


def _as_set(value: Any, where: str, kind: type) -> frozenset:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        raise UserError(f"{where}: expected a {kind.__name__} or a list of them, got {value!r}")
    return frozenset(items)


def compile_filter(spec: Any, where: str) -> Predicate:
    """Turn a filter mapping into one predicate on AccessRecord; every condition must hold."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a mapping, got {spec!r}")
    checks: list[Predicate] = []
    for key, value in spec.items():
        here = f"{where}.{key}"
        if key == "status_class":
            classes = _as_set(value, here, int)
            checks.append(lambda r, c=classes: r.response_code is not None and r.response_code // 100 in c)
        elif key == "status":
            codes = _as_set(value, here, int)
            checks.append(lambda r, c=codes: r.response_code in c)
        elif key == "retried":
            if not isinstance(value, bool):
                raise UserError(f"{here}: expected true or false, got {value!r}")
            checks.append(lambda r, want=value: r.retried is want)
        elif key == "response_flags":
            flags = _as_set(value, here, str)
            checks.append(lambda r, f=flags: not f.isdisjoint(r.response_flags))
        elif key in MATCH_FIELDS:
            allowed = _as_set(value, here, str)
            checks.append(lambda r, k=key, a=allowed: getattr(r, k) in a)
        else:
            known = ", ".join(("status_class", "status", "retried", "response_flags") + MATCH_FIELDS)
            raise UserError(f"{here}: unknown filter (known: {known})")
    if not checks:
        return lambda r: True
    if len(checks) == 1:
        return checks[0]
    return lambda r: all(c(r) for c in checks)


def _number(raw: dict, key: str, where: str, default: float, minimum: float = 0.0) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise UserError(f"{where}.{key}: expected a number ≥ {minimum:g}, got {value!r}")
    return float(value)


def _choice(raw: dict, key: str, where: str, default: Any, choices: tuple) -> Any:
    value = raw.get(key, default)
    if value not in choices:
        raise UserError(f"{where}.{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value


_COMMON = {"name", "type", "filter", "query_key", "timeframe", "realert", "severity", "description", "labels"}
_ONLY = {
    "threshold": {"metric", "threshold", "min_count"},
    "spike": {"spike_height", "spike_type", "threshold_ref", "threshold_cur", "alert_on_new_data"},
}


def parse_rule(raw: Any, index: int) -> Rule:
    """Validate one rule mapping."""
    if not isinstance(raw, dict):
        raise UserError(f"rules[{index}]: expected a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"rules[{index}].name: every rule needs a name")
    where = f"rule {name!r}"
    kind = _choice(raw, "type", where, None, tuple(_ONLY))
    unknown = set(raw) - _COMMON - _ONLY[kind]
    if unknown:
        raise UserError(f"{where}: unknown field(s) for a {kind} rule: {', '.join(sorted(unknown))}")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict):
        raise UserError(f"{where}.labels: expected a mapping")
    rule = Rule(
        name=name, type=kind,
        timeframe=parse_duration(raw.get("timeframe"), f"{where}.timeframe"),
        query_key=_choice(raw, "query_key", where, "upstream_cluster", QUERY_KEYS + (None,)),
        filter=dict(raw.get("filter") or {}),
        realert=parse_duration(raw.get("realert", "5m"), f"{where}.realert"),
        severity=str(raw.get("severity", "warning")),
        description=str(raw.get("description", "")),
        labels={str(k): str(v) for k, v in labels.items()},
        matches=compile_filter(raw.get("filter"), f"{where}.filter"),
    )
    if kind == "threshold":
        rule.metric = _choice(raw, "metric", where, "count", METRICS)
        if "threshold" not in raw:
            raise UserError(f"{where}.threshold: a threshold rule needs a threshold")
        rule.threshold = _number(raw, "threshold", where, 0)
        rule.min_count = int(_number(raw, "min_count", where, 0))
        if rule.metric == "ratio" and rule.threshold > 1:
            raise UserError(f"{where}.threshold: a ratio is between 0 and 1, got {rule.threshold:g}")
    else:
        rule.spike_height = _number(raw, "spike_height", where, 2.0, minimum=1.0)
        if rule.spike_height <= 1.0:
            raise UserError(f"{where}.spike_height: must be above 1, got {rule.spike_height:g}")
        rule.spike_type = _choice(raw, "spike_type", where, "up", SPIKE_TYPES)
        rule.threshold_ref = int(_number(raw, "threshold_ref", where, 0))
        rule.threshold_cur = int(_number(raw, "threshold_cur", where, 0))
        rule.alert_on_new_data = raw.get("alert_on_new_data", False)
        if not isinstance(rule.alert_on_new_data, bool):
            raise UserError(f"{where}.alert_on_new_data: expected true or false")
    return rule


def parse_rules(document: Any, source: str = "rules") -> list[Rule]:
    """Validate a loaded YAML document ``{rules: [...]}`` (or a bare list)."""
    items = document.get("rules") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise UserError(f"{source}: expected `rules:` with a list of rules")
    rules = [parse_rule(raw, i) for i, raw in enumerate(items)]
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"{source}: rule names must be unique: {', '.join(duplicates)}")
    return rules


def default_rules_path() -> Path:
    return Path(__file__).resolve().parent.parent / "default_rules.yaml"


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Rules from a YAML file (the bundled default_rules.yaml when path is None)."""
    path = Path(path) if path else default_rules_path()
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read alert rules {path}: {exc}") from exc
    return parse_rules(document, str(path))
