"""HPACK (RFC 7541) header blocks of one direction of an HTTP/2 connection, decoded with the dynamic
table kept in step — and honest when it cannot be: a capture that joined the connection late, or a
block that was lost, leaves older table entries unknown. Entries added since are still at the
indices the encoder uses (the newest entries come first), so those and every literal decode
exactly; a reference to anything older comes out as unknown, never as a guess.

Hand-written over the ``hpack`` package's decoder (whose static table and Huffman code it reuses):
that decoder must refuse the whole block at the first unknown index and cannot resume, and this
one is faster (see tests/decoders/test_hpack_decoder.py). Bounded: table size, header list size."""

from __future__ import annotations

import sys
from collections import deque

from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE
from hpack.table import HeaderTable

STATIC = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in HeaderTable.STATIC_TABLE)
STATIC_LEN = len(STATIC)  # 61
ENTRY_OVERHEAD = 32
DEFAULT_TABLE_SIZE = 4096
MAX_TABLE_SIZE = 1 << 20  # a peer may allow more; an encoder that uses more is not followed
MAX_HEADER_LIST = 256 * 1024  # decoded names and values (+32 each) of one block


class HpackError(ValueError):
    """The block cannot be decoded further (the table is out of step from here)."""


DEAD = 256  # the state after an invalid code: it stays there, and decode_huffman checks once, at the end


def _byte_machine() -> tuple[list[int], list[str], list[bool]]:
    """hpack's Huffman state machine (a nibble at a time), composed into one step per byte: for state
    s and byte b at s * 256 + b, the next state (DEAD after an invalid code), the symbols emitted (as
    text) and whether the string may end there. Half the lookups, and no per-nibble flag tests. Built
    row by row from the nibble table (each process builds it once, at its first Huffman string)."""
    size = (DEAD + 1) * 256
    nxt, out, ends = [DEAD] * size, [""] * size, [False] * size
    # the second nibble's step from each state, worked out once: (next state, text, may end), or None
    second = [None if flags & HUFFMAN_FAIL else
              (st, chr(sym) if flags & HUFFMAN_EMIT_SYMBOL else "", bool(flags & HUFFMAN_COMPLETE))
              for st, flags, sym in HUFFMAN_TABLE]
    intern = sys.intern
    for i in range(4096):  # state * 16 + high nibble
        st, flags, sym = HUFFMAN_TABLE[i]
        if flags & HUFFMAN_FAIL:
            continue
        first = chr(sym) if flags & HUFFMAN_EMIT_SYMBOL else ""
        at = i << 4
        for lo, step in enumerate(second[st * 16:st * 16 + 16]):
            if step is not None:
                nxt[at + lo], text, ends[at + lo] = step
                out[at + lo] = intern(first + text) if first else text
    return nxt, out, ends


_MACHINE: tuple[list[int], list[str], list[bool]] | None = None  # built on first use (~0.05 s)


def decode_huffman(raw: bytes) -> str:
    """A Huffman-coded string (RFC 7541 Appendix B) as text (latin-1, as the rest of the decoder)."""
    global _MACHINE
    if _MACHINE is None:
        _MACHINE = _byte_machine()
    nxt, out, ends = _MACHINE
    state = i = 0
    # one step per byte, in a comprehension (the hot loop of an h2 capture: each request's unique ids);
    # "| 1" keeps every step's text, the state is checked once the string is read
    text = "".join([out[i] for b in raw if (state := nxt[(i := (state << 8) | b)]) | 1])
    if state == DEAD:
        raise HpackError("bad Huffman code")
    if raw and not ends[i]:
        raise HpackError("Huffman string ends inside a symbol")
    return text


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer (section 5.1) at data[pos] with an N-bit prefix: (value, next position)."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("integer runs past the end of the block")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HpackError("integer longer than 4 bytes")


# Huffman strings already decoded: every connection's first header blocks send the same names and
# values as literals (each has its own dynamic table), over and over in a capture of many connections
_HUFFMAN_SEEN: dict[bytes, str] = {}
HUFFMAN_SEEN_MAX = 4096  # then it starts again: bounded, and the values that recur come back at once


