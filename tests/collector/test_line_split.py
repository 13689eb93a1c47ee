"""An access-log line cut into its values in C (collector/_line_split.c) against the format's regular
expression it replaces: the same values (or the same "not this format"), and so the same records, on
the known formats and custom ones, with lines built from their pieces and mangled at random."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.collector.access_log_lines import (
    ENVOY_DEFAULT_FORMAT,
    ISTIO_TEXT_FORMAT,
    BadLine,
    compile_format,
)

from tests.collector.test_access_log_lines import ISTIO_LINE, TCP_LINE

FORMATS = [ISTIO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT,
           "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %DURATION% %ROUTE_NAME%",
           "%START_TIME% %RESPONSE_FLAGS% rid=%REQ(X-REQUEST-ID)%;",  # ends in a literal
           "%START_TIME%|%BYTES_SENT%|%UNKNOWN_OPERATOR%|%UPSTREAM_HOST%"]
PAIRS = [(compile_format(f, native=True), compile_format(f, native=False)) for f in FORMATS]

# what a value may hold: the format's own delimiters, "-", blanks and newlines of every kind, non-Latin-1
_PIECE = st.sampled_from(["-", "", " ", '"', "[", "]", "|", ";", "\n", "\r", "\t", "\x0b", "\u2028", "\u00a0",
                          "2024-05-01T12:00:00.123Z", "200", "GET", "/a b", "UF,URX", "10.0.0.1:80", "ä",
                          "😀", "rid=", "x"])


def test_the_extension_is_built():
    """scripts/setup.sh builds it (pip install -e .): without it lines are cut by the regex."""
    importlib.import_module("meshscope.collector._line_split")
    assert all(fast.native and not slow.native for fast, slow in PAIRS)


def _agree(fast, slow, line: str) -> None:
    got = fast.split(line)
    assert got == slow.split(line), line
    if got is None:
        return
    outcomes = []
    for fmt in (fast, slow):
        try:
            outcomes.append(fmt.record(line, "node", "log"))
        except (BadLine, ValueError, TypeError) as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1], line


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
