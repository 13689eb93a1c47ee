"""Records as rows and back (meshscope/model/rows.py): the C layout (_record_slots.c) against the
Python reference, on every record type the bus carries, with values of every kind."""

from __future__ import annotations

import importlib
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshscope.model import AccessRecord, Alert, Span
from meshscope.model.rows import RowShape, row_shape

_VALUE = st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats(allow_nan=False),
                   st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                st.text(max_size=5)))


def test_the_extension_is_built():
    """scripts/setup.sh builds it (pip install -e .): without it the collector takes the slow path."""
    importlib.import_module("meshscope.model._record_slots")
    assert row_shape(AccessRecord).native


@pytest.mark.parametrize("cls", [AccessRecord, Span, Alert])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_c_and_python_agree(cls, data):
    fast, slow = RowShape(cls), RowShape(cls, native=False)
    assert fast.native and not slow.native and fast.names == slow.names
    rows = [tuple(data.draw(_VALUE) for _ in fast.names) for _ in range(data.draw(st.integers(1, 4)))]
    made = [fast.make(*row) for row in rows]
    assert made == [slow.make(*row) for row in rows]
    assert fast.rows(made) == slow.rows(made) == rows


def test_a_made_record_is_a_whole_record():
    """make() runs no __init__: the row carries the id; the record is then as the constructor makes it."""
    r = AccessRecord(start_time=1.5, node_id="n", request_id="r", response_flags=["UF"])
    shape = row_shape(AccessRecord)
    (row,) = shape.rows([r])
    copy = shape.make(*row)
    assert copy == r and copy is not r and type(copy) is AccessRecord
    assert copy.id == r.compute_id() and copy.retried is False
    copy.notes.append("x")  # the same list objects: a row is a view, not a deep copy
    assert r.notes == ["x"]
    assert sys.getrefcount(copy) == sys.getrefcount(r)  # no leaked reference


def test_acyclic_records_are_left_to_reference_counting():
    """AccessRecord says it can never be in a reference cycle: what make() builds is not tracked by
    the garbage collector, nor are its lists of str, and it is freed when its last reference goes;
    other records stay tracked."""
    import gc

    shape = row_shape(AccessRecord)
    r = shape.make(*shape.rows([AccessRecord(start_time=1.0, node_id="n")])[0])
    assert not gc.is_tracked(r) and not gc.is_tracked(r.notes) and not gc.is_tracked(r.response_flags)
    # a list of str only is left out too (it cannot be in a cycle); one holding anything else is kept
    mixed = shape.make(*shape.rows([AccessRecord(start_time=1.0, node_id="n", notes=["a", ["b"]],
                                                 response_flags=["UF", "URX"])])[0])
    assert gc.is_tracked(mixed.notes) and not gc.is_tracked(mixed.response_flags)
    span_shape = row_shape(Span)
    s = span_shape.make(*span_shape.rows([Span(trace_id="a", span_id="b")])[0])
    assert gc.is_tracked(s)
    notes = r.notes
    held = sys.getrefcount(notes)
    del r  # freed at once: its list lost the record's reference
    assert sys.getrefcount(notes) == held - 1


def test_wrong_input_is_refused_not_crashed():
    fast, slow = RowShape(AccessRecord), RowShape(AccessRecord, native=False)
    n = len(fast.names)
    for shape in (fast, slow):
        with pytest.raises((TypeError, ValueError)):
            shape.make(*(None,) * (n - 1))
        with pytest.raises(TypeError):
            shape.rows([Span(trace_id="a", span_id="b")])
    with pytest.raises(TypeError):
        fast.make(*(None,) * n, row=None)  # fields by position only
    half = object.__new__(AccessRecord)  # a field never set: as attrgetter says
    for shape in (fast, slow):
        with pytest.raises(AttributeError):
            shape.rows([half])
    from meshscope.model._record_slots import Layout

    with pytest.raises(TypeError):
        Layout(AccessRecord, ["kind"])  # a class attribute, not a slot
    with pytest.raises(AttributeError):
        Layout(AccessRecord, ["no_such_field"])


_TEXT_OR_NONE = st.one_of(st.none(), st.text(max_size=30))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_widest_c_and_python_agree(data):
    """widest(names): the longest total text of the named fields in one record (intake's batch test)."""
    names = tuple(data.draw(st.lists(st.sampled_from(("path", "authority", "node_id", "route_name", "sni")),
                                     min_size=1, max_size=5, unique=True)))
    records = [AccessRecord(start_time=1.0, node_id=data.draw(st.text(max_size=10)),
                            **{n: data.draw(_TEXT_OR_NONE) for n in names if n != "node_id"})
               for _ in range(data.draw(st.integers(0, 5)))]
    fast, slow = RowShape(AccessRecord).widest(names), RowShape(AccessRecord, native=False).widest(names)
    expected = max((sum(len(getattr(r, n) or "") for n in names) for r in records), default=0)
    assert fast(records) == slow(records) == expected


def test_widest_refuses_what_is_not_text():
    """A value that is not a str, or a record of another type, is a TypeError (intake then looks at
    each record), from C and Python alike."""
    for shape in (RowShape(AccessRecord), RowShape(AccessRecord, native=False)):
        widest = shape.widest(("path", "authority"))
        with pytest.raises(TypeError):
            widest([AccessRecord(start_time=1.0, node_id="n", path=["/a"])])
        with pytest.raises(TypeError):
            widest([Span(trace_id="t", span_id="s", name="x")])