def _string(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise HpackError("string runs past the end of the block")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("string runs past the end of the block")
    if huffman:
        raw = data[pos:end]
        text = _HUFFMAN_SEEN.get(raw)
        if text is None:
            text = decode_huffman(raw)
            if len(_HUFFMAN_SEEN) >= HUFFMAN_SEEN_MAX:
                _HUFFMAN_SEEN.clear()
            _HUFFMAN_SEEN[raw] = text
        return text, end
    return data[pos:end].decode("latin-1"), end


class HpackDecoder:
    """``decode(block)`` → [(name, value)], name None for a header whose representation refers to a
    table entry this capture never saw (its value then None too, or a literal value)."""

    __slots__ = ("table", "size", "max_size", "allowed", "in_step", "trusted", "unknown")

    def __init__(self, in_step: bool = True) -> None:
        self.table: deque[tuple[str | None, str]] = deque()  # newest first
        self.size = 0
        self.max_size = DEFAULT_TABLE_SIZE
        self.allowed = DEFAULT_TABLE_SIZE  # SETTINGS_HEADER_TABLE_SIZE of the decoding side
        self.in_step = in_step  # every entry since the connection began was seen
        self.trusted = 0  # when not in step: how many of the newest entries were seen
        self.unknown = 0  # header fields that could not be decoded, over the connection

    def lose_step(self) -> None:
        """A header block was not decoded (lost, or undecodable): older entries are unknown now."""
        self.in_step = False
        self.trusted = 0

    def decode(self, block: bytes) -> list[tuple[str | None, str | None]]:
        out: list[tuple[str | None, str | None]] = []
        try:
            self._decode(block, out)
        except (HpackError, IndexError) as e:
            self.lose_step()
            raise HpackError(str(e) or "block ends inside a field") from None
        return out

    def _lookup(self, index: int) -> tuple[str | None, str | None]:
        if index <= 0:
            raise HpackError("index 0")
        if index <= STATIC_LEN:
            return STATIC[index - 1]
        i = index - STATIC_LEN - 1
        if self.in_step:
            if i >= len(self.table):
                raise HpackError(f"index {index} beyond the dynamic table")
            return self.table[i]
        if i < self.trusted and i < len(self.table):
            return self.table[i]
        self.unknown += 1
        return None, None

    def _decode(self, data: bytes, out: list) -> None:
        # the common cases inline (one-byte indices, a table in step): this loop is the hot path
        pos, n, total = 0, len(data), 0
        lookup, table, static = self._lookup, self.table, STATIC
        in_step = self.in_step
        while pos < n:
            b = data[pos]
            if b & 0x80:  # indexed field (6.1)
                index = b & 0x7F
                if index == 0x7F:
                    index, pos = _integer(data, pos, 7)
                else:
                    pos += 1
                if 0 < index <= STATIC_LEN:
                    name, value = static[index - 1]
                elif in_step and STATIC_LEN < index <= STATIC_LEN + len(table):
                    name, value = table[index - STATIC_LEN - 1]
                else:
                    name, value = lookup(index)
            elif b & 0x20 and not b & 0x40:  # dynamic table size update (6.3)
                size, pos = _integer(data, pos, 5)
                if size > self.allowed or size > MAX_TABLE_SIZE:
                    raise HpackError(f"table size update to {size} above the allowed "
                                     f"{min(self.allowed, MAX_TABLE_SIZE)}")
                self.max_size = size
                self._evict()
                continue
            else:  # literals: with incremental indexing (6.2.1), without (6.2.2), never indexed (6.2.3)
                indexing = b & 0x40
                if indexing:
                    index = b & 0x3F
                    prefix = 0x3F
                else:
                    index = b & 0x0F
                    prefix = 0x0F
                if index == prefix:
                    index, pos = _integer(data, pos, 6 if indexing else 4)
                else:
                    pos += 1
                if not index:
                    name, pos = _string(data, pos)
                elif index <= STATIC_LEN:
                    name = static[index - 1][0]
                else:
                    name = lookup(index)[0]
                value, pos = _string(data, pos)
                if indexing:
                    self._add(name, value)
            total += (len(name) if name else 0) + (len(value) if value else 0) + ENTRY_OVERHEAD
            if total > MAX_HEADER_LIST:
                raise HpackError(f"header list over {MAX_HEADER_LIST} bytes")
            out.append((name, value))

    def _add(self, name: str | None, value: str) -> None:
        # an unknown name counts as empty: the table then holds at least what the encoder's does,
        # so what it evicts we evict no earlier than it, and indices into the newest entries hold
        self.table.appendleft((name, value))
        self.size += (len(name) if name else 0) + len(value) + ENTRY_OVERHEAD
        if not self.in_step:
            self.trusted += 1
        self._evict()

    def _evict(self) -> None:
        table = self.table
        while self.size > self.max_size and table:
            name, value = table.pop()
            self.size -= (len(name) if name else 0) + len(value) + ENTRY_OVERHEAD
        if self.trusted > len(table):
            self.trusted = len(table)
