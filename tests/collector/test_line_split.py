"""An access-log line cut into its values and built into its record in C (collector/_line_split.c)
against the Python it replaces (the format's regular expression and the generated builder): the same
values (or the same "not this format"), the same records and ids, the same errors, on the known formats
and custom ones, with lines built from their pieces and mangled at random; and a whole import's
batches and report with runs of lines built in one call against line by line."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.collector.access_log_lines import (
    ENVOY_DEFAULT_FORMAT,
    ISTIO_JSON,
    ISTIO_TEXT_FORMAT,
    BadLine,
    ImportReport,
    LineParser,
    Origin,
    compile_format,
    json_format,
    make_record,
    parse_lines,
)

from tests.collector.test_access_log_lines import ENVOY_LINE, ISTIO_LINE, JSON_LINE, TCP_LINE

FORMATS = [ISTIO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT,
           "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %DURATION% %ROUTE_NAME%",
           "%START_TIME% %RESPONSE_FLAGS% rid=%REQ(X-REQUEST-ID)%;",  # ends in a literal
           "%START_TIME%|%BYTES_SENT%|%UNKNOWN_OPERATOR%|%UPSTREAM_HOST%",
           # two operators for one field (the first set wins), a float, a code, no method
           "%START_TIME(%s)% %REQ(:PATH)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %DURATION% %RESPONSE_CODE% "
           "%REQ(X-ENVOY-ATTEMPT-COUNT)% %RESPONSE_FLAGS% %RESPONSE_FLAGS% end"]
PAIRS = [(compile_format(f, native=True), compile_format(f, native=False)) for f in FORMATS]

# what a value may hold: the format's own delimiters, "-", blanks and newlines of every kind, non-Latin-1
_PIECE = st.sampled_from(["-", "", " ", '"', "[", "]", "|", ";", "\n", "\r", "\t", "\x0b", "\u2028", "\u00a0",
                          "2024-05-01T12:00:00.123Z", "200", "GET", "/a b", "UF,URX", "10.0.0.1:80", "ä",
                          "😀", "rid=", "x",
                          # values only Python's int(), float() and start-time parser read (or refuse)
                          "0", "35.5", "+7", "1_0", "١٢", "1e3", "inf", "nan", "99999999999999999999",
                          "12345678901234567", "007",
                          "2024-05-01T12:00:00.12٣Z", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5Z",
                          "1714564800.25", "2024-13-01T12:00:00.123Z", "\ud800"])


def test_the_extension_is_built():
    """scripts/setup.sh builds it (pip install -e .): without it lines are cut by the regex and built in
    Python."""
    importlib.import_module("meshscope.collector._line_split")
    assert all(fast.native and not slow.native for fast, slow in PAIRS)
    assert all(fast.build_many is not None and slow.build_many is None for fast, slow in PAIRS)


def _outcome(fmt, line: str, node_id: str = "node", log_name: str = "log"):
    try:
        return fmt.record(line, node_id, log_name)
    except (BadLine, ValueError, TypeError) as exc:
        return type(exc), str(exc)


def _same(a, b) -> bool:
    """Equal outcomes; records field by field as their reprs (a NaN time equals itself)"""
    if a is None or b is None or isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    return type(a) is type(b) and repr(dataclasses.astuple(a)) == repr(dataclasses.astuple(b))


def _agree(fast, slow, line: str) -> None:
    got = fast.split(line)
    assert got == slow.split(line), line
    if got is None:
        assert fast.record(line, "node", "log") is None
        return
    outcomes = [_outcome(fmt, line) for fmt in (fast, slow)]
    assert _same(*outcomes), line
    record = outcomes[0]
    if not isinstance(record, tuple):  # the id as AccessRecord.compute_id gives it, byte for byte
        assert record.id == record.compute_id(), line
        assert type(record.start_time) is float, line


def test_known_lines_split_alike():
    for fast, slow in PAIRS[:2]:
        for line in (ISTIO_LINE, TCP_LINE, ISTIO_LINE.rstrip("\n"), ISTIO_LINE + "  \t", "", "[", "-"):
            _agree(fast, slow, line)
    fast, _ = PAIRS[0]
    assert fast.record(ISTIO_LINE.rstrip("\n"), "n", "l").request_id == "a8a0f1d2-1234-4567-8abc-1234567890ab"


@pytest.mark.parametrize("index", range(len(FORMATS)))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_lines_split_as_the_regex_does(index, data):
    fast, slow = PAIRS[index]
    values = [("".join(data.draw(st.lists(_PIECE, max_size=4)))) for _ in fast.readers]
    literals = list(fast.literals)
    line = literals[0] + "".join(v + lit for v, lit in zip(values, literals[1:], strict=True))
    _agree(fast, slow, line)
    if line:  # and mangled: a character dropped, doubled or replaced
        i = data.draw(st.integers(0, len(line) - 1))
        for mangled in (line[:i] + line[i + 1:], line[:i] + line[i] + line[i:],
                        line[:i] + data.draw(_PIECE) + line[i + 1:], line + data.draw(_PIECE)):
            _agree(fast, slow, mangled)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_any_text_splits_as_the_regex_does(text):
    for fast, slow in PAIRS:
        _agree(fast, slow, text)


@pytest.mark.parametrize("node_id", ["", "productpage-v1-abc.default", "ä😀 node"])
def test_known_lines_build_alike_under_any_proxy_name(node_id):
    for fast, slow in PAIRS[:2]:
        for line in (ISTIO_LINE, TCP_LINE, ENVOY_LINE, ISTIO_LINE.replace("/productpage", "/ä" * 200)):
            line = line.rstrip("\n")
            outcomes = [_outcome(fmt, line, node_id, "istio-proxy") for fmt in (fast, slow)]
            assert _same(*outcomes), line


def _parse(lines: list[str], native: bool, batch: int, custom: str | None):
    parser = LineParser(compile_format(custom, native=native) if custom else None, Origin("file.log", "c"))
    strings = ([custom] if custom else []) + [ISTIO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT]
    parser.texts = [compile_format(f, t.name, native=native) if t.name != "custom" else t
                    for t, f in zip(parser.texts, strings, strict=True)]
    report = ImportReport()
    batches = list(parse_lines(lines, parser, report, batch=batch))
    return batches, report.to_dict()


_LINES = [ISTIO_LINE, TCP_LINE, ENVOY_LINE, JSON_LINE, "\n", "", "  \r\n", "garbage\n",
          "[pod/productpage-v1-abc/istio-proxy] " + ISTIO_LINE,
          "[pod/reviews-v2-xyz/istio-proxy] " + ENVOY_LINE, "[pod/reviews-v2-xyz/istio-proxy] " + TCP_LINE,
          "[pod/reviews-v1-xyz/istio-proxy] " + ISTIO_LINE,  # as long as the one before: another proxy
          "[pod/p/c]" + ISTIO_LINE, "[pod/a b/c] " + ISTIO_LINE,
          "[pod/productpage-v1-abc/istio-proxy] 2024-05-01T12:00:00.123456789Z " + ISTIO_LINE,
          "[pod/p/c] [garbage\n", "[pod/p/c] " + ISTIO_LINE.replace("200", "2x0", 1),
          "bookinfo reviews-v2-xyz istio-proxy " + ENVOY_LINE,
          ISTIO_LINE.rstrip("\n") + "\r\n", ISTIO_LINE.rstrip("\n"), "\x1b[32m" + ISTIO_LINE,
          ISTIO_LINE.replace("200", "2x0", 1), ISTIO_LINE.replace("2024-05-01T12:00:00.123Z", "yesterday"),
          ENVOY_LINE.replace(' 12 ', ' 1_2 '), "[2024-05-01T12:00:00.123Z] x " + FORMATS[2][-30:] + "\n"]


def _agree_on_import(lines: list[str], batch: int, custom: str | None) -> None:
    fast = _parse(lines, True, batch, custom)
    slow = _parse(lines, False, batch, custom)
    assert fast[1] == slow[1]
    assert [len(b) for b in fast[0]] == [len(b) for b in slow[0]]
    pairs = (pair for fb, sb in zip(fast[0], slow[0], strict=True) for pair in zip(fb, sb, strict=True))
    assert all(_same(a, b) for a, b in pairs)
    assert all(len(b) == batch for b in fast[0][:-1])


@pytest.mark.parametrize("custom", [None, FORMATS[2]])
def test_an_import_of_every_kind_of_line_built_in_runs(custom):
    """The whole pool in order, reversed and twice over: each kind of line after each other kind (two
    kubectl prefixes of one length in a row: the C builder's last prefix is not taken for another)."""
    _agree_on_import(_LINES + _LINES[::-1] + _LINES, 7, custom)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_an_import_built_in_runs_is_the_import_built_line_by_line(data):
    """parse_lines with the C builder (runs of plain lines in one build_many call, the rest line by
    line) against the Python builder line by line: the same batches of the same records, the same
    report (counts per format in the same order, bad lines with the same numbers and reasons)."""
    pool = _LINES + [line[:i] + line[i + 1:] for line in _LINES[:3] for i in (0, 1, 5, 30, -2)]
    lines = data.draw(st.lists(st.sampled_from(pool), max_size=60))
    batch = data.draw(st.integers(1, 8))
    _agree_on_import(lines, batch, data.draw(st.sampled_from([None, FORMATS[2], FORMATS[5]])))


_TIMES = compile_format("%START_TIME% %REQ(X-REQUEST-ID)%", native=True), compile_format(
    "%START_TIME% %REQ(X-REQUEST-ID)%", native=False)


@settings(max_examples=500, deadline=None)
@given(seconds=st.integers(0, 2**40), ms=st.integers(0, 999), ulps=st.integers(-600, 600),
       other=st.floats(allow_nan=True, allow_infinity=True))
def test_the_id_writes_any_start_time_as_python_does(seconds, ms, ulps, other):
    """The C id's time text (written directly near a whole millisecond, else by Python's formatter)
    against f"{start_time:.6f}": times a few ulps around each millisecond, and any float."""
    near = seconds + ms / 1000
    for _ in range(abs(ulps)):
        near = math.nextafter(near, math.inf if ulps > 0 else -math.inf)
    for when in (near, other, seconds + 0.9999995, 0.5, 1.0):
        _agree(*_TIMES, f"{when!r} rid")


_JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), _PIECE,
                         st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=2), st.none(), max_size=1))
