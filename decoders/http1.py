"""HTTP/1.x message heads from one direction of a reassembled TCP stream.

Incremental: bytes come in as they are reassembled; a head is buffered (bounded) until its blank
line, then bodies are skipped by Content-Length or chunked framing without being kept. After a
gap that cannot be skipped by framing, the parser hunts for the next message start. Hand-written
rather than h11: h11 rejects exactly the damaged, pipelined, mid-stream traffic captures contain.
Not httptools (llhttp) either, measured in place: as the requests' parser (llhttp on the healthy
stream, this one taking over at damage) it was no faster on the 1 M-packet benchmark, where each
head arrives whole in a segment: its per-header Python callbacks and the text decoding cost what
this parser's one decode and split cost (its 3.2x in a micro-benchmark came from pipelined heads
cut into 1460-byte chunks, which this parser must buffer). What is in C is narrower: a well-formed
head's fields (decoders/_http1_head.c, 1.6x parse_head's loop on the benchmark's heads); the state
machine, its damage tolerance and every other head stay here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from meshscope.decoders.wording import counted

try:  # compiled by the package's install (scripts/setup.sh), like decoders/_record_scan.c
    from meshscope.decoders._http1_head import fields as _fields
except ImportError:  # pragma: no cover - a checkout whose extension was not built
    _fields = None

MAX_HEAD = 64 * 1024  # a head larger than this is garbage, not HTTP
MAX_LINE = 4096  # chunk-size and trailer lines
METHODS = frozenset(b"GET POST PUT DELETE HEAD OPTIONS PATCH CONNECT TRACE PROPFIND PROPPATCH MKCOL "
                    b"COPY MOVE LOCK UNLOCK PURGE".split())
REQUEST_START = re.compile(rb"(?:%s) [!-~]+ HTTP/1\.[019]\r?\n" % b"|".join(sorted(METHODS)))
RESPONSE_START = re.compile(rb"HTTP/1\.[019] \d{3}")
_HUNT_KEEP = 64  # bytes kept between chunks while hunting, so a start line split across them is found

HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, UNTIL_CLOSE, HUNT, DEAD = range(9)


@dataclass(slots=True)
class HttpHead:
    """A request or response head: start line parts and headers (names lower-cased; a repeated
    header's values joined with ", ", as RFC 9110 section 5.3 allows)."""

    is_request: bool
    method: str | None
    uri: str | None
    version: str
    status: int | None
    reason: str | None
    headers: dict[str, str]
    ts: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def looks_like_request(data: bytes) -> bool:
    """Whether a stream starts like an HTTP/1.x request (method and a space)."""
    sp = data.find(b" ", 0, 16)
    return sp > 0 and bytes(data[:sp]) in METHODS


def looks_like_response(data: bytes) -> bool:
    return data.startswith(b"HTTP/1.")


def parse_head(raw: bytes, is_request: bool, ts: float) -> HttpHead | None:
    """Parse a head (without the blank line); None when the start line is not HTTP/1.x."""
    fields = _fields(raw) if _fields is not None else None  # a well-formed head, in C
    if fields is not None:
        start, headers = fields
    else:  # the reference, for every head
        lines = raw.decode("latin-1").split("\n")  # decoded once: per-field decoding is the slow part
        start = lines[0].rstrip("\r")
        headers = {}
        last = None
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep and name and name[-1] not in " \t":
                last = name.lower()
                value = value.strip()
                headers[last] = f"{headers[last]}, {value}" if last in headers else value
            elif last is not None and line[:1] in (" ", "\t"):  # obsolete line folding
                headers[last] += " " + line.strip()
    if is_request:
        parts = start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or parts[0].encode() not in METHODS:
            return None
        return HttpHead(True, parts[0], parts[1], parts[2], None, None, headers, ts)
    parts = start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        return None
    return HttpHead(False, None, None, parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "",
                    headers, ts)


class HttpStreamParser:
    """Requests (client side) or responses (server side) of one connection, fed in order.

    ``on_head(head)`` returns whether the message may carry a body (False for the response to
    HEAD, 1xx, 204, 304); ``on_end(body_bytes, ts)`` follows each message; ``on_damage(text)``
    reports gaps and garbage."""

    __slots__ = ("is_request", "on_head", "on_end", "on_damage", "on_lost", "state", "buf", "scan_from",
                 "remaining", "body_bytes", "head_ts", "after_stop", "after_cut")

    def __init__(self, is_request: bool, on_head: Callable[[HttpHead], bool],
                 on_end: Callable[[int, float], None], on_damage: Callable[[str], None],
                 hunting: bool = False, on_lost: Callable[[float], None] | None = None) -> None:
        self.is_request = is_request
        self.on_head = on_head
        self.on_end = on_end
        self.on_damage = on_damage
        self.on_lost = on_lost  # a gap swallowed a message start
        self.state = HUNT if hunting else HEAD
        self.buf = bytearray()
        self.scan_from = 0
        self.remaining = 0
        self.body_bytes = 0
        self.head_ts = 0.0
        # where the bytes after a protocol switch go (an h2c upgrade); None: dropped
        self.after_stop: Callable[[bytes, float], None] | None = None
        self.after_cut = False  # hunting after a head cut short: the next gaps are that message's rest

    # -- input -----------------------------------------------------------------------------------
    def feed(self, data: bytes, ts: float) -> None:
        while data:
            st = self.state
            if st == HEAD and not self.buf:
                # fast path: a whole head at the start of the data, no buffering needed
                end = data.find(b"\r\n\r\n")
                if end > 0 and (data[:data.find(b" ", 0, 16)] in METHODS if self.is_request
                                else data[:7] == b"HTTP/1."):
                    self.head_ts = ts
                    self._complete_head(data[:end], ts)
                    data = data[end + 4:]
                    continue
            if st == BODY or st == CHUNK_DATA:
                take = min(self.remaining, len(data))
                self.remaining -= take
                self.body_bytes += take
                data = data[take:] if take < len(data) else b""
                if not self.remaining:
                    if st == BODY:
                        self._end(ts)
                    else:
                        self.state = CHUNK_END
            elif st == UNTIL_CLOSE:
                self.body_bytes += len(data)
                return
            elif st == DEAD:
                if self.after_stop is not None and data:
                    self.after_stop(data, ts)
                return
            else:
                self.buf += data
                data = self._parse_buffer(ts)

    data = feed  # the StreamSink interface: reassembly hands its bytes straight to the parser

    def gap(self, nbytes: int, ts: float) -> bool:
        """Bytes lost from the capture: skip them inside a framed body (True), otherwise
        resynchronise at the next message start (False: a message start was probably lost)."""
        st = self.state
        if (st == BODY or st == CHUNK_DATA) and nbytes <= self.remaining:
            self.remaining -= nbytes
            self.body_bytes += nbytes
            self.on_damage(f"{counted(nbytes, 'byte')} lost inside a body (framing kept)")
            if not self.remaining:
                if st == BODY:
                    self._end(ts)
                else:
                    self.state = CHUNK_END
            return True
        if st == UNTIL_CLOSE:
            self.body_bytes += nbytes
            self.on_damage(f"{counted(nbytes, 'byte')} lost inside a body (framing kept)")
            return True
        if st == DEAD:
            return True
        if st == HEAD and self.buf and self._cut_head(nbytes, ts):
            return True
        if st == HUNT and self.after_cut:
            return True  # more of the message whose head was cut (its body's segments, cut the same way)
        self.on_damage(f"{counted(nbytes, 'byte')} lost; resynchronising at the next message")
        if st in (BODY, CHUNK_DATA, CHUNK_SIZE, CHUNK_END, TRAILERS):
            self._end(ts)
        self.buf.clear()
        self.scan_from = 0
        self.state = HUNT
        if self.on_lost is not None:
            self.on_lost(ts)
        return False

    def _cut_head(self, nbytes: int, ts: float) -> bool:
        """A head the capture cut short (a small snaplen keeps a segment's first bytes only): the
        start line and the header lines kept whole still make a message, as tshark reads them; its
        body (and any headers after the cut) are unknown. False when not even a start line was kept."""
        buf = self.buf
        if not (looks_like_request(buf[:16]) if self.is_request else looks_like_response(buf[:16])):
            return False
        end = buf.rfind(b"\n")
        if end < 0:
            return False
        kept = len(buf)
        head = parse_head(bytes(buf[:end]).rstrip(b"\r"), self.is_request, self.head_ts or ts)
        buf.clear()
        self.scan_from = 0
        if head is None:
            return False
        self.body_bytes = 0
        self.on_head(head)  # the message exists from here: the damage below is its own
        self.on_damage(f"head cut short after {counted(kept, 'byte')} ({counted(nbytes, 'byte')} not "
                       "captured): headers after the cut and the body unknown")
        if self.state == DEAD:  # on_head ended the stream (protocol switch)
            return True
        self._end(ts)
        self.state = HUNT  # the next message starts somewhere after the bytes not captured
        self.after_cut = True
        return True

    def close(self, ts: float) -> None:
        """The stream ended: a body delimited by the close is complete; anything else is cut."""
        if self.state == UNTIL_CLOSE:
            self._end(ts)
        elif self.state in (BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS):
            self.on_damage("connection ended inside a body")
            self._end(ts)
        elif self.state == HEAD and self.buf.strip():
            self.on_damage("connection ended inside a head")
        self.state = DEAD
        self.buf.clear()

    # -- states that need buffering --------------------------------------------------------------
    def _parse_buffer(self, ts: float) -> bytes:
        """Parse buffered heads and framing lines; returns what is left once a body starts."""
        while self.buf:
            st = self.state
            if st == BODY or st == CHUNK_DATA:
                rest = bytes(self.buf)
                self.buf.clear()
                return rest
            if st == UNTIL_CLOSE:
                self.body_bytes += len(self.buf)
                self.buf.clear()
                return b""
            if st == DEAD:
                self.buf.clear()
                return b""
            if st == HEAD:
                if not self._parse_head(ts):
                    return b""
            elif st == HUNT:
                if not self._hunt():
                    return b""
            else:  # CHUNK_SIZE, CHUNK_END, TRAILERS: line based
                end = self.buf.find(b"\n")
                if end < 0:
                    if len(self.buf) > MAX_LINE:
                        self.on_damage("chunked framing broken (line too long)")
                        self._end(ts)
                        self.state = HUNT
                        continue
                    return b""
                line = bytes(self.buf[:end]).strip()
                del self.buf[:end + 1]
                if st == CHUNK_END:
                    if line:
                        self.on_damage("chunked framing broken (no CRLF after chunk)")
                        self._end(ts)
                        self.state = HUNT
                        self.buf[:0] = line
                        continue
                    self.state = CHUNK_SIZE
                elif st == CHUNK_SIZE:
                    try:
                        size = int(line.split(b";", 1)[0], 16)
                    except ValueError:
                        self.on_damage("chunked framing broken (bad chunk size)")
                        self._end(ts)
                        self.state = HUNT
                        continue
                    if size < 0:
                        size = 0
                    if size == 0:
                        self.state = TRAILERS
                    else:
                        self.remaining = size
                        self.state = CHUNK_DATA
                elif not line:  # TRAILERS ends at an empty line
                    self._end(ts)
        return b""

    def _parse_head(self, ts: float) -> bool:
        buf = self.buf
        if self.scan_from == 0:
            # tolerate blank lines between messages (RFC 9112 section 2.2)
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":
                del buf[:2 if buf[:1] == b"\r" else 1]
            if not buf:
                return False
            if not (looks_like_request(buf[:16]) if self.is_request else looks_like_response(buf[:16])) \
                    and len(buf) >= 16:
                self.on_damage("stream is not HTTP/1.x where a message should start; resynchronising")
                self.state = HUNT
                return True
            self.head_ts = ts
        end = buf.find(b"\r\n\r\n", max(0, self.scan_from - 3))
        sep = 4
        if end < 0:
            end = buf.find(b"\n\n", max(0, self.scan_from - 1))
            sep = 2
        if end < 0:
            self.scan_from = len(buf)
            if len(buf) > MAX_HEAD:
                self.on_damage(f"head longer than {MAX_HEAD} bytes; resynchronising")
                buf.clear()
                self.scan_from = 0
                self.state = HUNT
            return False
        raw = bytes(buf[:end])
        del buf[:end + sep]
        self.scan_from = 0
        self._complete_head(raw, ts)
        return True

    def _complete_head(self, raw: bytes, ts: float) -> None:
        head = parse_head(raw, self.is_request, self.head_ts)
        if head is None:
            self.on_damage("unparseable start line; resynchronising")
            self.state = HUNT
            return
        self.body_bytes = 0
        body_allowed = self.on_head(head)
        self._start_body(head, body_allowed, ts)

    def _start_body(self, head: HttpHead, body_allowed: bool, ts: float) -> None:
        if self.state == DEAD:  # on_head ended the stream (protocol switch)
            return
        te = head.headers.get("transfer-encoding")
        cl = head.headers.get("content-length")
        if not body_allowed:
            self._end(ts)
        elif te is not None and "chunked" in te.lower():
            self.state = CHUNK_SIZE
        elif cl is not None:
            try:
                length = int(cl.split(",")[0].strip())
            except ValueError:
                length = -1
            if length < 0:
                self.on_damage(f"bad content-length {cl!r}; resynchronising")
                self._end(ts)
                self.state = HUNT
            elif length == 0:
                self._end(ts)
            else:
                self.remaining = length
                self.state = BODY
        elif self.is_request:
            self._end(ts)
        else:
            self.state = UNTIL_CLOSE

    def _hunt(self) -> bool:
        """Look for the next message start; drop what precedes it."""
        pattern = REQUEST_START if self.is_request else RESPONSE_START
        m = pattern.search(self.buf)
        if m is None:
            if len(self.buf) > _HUNT_KEEP:
                del self.buf[:-_HUNT_KEEP]
            return False
        del self.buf[:m.start()]
        self.state = HEAD
        self.scan_from = 0
        self.after_cut = False
        return True

    def _end(self, ts: float) -> None:
        self.state = HEAD
        self.scan_from = 0
        body = self.body_bytes
        self.body_bytes = 0
        self.on_end(body, ts)

    def stop(self) -> None:
        """Stop parsing this direction (protocol switched, e.g. 101 or CONNECT)."""
        self.state = DEAD
        if self.after_stop is not None and self.buf:
            self.after_stop(bytes(self.buf), self.head_ts)
        self.buf.clear()
