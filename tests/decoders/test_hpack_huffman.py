"""The byte-at-a-time Huffman decoder (decoders.hpack_huffman) says what the hpack package's decoder
says, on every string it encodes and on any bytes at all (valid or not)."""

from __future__ import annotations

import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode
from hypothesis import given
from hypothesis import strategies as st
from meshscope.decoders.hpack_huffman import HuffmanError, decode_huffman

ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _reference(raw: bytes) -> str | None:
    try:
        return hpack_decode(raw).decode("latin-1")
    except Exception:  # hpack's HPACKDecodingError
        return None


def _ours(raw: bytes) -> str | None:
    try:
        return decode_huffman(raw)
    except HuffmanError:
        return None


@given(st.binary(max_size=200))
def test_encoded_strings_decode_back(text):
    raw = ENCODER.encode(text)
    assert _ours(raw) == text.decode("latin-1") == _reference(raw)
    assert _ours(raw) == text.decode("latin-1")  # again: from the remembered strings


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_fail_as_hpack_does(raw):
    assert _ours(raw) == _reference(raw)


@pytest.mark.parametrize("raw", [b"\xff\xff\xff\xff", b"\x00\x3f\xff\xff"])
def test_invalid_codes_are_refused(raw):
    assert _reference(raw) is None
    with pytest.raises(HuffmanError):
        decode_huffman(raw)