_CUSTOM_JSON = {"ts": "%START_TIME%", "code": "%RESPONSE_CODE%", "dur": "%DURATION%",
                "rid": "%REQ(X-REQUEST-ID)%",
                "type": "%ACCESS_LOG_TYPE%", "flags": "%RESPONSE_FLAGS%"}
_JSON_FORMATS = [ISTIO_JSON, json_format(_CUSTOM_JSON, "custom-json")]


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_json_lines_build_as_the_field_path_does(data):
    """JsonFormat.record (its generated builder, the reference way on any error) against from_mapping then
    make_record: the same record and id, or the same error, for JSON values of every type."""
    fmt = data.draw(st.sampled_from(_JSON_FORMATS))
    keys = [*fmt.keys, "unknown"]
    doc = data.draw(st.dictionaries(st.sampled_from(keys), _JSON_VALUES, max_size=len(keys)))
    if data.draw(st.booleans()):
        doc[next(iter(fmt.keys))] = data.draw(st.sampled_from(["2024-05-01T12:00:00.123Z", 1714564800]))
    line = json.dumps(doc, ensure_ascii=False)  # NaN and lone surrogates too (orjson refuses them)
    origin = Origin(data.draw(st.sampled_from(["", "pod.ns", "ä"])), "istio-proxy")
    try:
        want = make_record(fmt.fields(line), origin)
    except (BadLine, ValueError, TypeError) as exc:
        want = (type(exc), str(exc))
    try:
        got = fmt.record(line, origin)
    except (BadLine, ValueError, TypeError) as exc:
        got = (type(exc), str(exc))
    assert _same(got, want), line
    if not isinstance(got, tuple):
        assert got.id == got.compute_id()


def test_json_builder_is_generated_where_it_can_be():
    assert all(fmt._build is not None for fmt in _JSON_FORMATS)
    two_keys_one_field = json_format({"t": "%START_TIME%", "p": "%REQ(:PATH)%",
                                      "q": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"})
    assert two_keys_one_field._build is None
    (r,), _ = _parse_json('{"t": "2024-05-01T12:00:00Z", "q": "/b", "p": null}', two_keys_one_field)
    assert r.path == "/b"


def _parse_json(text: str, fmt):
    report = ImportReport()
    batches = list(parse_lines([text], LineParser(fmt), report))
    return [r for b in batches for r in b], report
