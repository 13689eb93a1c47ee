"""The base every record shares: a deterministic id and a JSON form (orjson, fast)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

import orjson

R = TypeVar("R", bound="Record")


@dataclasses.dataclass(slots=True, kw_only=True)
class Record:
    kind: ClassVar[str] = "record"
    topic: ClassVar[str | None] = None  # the bus topic records of this kind travel on (None: not on the bus)

    id: str = ""  # deterministic: filled from compute_id() when not given

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.compute_id()

    def compute_id(self) -> str:  # pragma: no cover - every record overrides it
        raise NotImplementedError

    def time(self) -> float | None:  # pragma: no cover - every record overrides it
        """The record's own time in epoch seconds: what retention and time-based indices go by."""
        raise NotImplementedError

    def partition_key(self) -> str | None:
        """What the bus partitions by, so that records about one request stay in order."""
        return self.id

    def to_dict(self) -> dict[str, Any]:
        return orjson.loads(orjson.dumps(self))

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        return cls(**_known_fields(cls, data))

    @classmethod
    def from_json(cls: type[R], data: bytes | str) -> R:
        return cls.from_dict(orjson.loads(data))


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keep only the fields cls declares, building nested records (Connection, Hop) from dicts."""
    out: dict[str, Any] = {}
    nested = _NESTED.get(cls, {})
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            sub = nested.get(f.name)
            if sub is not None and isinstance(value, dict):
                value = sub(**_known_fields(sub, value))
            elif sub is not None and isinstance(value, list):
                value = [sub(**_known_fields(sub, v)) if isinstance(v, dict) else v for v in value]
            out[f.name] = value
    return out


_NESTED: dict[type, dict[str, type]] = {}


def register_nested(cls: type, **fields: type) -> None:
    """Declare which fields of cls hold nested dataclasses, for from_dict()."""
    _NESTED[cls] = fields
