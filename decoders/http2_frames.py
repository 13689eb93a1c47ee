"""HTTP/2 framing (RFC 9113 section 4 and 6): the frame header, frame types and flags, settings and
error codes by name, and the plausibility test that recognises HTTP/2 mid-connection.

    +-----------------------------------------------+
    |                 Length (24)                   |
    +---------------+---------------+---------------+
    |   Type (8)    |   Flags (8)   |
    +-+-------------+---------------+-------------------------------+
    |R|                 Stream Identifier (31)                      |
    +=+=============================================================+
    |                   Frame Payload (0...)                      ...
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
HEADER = struct.Struct("!BHBBL").unpack_from  # length (high byte, low 16 bits), type, flags, stream id

(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE,
 CONTINUATION) = range(10)
FRAME_NAMES = ("DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
               "WINDOW_UPDATE", "CONTINUATION")
END_STREAM = 0x01  # DATA, HEADERS
ACK = 0x01  # SETTINGS, PING
END_HEADERS = 0x04  # HEADERS, PUSH_PROMISE, CONTINUATION
PADDED = 0x08  # DATA, HEADERS, PUSH_PROMISE
PRIORITY_FLAG = 0x20  # HEADERS: 5 bytes of stream dependency and weight precede the block

SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
DEFAULT_MAX_FRAME_SIZE = 16_384
SETTING = struct.Struct("!HL").iter_unpack

ERROR_CODES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
               "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
# flags each frame type defines; others set mean the bytes are not HTTP/2
_FLAGS = (END_STREAM | PADDED, END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG, 0, 0, ACK,
          END_HEADERS | PADDED, ACK, 0, 0, END_HEADERS)
_FIXED_LENGTH = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}
_CONNECTION_FRAMES = frozenset((SETTINGS, PING, GOAWAY))  # stream 0 only
_STREAM_FRAMES = frozenset((DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION))
PLAUSIBLE_MAX_LENGTH = DEFAULT_MAX_FRAME_SIZE  # peers rarely raise it; a larger "length" is likelier noise


def error_name(code: int) -> str:
    return ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else f"0x{code:x}"


def header(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame header at buf[pos:pos + 9]."""
    hi, lo, ftype, flags, sid = HEADER(buf, pos)
    return (hi << 16) | lo, ftype, flags, sid & 0x7FFFFFFF


def plausible_header(buf: bytes, pos: int, from_client: bool) -> bool:
    """Whether 9 bytes read as an HTTP/2 frame header a peer would send (type, flags, length, stream)."""
    length, ftype, flags, sid = header(buf, pos)
    if ftype > CONTINUATION or flags & ~_FLAGS[ftype] or length > PLAUSIBLE_MAX_LENGTH \
            or buf[pos + 5] & 0x80:
        return False
    if ftype in _CONNECTION_FRAMES:
        return sid == 0 and (ftype != SETTINGS or length % 6 == 0) and (ftype != PING or length == 8)
    if ftype in _STREAM_FRAMES and sid == 0:
        return False
    if from_client and ftype in (HEADERS, PRIORITY) and not sid & 1:
        return False  # clients open odd streams
    fixed = _FIXED_LENGTH.get(ftype)
    return fixed is None or length == fixed


def plausible_frames(payload: bytes, from_client: bool) -> bool:
    """Whether a payload that starts mid-connection is a run of HTTP/2 frames: every frame header in
    it plausible, chaining exactly to its end (or past it, a frame continuing in the next segment)."""
    pos, n, frames = 0, len(payload), 0
    while pos + FRAME_HEADER <= n:
        if not plausible_header(payload, pos, from_client):
            return False
        frames += 1
        pos += FRAME_HEADER + header(payload, pos)[0]
    return frames > 0 and (pos >= n or n - pos < FRAME_HEADER)
