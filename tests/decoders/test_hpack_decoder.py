"""The HPACK decoder (decoders.hpack_decoder) against python-hyper's encoder and decoder: the same
headers from the same blocks, the dynamic table in step through size changes; joined late, it
decodes only what it can know and never a wrong value; bounded against bombs."""

from __future__ import annotations

import time

import pytest
from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.hpack_decoder import MAX_HEADER_LIST, HpackDecoder, HpackError

_names = st.sampled_from([":method", ":path", ":authority", "x-request-id", "content-type", "grpc-status",
                          "user-agent", "x-b3-traceid", "cookie", "x-custom"])
_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_header_lists = st.lists(st.lists(st.tuples(_names, _values), min_size=1, max_size=8), min_size=1,
                         max_size=12)


def _encode(lists, huffman: bool, sizes=None) -> list[bytes]:
    enc = Encoder()
    blocks = []
    for i, headers in enumerate(lists):
        if sizes is not None:
            enc.header_table_size = sizes[i % len(sizes)]
        blocks.append(enc.encode(headers, huffman=huffman))
    return blocks


@settings(max_examples=80, deadline=None)
@given(lists=_header_lists, huffman=st.booleans(),
       sizes=st.none() | st.lists(st.integers(0, 4096), min_size=1, max_size=4))
def test_decodes_what_the_reference_decoder_does(lists, huffman, sizes):
    blocks = _encode(lists, huffman, sizes)
    ref, ours = Decoder(), HpackDecoder()
    for block, headers in zip(blocks, lists, strict=True):
        expected = [(n.decode(), v.decode()) for n, v in ref.decode(block, raw=True)]
        assert ours.decode(block) == expected == [(n, v) for n, v in headers]
    assert ours.unknown == 0


@settings(max_examples=80, deadline=None)
@given(lists=_header_lists, huffman=st.booleans(), skip=st.integers(1, 11))
def test_joined_late_it_never_decodes_a_wrong_value(lists, huffman, skip):
    """A decoder that missed the first blocks: every field it names is right; the rest is unknown."""
    blocks = _encode(lists, huffman)
    late = HpackDecoder(in_step=False)
    for block, headers in list(zip(blocks, lists, strict=True))[skip:]:
        got = late.decode(block)
        assert len(got) == len(headers)
        for (name, value), (want_name, want_value) in zip(got, headers, strict=True):
            assert name in (None, want_name)
            assert value in (None, want_value)


def test_joined_late_entries_added_since_decode():
    enc = Encoder()
    enc.encode([("x-request-id", "before")])  # the capture missed this block
    late = HpackDecoder(in_step=False)
    assert late.decode(enc.encode([("x-request-id", "before")])) == [(None, None)]
    assert late.decode(enc.encode([("x-fresh", "one")])) == [("x-fresh", "one")]
    assert late.decode(enc.encode([("x-fresh", "one")])) == [("x-fresh", "one")]  # indexed now: known
    assert late.unknown == 1


def test_table_size_update_above_the_allowed_is_refused():
    dec = HpackDecoder()
    with pytest.raises(HpackError, match="above the allowed 4096"):
        dec.decode(b"\x3f\xe2\x1f")  # size update to 4097: 31 + 98 + (31 << 7)
    assert not dec.in_step  # what followed in the block is unknown: the table is out of step


def test_header_list_bomb_and_long_integers_are_bounded():
    enc = Encoder()
    block = enc.encode([("x-big", "y" * 4000)]) + b"\xbe" * 200
    with pytest.raises(HpackError, match=f"header list over {MAX_HEADER_LIST}"):
        HpackDecoder().decode(block)
    with pytest.raises(HpackError, match="integer longer"):
        HpackDecoder().decode(b"\xff" + b"\xff" * 10)
    with pytest.raises(HpackError, match="past the end"):
        HpackDecoder().decode(b"\x40\x7f\xff")


@settings(max_examples=80, deadline=None)
@given(block=st.binary(max_size=200))
def test_garbage_raises_only_hpack_errors(block):
    dec = HpackDecoder()
    try:
        dec.decode(block)
    except HpackError:
        pass


def test_faster_than_the_reference_decoder():
    """Why it is hand-written (besides tolerating a late start): decoding gRPC-like blocks."""
    enc = Encoder()
    blocks = [enc.encode([(":method", "POST"), (":path", f"/svc.Catalog/Get{i % 7}"), (":authority", "c:80"),
                          ("content-type", "application/grpc"), ("te", "trailers"),
                          ("x-request-id", f"{i:032x}"), ("user-agent", "grpc-python/1.85")])
              for i in range(3000)]

    def best(decode) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            decode()
            times.append(time.perf_counter() - t)
        return min(times)

    def reference() -> None:
        d = Decoder()
        for b in blocks:
            d.decode(b, raw=True)

    def ours() -> None:
        d = HpackDecoder()
        for b in blocks:
            d.decode(b)

    assert best(ours) < best(reference)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=40))
def test_huffman_strings_decode_as_hpack_decodes_them_or_fail_alike(raw):
    # the byte machine (invalid codes run into a dead state, checked at the end) against hpack's
    # nibble-at-a-time decoder, on any bytes: the same text, or both refuse
    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman_table import decode_huffman as reference
    from meshscope.decoders.hpack_decoder import decode_huffman

    try:
        expected = reference(raw).decode("latin-1")
    except HPACKDecodingError:
        expected = None
    try:
        got = decode_huffman(raw)
    except HpackError:
        got = None
    assert got == expected


def test_a_huffman_string_seen_before_is_remembered_and_the_memory_stays_bounded(monkeypatch):
    from meshscope.decoders import hpack_decoder

    monkeypatch.setattr(hpack_decoder, "_HUFFMAN_SEEN", {})
    monkeypatch.setattr(hpack_decoder, "HUFFMAN_SEEN_MAX", 8)
    enc = Encoder()
    block = enc.encode([("x-request-id", "same-every-time")], huffman=True)
    for _ in range(3):  # a new connection each time: a literal again, decoded from memory
        assert HpackDecoder().decode(block) == [("x-request-id", "same-every-time")]
    assert "same-every-time" in hpack_decoder._HUFFMAN_SEEN.values()
    for i in range(50):
        HpackDecoder().decode(Encoder().encode([(f"x-{i}", f"value-{i}")], huffman=True))
    assert len(hpack_decoder._HUFFMAN_SEEN) <= 8
