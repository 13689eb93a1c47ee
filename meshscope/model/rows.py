"""A record type's fields as rows (tuples in field order) and back, without a call per field.

The collector builds a record for every entry it takes, and the bus's write-ahead log reads each back
as a row (``wal.py``): with an AccessRecord's 46 fields, keyword ``__init__`` and ``attrgetter`` cost
about 3 µs each per record. ``RowShape(cls).make(*row)`` builds a record from every field's value,
in order, without running ``__init__`` (the id included); ``rows(records)`` reads them back;
``widest(names)`` measures the longest text a batch's records hold (the collector's intake). All run in
C (``_record_slots.c``) when it was built; the Python below is the reference and the fallback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import cache
from operator import attrgetter
from typing import Any, Generic, TypeVar

try:  # compiled by the package's install (scripts/setup.sh), like decoders/_record_scan.c
    from meshscope.model._record_slots import Layout as _Layout
except ImportError:  # pragma: no cover - a checkout whose extension was not built
    _Layout = None

R = TypeVar("R")


class RowShape(Generic[R]):
    """The row form of a slots dataclass: ``names`` (its fields in order), ``make``, ``rows``."""

    def __init__(self, cls: type[R], *, native: bool = True) -> None:
        self.cls = cls
        self.names: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        # a record type that can never be in a reference cycle says so (AccessRecord.acyclic): the
        # records made here then stay out of the garbage collector's generations (C only)
        acyclic = bool(getattr(cls, "acyclic", False))
        layout = _Layout(cls, self.names, acyclic) if native and _Layout is not None else None
        self._layout = layout
        self.native = layout is not None
        if layout is not None:
            self.make: Callable[..., R] = layout.make
            self.rows: Callable[[Sequence[R]], list[tuple]] = layout.rows
        else:
            self.make = _python_make(cls, self.names)
            read = attrgetter(*self.names)
            self.rows = lambda records: [read(r) for r in _exactly(cls, records)]

    def widest(self, names: Sequence[str]) -> Callable[[Sequence[R]], int]:
        """A function of records: the largest total length of the ``names`` fields (str or None) in one
        record, 0 for none; TypeError for a record not exactly this type or a value not a str."""
        layout = self._layout
        if layout is not None:
            fields = tuple(map(self.names.index, names))
            return lambda records: layout.widest(records, fields)
        read = attrgetter(*names) if len(names) > 1 else lambda r: (getattr(r, names[0]),)

        def width(r: Any) -> int:
            values = [v for v in read(r) if v is not None]
            if not all(type(v) is str for v in values):
                raise TypeError(f"widest() found a {type(values[0]).__name__}, not a str")
            return sum(map(len, values))

        return lambda records: max(map(width, _exactly(self.cls, records)), default=0)


@cache
def row_shape(cls: type[R]) -> RowShape[R]:
    """The one RowShape of a record type."""
    return RowShape(cls)


def _python_make(cls: type, names: tuple[str, ...]) -> Callable[..., Any]:
    """``make(*row)``: ``object.__new__`` and one tuple unpacking into the slots (generated, as
    dataclasses generates ``__init__``)."""
    env: dict[str, Any] = {"new": object.__new__, "cls": cls}
    targets = "".join(f"r.{n}, " for n in names)
    exec(f"def make(*row):\n    r = new(cls)\n    {targets}= row\n    return r\n", env)  # noqa: S102
    return env["make"]


def _exactly(cls: type, records: Sequence[Any]) -> Sequence[Any]:
    for r in records:
        if type(r) is not cls:
            raise TypeError(f"rows() of {cls.__name__} records got a {type(r).__name__}")
    return records
