"""HPACK's Huffman code (RFC 7541 appendix B) decoded a byte at a time: the ``hpack`` package's
decoder walks its state machine a nibble at a time, two table steps per byte; this one folds the two
steps into one per (state, byte) pair, worked out from hpack's own table the first time the pair
is met (a capture meets a few thousand of the 65,536). Unique literals — request ids, trace ids —
are most of the Huffman strings in mesh traffic, so this is what decodes them; the result is also
remembered for short strings that repeat across connections (paths, authorities)."""

from __future__ import annotations

from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE

# (state << 8 | byte) → (next state, bytes out, whether the string may end there); -1: invalid code
_STEPS: list[tuple[int, bytes, bool] | None] = [None] * (256 * 256)
_FAILED = (-1, b"", False)
_SEEN: dict[bytes, str] = {}
MAX_SEEN = 4096  # strings remembered (then forgotten all at once)
MAX_SEEN_LENGTH = 64  # longer strings are not remembered


class HuffmanError(ValueError):
    pass


def _step(state: int, byte: int) -> tuple[int, bytes, bool]:
    out = bytearray()
    flags = 0
    for nibble in (byte >> 4, byte & 0x0F):
        state, flags, symbol = HUFFMAN_TABLE[state * 16 + nibble]
        if flags & HUFFMAN_FAIL:
            return _FAILED
        if flags & HUFFMAN_EMIT_SYMBOL:
            out.append(symbol)
    return state, bytes(out), bool(flags & HUFFMAN_COMPLETE)


def decode_huffman(raw: bytes) -> str:
    """The text of a Huffman-coded string literal (latin-1); HuffmanError when it is not valid."""
    text = _SEEN.get(raw)
    if text is not None:
        return text
    steps = _STEPS
    state, complete = 0, True
    parts = []
    for byte in raw:
        key = state << 8 | byte
        step = steps[key]
        if step is None:
            step = steps[key] = _step(state, byte)
        state, out, complete = step
        if state < 0:
            raise HuffmanError("invalid Huffman code")
        if out:
            parts.append(out)
    if not complete:
        raise HuffmanError("Huffman string ends inside a code")
    text = b"".join(parts).decode("latin-1")
    if len(raw) <= MAX_SEEN_LENGTH:
        if len(_SEEN) >= MAX_SEEN:
            _SEEN.clear()
        _SEEN[raw] = text
    return text
