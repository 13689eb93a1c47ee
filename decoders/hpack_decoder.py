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


def _byte_machine() -> tuple[list[int], list[str], list[bool]]:
    """hpack's Huffman state machine (a nibble at a time), composed into one step per byte: for state
    s and byte b at s * 256 + b, the next state (-1: invalid code), the symbols emitted (as text) and
    whether the string may end there. Half the lookups, and no per-nibble flag tests."""
    nxt, out, ends = [-1] * 65536, [""] * 65536, [False] * 65536
    for state in range(256):
        for byte in range(256):
            st, text, ok = state, "", True
            flags = 0
            for nibble in (byte >> 4, byte & 0x0F):
                st, flags, sym = HUFFMAN_TABLE[st * 16 + nibble]
                if flags & HUFFMAN_FAIL:
                    ok = False
                    break
                if flags & HUFFMAN_EMIT_SYMBOL:
                    text += chr(sym)
            if ok:
                i = state * 256 + byte
                nxt[i], out[i], ends[i] = st, sys.intern(text), bool(flags & HUFFMAN_COMPLETE)
    return nxt, out, ends


_MACHINE: tuple[list[int], list[str], list[bool]] | None = None  # built on first use (~0.2 s)


def decode_huffman(raw: bytes) -> str:
    """A Huffman-coded string (RFC 7541 Appendix B) as text (latin-1, as the rest of the decoder)."""
    global _MACHINE
    if _MACHINE is None:
        _MACHINE = _byte_machine()
    nxt, out, ends = _MACHINE
    state, i = 0, 0
    parts = []
    for b in raw:
        i = (state << 8) | b
        state = nxt[i]
        if state < 0:
            raise HpackError("bad Huffman code")
        parts.append(out[i])
    if raw and not ends[i]:
        raise HpackError("Huffman string ends inside a symbol")
    return "".join(parts)


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


def _string(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise HpackError("string runs past the end of the block")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("string runs past the end of the block")
    if huffman:
        return decode_huffman(data[pos:end]), end
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
