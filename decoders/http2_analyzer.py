"""HTTP/2 connections (RFC 9113): every stream an Exchange — request pseudo-headers and identifying
headers, :status, trailers, DATA bytes, first and last frame, how it ended — with gRPC on top
(decoders.grpc_calls). Header blocks are decoded per direction with the dynamic table in step
(decoders.hpack_decoder); a capture that joined late decodes what is literal and says what it could not.

Bounded against bad input: frames over the negotiated maximum are skipped (DATA is streamed, never
held), a header block may not grow past MAX_HEADER_BLOCK or MAX_CONTINUATIONS frames, a connection
holds at most MAX_STREAMS open streams."""

from __future__ import annotations

from base64 import urlsafe_b64decode

from meshscope.decoders.analyzer import Analyzer, Host
from meshscope.decoders.grpc_calls import (
    MessageReader,
    grpc_message,
    is_grpc,
    service_method,
    status_name,
)
from meshscope.decoders.hpack_decoder import HpackDecoder, HpackError
from meshscope.decoders.http2_frames import (
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    FRAME_NAMES,
    GOAWAY,
    HEADER,
    HEADERS,
    PADDED,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    error_name,
    plausible_frames,
)
from meshscope.decoders.peer_metadata import decode_peer_metadata
from meshscope.decoders.wording import counted

from meshscope.model import Exchange, GrpcCall, H2Stream

MAX_HEADER_BLOCK = 256 * 1024  # a header block (HEADERS + CONTINUATION) larger than this is not decoded
MAX_CONTINUATIONS = 512
MAX_BUFFERED_FRAME = 1 << 20  # non-DATA frames larger than this are skipped, not held
MAX_STREAMS = 10_000  # open streams per connection; beyond, the oldest is emitted as it stands
MAX_FRAME_LIMIT = (1 << 24) - 1
_CLOSED_KEPT = 4096  # stream ids remembered as closed on a connection joined mid-way
CLOSE_REASONS = {"capture-end": "capture end", "fin": "connection closed", "rst": "connection reset",
                 "evicted": "connection evicted"}


class _Stream:
    __slots__ = ("ex", "h2", "client_ended", "server_ended", "responded", "req_msgs", "resp_msgs", "end_time")

    def __init__(self, ex: Exchange, ts: float | None = None) -> None:
        self.ex = ex
        self.h2 = ex.h2 = H2Stream()
        self.end_time = ts  # the last frame either way (copied to the exchange when it ends)
        self.client_ended = False
        self.server_ended = False
        self.responded = False  # a final (non-1xx) response head was seen
        self.req_msgs: MessageReader | None = None  # gRPC calls only
        self.resp_msgs: MessageReader | None = None


def _headers(fields: list[tuple[str | None, str | None]]) -> tuple[dict[str, str], int]:
    """Decoded fields as a dict (repeats joined with ", "), and how many could not be decoded."""
    out: dict[str, str] = {}
    unknown = 0
    for name, value in fields:
        if name is None or value is None:
            unknown += 1
            continue
        old = out.get(name)
        out[name] = value if old is None else f"{old}, {value}"
    return out, unknown


class _Direction:
    """One direction's bytes, cut into frames; DATA payloads are streamed, other frames buffered whole."""

    __slots__ = ("h2", "from_client", "buf", "hpack", "max_frame", "preface", "lost", "skip", "data_left",
                 "data_stream", "data_end", "block", "block_size", "block_sid", "block_type",
                 "block_flags", "block_promised", "block_frames", "block_ts", "block_dropped")

    def __init__(self, h2: Http2Analyzer, from_client: bool, in_step: bool, preface: bool) -> None:
        self.h2 = h2
        self.from_client = from_client
        self.buf = b""
        self.hpack = HpackDecoder(in_step)
        self.max_frame = DEFAULT_MAX_FRAME_SIZE  # what this side may send (the peer's SETTINGS)
        self.preface = preface  # the client preface is still to come
        self.lost = False  # a gap broke the framing: hunting for a frame boundary
        self.skip = 0  # bytes of the current frame still to pass by (a streamed DATA or oversize frame)
        self.data_left = 0  # of those, DATA payload (the rest is padding)
        self.data_stream: _Stream | None = None
        self.data_end = False  # the streamed DATA frame ends its stream
        self.block: list[bytes] = []  # a header block awaiting its CONTINUATION frames
        self.block_size = 0
        self.block_sid = 0
        self.block_type = 0
        self.block_flags = 0
        self.block_promised = 0
        self.block_frames = 0
        self.block_ts = 0.0
        self.block_dropped = False  # the open block is over the bounds: its frames are skipped

    # -- the StreamSink interface ----------------------------------------------------------------
    def data(self, chunk: bytes, ts: float) -> None:
        if self.skip:
            chunk = self._skip(chunk, ts)
            if not chunk:
                return
        if self.preface:
            chunk = self._preface(chunk)
            if not chunk:
                return
        if self.lost:
            if not plausible_frames(chunk, self.from_client):
                return
            self.lost = False
        buf = self.buf + chunk if self.buf else chunk
        pos, n = 0, len(buf)
        h2 = self.h2
        while n - pos >= FRAME_HEADER:
            hi, lo, ftype, flags, sid = HEADER(buf, pos)
            length = (hi << 16) | lo
            sid &= 0x7FFFFFFF
            end = pos + FRAME_HEADER + length
            if length > self.max_frame:
                h2.report(None, self.from_client, f"{_frame_name(ftype)} frame of "
                          f"{counted(length, 'byte')} over the maximum of {self.max_frame}: skipped")
                if ftype in (HEADERS, PUSH_PROMISE, CONTINUATION):
                    self._drop_headers(sid)
                if end > n:
                    self.skip, self.data_left, self.data_stream = end - n, 0, None
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                if ftype == DATA and (not flags & PADDED or n - pos > FRAME_HEADER):
                    self._start_data(buf, pos, n, length, flags, sid, ts)
                    pos = n
                elif length > MAX_BUFFERED_FRAME:
                    h2.report(None, self.from_client, f"{_frame_name(ftype)} frame of "
                              f"{counted(length, 'byte')}: not held, skipped")
                    if ftype in (HEADERS, PUSH_PROMISE, CONTINUATION):
                        self._drop_headers(sid)
                    self.skip, self.data_left, self.data_stream = end - n, 0, None
                    pos = n
                break
            if ftype == DATA:
                h2.data_frame(self, flags, sid, buf[pos + FRAME_HEADER:end], ts)
            else:
                self.frame(ftype, flags, sid, buf[pos + FRAME_HEADER:end], ts)
            pos = end
        self.buf = buf[pos:] if pos < n else b""

    def gap(self, nbytes: int, ts: float) -> None:
        h2 = self.h2
        if self.skip and nbytes <= self.skip:  # inside a DATA (or skipped) frame: framing kept
            took = min(nbytes, self.data_left)
            self.skip -= nbytes
            self.data_left -= took
            st = self.data_stream
            if st is not None:
                h2.count_data(st, self.from_client, None, took)
                reader = st.req_msgs if self.from_client else st.resp_msgs
                if reader is not None:
                    reader.gap()
                h2.report(st.ex, self.from_client,
                          f"{counted(nbytes, 'byte')} lost inside a DATA frame (framing kept)")
                if not self.skip and self.data_end:
                    h2.end_side(st, self.from_client, ts)
            return
        h2.report(None, self.from_client, f"{counted(nbytes, 'byte')} lost; HTTP/2 framing resynchronised at "
                  "the next plausible frame, header blocks after it decoded only where literal")
        self.buf = b""
        self.skip = self.data_left = 0
        self.data_stream = None
        self.block.clear()
        self.block_size = 0
        self.block_dropped = False
        self.preface = False
        self.lost = True
        self.hpack.lose_step()

    # -- pieces ----------------------------------------------------------------------------------
    def _preface(self, chunk: bytes) -> bytes:
        have = len(self.buf)
        need = len(PREFACE) - have
        got = self.buf + chunk[:need]
        if PREFACE[:len(got)] != got:
            self.h2.report(None, True, "client preface expected; HTTP/2 framing resynchronised")
            self.preface = False
            self.buf = b""
            self.lost = True
            return chunk
        if len(got) < len(PREFACE):
            self.buf = got
            return b""
        self.preface = False
        self.buf = b""
        return chunk[need:]

    def _skip(self, chunk: bytes, ts: float) -> bytes:
        take = min(self.skip, len(chunk))
        self.skip -= take
        if self.data_left:
            part = min(self.data_left, take)
            self.data_left -= part
            st = self.data_stream
            if st is not None:
                self.h2.count_data(st, self.from_client, chunk[:part], part)
        if not self.skip and self.data_stream is not None:
            st, self.data_stream = self.data_stream, None
            if self.data_end:
                self.h2.end_side(st, self.from_client, ts)
        return chunk[take:] if take < len(chunk) else b""

    def _start_data(self, buf: bytes, pos: int, n: int, length: int, flags: int, sid: int, ts: float) -> None:
        """A DATA frame longer than what has arrived: count what is here, stream the rest."""
        start = pos + FRAME_HEADER
        pad = 0
        if flags & PADDED:
            pad = buf[start] + 1
            start += 1
        data_len = max(0, length - pad)
        st = self.h2.stream_for_data(self, sid, ts)
        here = min(n - start, data_len)
        if st is not None:
            self.h2.count_data(st, self.from_client, buf[start:start + here], here)
        self.skip = pos + FRAME_HEADER + length - n
        self.data_left = data_len - here
        self.data_stream = st
        self.data_end = bool(flags & END_STREAM)

    def _drop_headers(self, sid: int) -> None:
        """A header block that will not be decoded: the dynamic table is out of step from here."""
        self.block.clear()
        self.block_size = 0
        self.hpack.lose_step()

    def frame(self, ftype: int, flags: int, sid: int, payload: bytes, ts: float) -> None:
        h2 = self.h2
        if self.block or self.block_dropped:
            if ftype != CONTINUATION or sid != self.block_sid:
                h2.report(None, self.from_client, f"{_frame_name(ftype)} inside a header block of stream "
                          f"{self.block_sid}: the block is not decoded")
                self._drop_headers(sid)
                self.block_dropped = False
            else:
                self._continuation(flags, payload, ts)
                return
        if ftype == HEADERS or ftype == PUSH_PROMISE:
            start, end = 0, len(payload)
            if flags & PADDED:
                if not payload:
                    h2.report(None, self.from_client, "padded frame without a pad length")
                    self.hpack.lose_step()
                    return
                end -= payload[0]
                start = 1
            promised = 0
            if ftype == HEADERS:
                if flags & PRIORITY_FLAG:
                    start += 5
            else:
                promised = int.from_bytes(payload[start:start + 4], "big") & 0x7FFFFFFF
                start += 4
            if end < start:
                h2.report(None, self.from_client, f"{_frame_name(ftype)} padding longer than the frame")
                self.hpack.lose_step()
                return
            block = payload[start:end]
            if flags & END_HEADERS:
                h2.header_block(self, ftype, flags, sid, promised, block, ts)
            else:
                self.block = [block]
                self.block_size = len(block)
                self.block_sid, self.block_type, self.block_flags = sid, ftype, flags
                self.block_promised, self.block_frames, self.block_ts = promised, 0, ts
        elif ftype == CONTINUATION:
            h2.report(None, self.from_client, f"CONTINUATION on stream {sid} without a header block")
        elif ftype == RST_STREAM:
            if len(payload) >= 4:
                h2.reset(self, sid, int.from_bytes(payload[:4], "big"), ts)
        elif ftype == SETTINGS:
            if not flags & 1:  # not an ACK
                h2.settings(self.from_client, payload)
        elif ftype == GOAWAY:
            if len(payload) >= 8:
                h2.goaway(self.from_client, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                          int.from_bytes(payload[4:8], "big"), ts)
        # PRIORITY, PING, WINDOW_UPDATE and unknown types say nothing about a stream's exchange

    def _continuation(self, flags: int, payload: bytes, ts: float) -> None:
        self.block_frames += 1
        if self.block_dropped:
            if flags & END_HEADERS:
                self.block_dropped = False
            return
        self.block.append(payload)
        self.block_size += len(payload)
        if self.block_size > MAX_HEADER_BLOCK or self.block_frames > MAX_CONTINUATIONS:
            self.h2.report(None, self.from_client, f"header block of stream {self.block_sid} over "
                           f"{MAX_HEADER_BLOCK} bytes or {MAX_CONTINUATIONS} CONTINUATION frames: "
                           "not decoded")
            self._drop_headers(self.block_sid)
            self.block_dropped = not flags & END_HEADERS
            return
        if flags & END_HEADERS:
            block = b"".join(self.block)
            self.block.clear()
            self.block_size = 0
            self.h2.header_block(self, self.block_type, self.block_flags, self.block_sid,
                                 self.block_promised, block, self.block_ts)


def _frame_name(ftype: int) -> str:
    return FRAME_NAMES[ftype] if ftype < len(FRAME_NAMES) else f"type-{ftype}"


class Http2Analyzer(Analyzer):
    protocol = "h2"
    __slots__ = ("streams", "closed", "goaway_text", "midstream")

    def __init__(self, host: Host, *, midstream: bool = False, upgraded: Exchange | None = None) -> None:
        super().__init__(host)
        self.midstream = midstream
        self.streams: dict[int, _Stream] = {}
        self.closed: set[int] = set()  # mid-connection only: streams ended (frames after are stragglers)
        self.goaway_text: str | None = None
        self.client = _Direction(self, True, not midstream, preface=not midstream)
        self.server = _Direction(self, False, not midstream, preface=False)
        if upgraded is not None:  # RFC 7540 section 3.2: the upgrading request is stream 1
            upgraded.index = upgraded.stream_id = 1
            upgraded.protocol = "h2"
            st = self.streams[1] = _Stream(upgraded, upgraded.request_time)
            st.client_ended = True
            settings = upgraded.headers.get("http2-settings")
            if settings:
                try:
                    self.settings(True, urlsafe_b64decode(settings + "=" * (-len(settings) % 4)))
                except ValueError:
                    self.report(upgraded, True, "HTTP2-Settings header not base64url")

    def held(self) -> int:
        c, s = self.client, self.server
        return len(c.buf) + len(s.buf) + c.block_size + s.block_size  # type: ignore[attr-defined]

    def busy(self) -> bool:
        return bool(self.streams)

    def report(self, ex: Exchange | None, from_client: bool, text: str) -> None:
        self.damage(ex, from_client, text)

    # -- streams ---------------------------------------------------------------------------------
    def _open(self, sid: int, ts: float | None) -> _Stream:
        ex = self.new_exchange("http", ts, index=sid)
        ex.stream_id = sid
        ex.protocol = "h2"
        ex.http_version = "HTTP/2"
        st = self.streams[sid] = _Stream(ex, ts)
        if len(self.streams) > MAX_STREAMS:
            oldest = next(iter(self.streams.values()))
            oldest.ex.damage.append(f"more than {MAX_STREAMS} streams open at once: emitted early")
            self._finish(oldest, "too many open streams")
        return st

    def stream_for_data(self, side: _Direction, sid: int, ts: float) -> _Stream | None:
        st = self.streams.get(sid)
        if st is None and self.midstream and sid and sid not in self.closed:
            st = self._open(sid, None)
            st.ex.damage.append("stream began before the capture")
        if st is not None:
            st.end_time = ts
        return st

    def count_data(self, st: _Stream, from_client: bool, data: bytes | None, n: int) -> None:
        ex = st.ex
        if from_client:
            ex.request_body_bytes += n
            reader = st.req_msgs
        else:
            ex.response_body_bytes += n
            reader = st.resp_msgs
        if reader is not None and data:
            reader.feed(data)

    def data_frame(self, side: _Direction, flags: int, sid: int, payload: bytes, ts: float) -> None:
        st = self.stream_for_data(side, sid, ts)
        if st is None:
            return
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                self.report(st.ex, side.from_client, "DATA padding longer than the frame")
                payload = b""
            else:
                payload = payload[1:len(payload) - payload[0]]
        if payload:
            self.count_data(st, side.from_client, payload, len(payload))
        if flags & END_STREAM:
            self.end_side(st, side.from_client, ts)

    def end_side(self, st: _Stream, from_client: bool, ts: float) -> None:
        if from_client:
            st.client_ended = True
        else:
            st.server_ended = True
        st.end_time = ts
        if st.client_ended and st.server_ended:
            self._finish(st, "END_STREAM")

    def header_block(self, side: _Direction, ftype: int, flags: int, sid: int, promised: int, block: bytes,
                     ts: float) -> None:
        from_client = side.from_client
        try:
            fields = side.hpack.decode(block)
        except HpackError as e:
            st = self.streams.get(promised if ftype == PUSH_PROMISE else sid)
            self.report(st.ex if st else None, from_client, f"header block of stream {sid} not decoded: {e}")
            if st is not None and flags & END_STREAM and ftype == HEADERS:
                self.end_side(st, from_client, ts)
            return
        headers, unknown = _headers(fields)
        if ftype == PUSH_PROMISE:
            if promised in self.streams:
                return
            st = self._open(promised, ts)
            st.h2.pushed_by = sid
            st.client_ended = True  # a promised request has no body
            self._request(st, headers, unknown, ts)
            return
        st = self.streams.get(sid)
        if st is None:
            if not sid:
                self.report(None, from_client, "HEADERS on stream 0")
                return
            if sid in self.closed or (not from_client and not self.midstream):
                return  # a straggler on a stream already over (after a reset, say)
            st = self._open(sid, ts if from_client else None)
            if not from_client:
                st.ex.damage.append("request not captured")
        ex = st.ex
        st.end_time = ts
        if from_client:
            if ex.method is None and not st.client_ended and not ex.headers:
                self._request(st, headers, unknown, ts)
            # (HEADERS after the request's: request trailers, which say nothing we keep)
        else:
            status = headers.get(":status")
            if not st.responded:
                if status and status.isdigit() and 100 <= int(status) < 200 and not flags & END_STREAM:
                    pass  # informational (100 Continue): the real response follows
                else:
                    self._response(st, headers, unknown, ts)
            else:
                st.h2.trailers = {k: v for k, v in headers.items() if k[:1] != ":"}
                self._unknown(st, unknown, from_client)
        if flags & END_STREAM:
            self.end_side(st, from_client, ts)

    def _unknown(self, st: _Stream, unknown: int, from_client: bool) -> None:
        if unknown:
            st.h2.undecoded_headers += unknown
            self.report(st.ex, from_client, f"{unknown} header fields refer to HPACK table entries sent "
                        "before the capture began: not decoded")

    def _request(self, st: _Stream, headers: dict[str, str], unknown: int, ts: float) -> None:
        ex = st.ex
        ex.request_time = ts
        ex.method = headers.pop(":method", None)
        ex.uri = headers.pop(":path", None)
        ex.host = headers.pop(":authority", None)
        st.h2.scheme = headers.pop(":scheme", None)
        ex.headers = headers
        meta = headers.get("x-envoy-peer-metadata")
        if meta:
            ex.peer_workload, ex.peer_namespace = decode_peer_metadata(meta)
        if is_grpc(headers.get("content-type")):
            ex.protocol = "grpc"
            service, method = service_method(ex.uri)
            ex.grpc = GrpcCall(service=service, method=method, timeout=headers.get("grpc-timeout"),
                               encoding=headers.get("grpc-encoding"))
            st.req_msgs, st.resp_msgs = MessageReader(), MessageReader()
        self._unknown(st, unknown, True)

    def _response(self, st: _Stream, headers: dict[str, str], unknown: int, ts: float) -> None:
        ex = st.ex
        st.responded = True
        ex.response_time = ts
        status = headers.pop(":status", None)
        if status is not None and status.isdigit():
            ex.status = int(status)
        ex.response_headers = headers
        meta = headers.get("x-envoy-peer-metadata")
        if meta:
            ex.server_peer_workload, ex.server_peer_namespace = decode_peer_metadata(meta)
        if ex.grpc is None and is_grpc(headers.get("content-type")):  # request not captured
            ex.protocol = "grpc"
            ex.grpc = GrpcCall()
            st.req_msgs, st.resp_msgs = MessageReader(), MessageReader()
        self._unknown(st, unknown, False)

    def reset(self, side: _Direction, sid: int, code: int, ts: float) -> None:
        st = self.streams.get(sid) or (self.stream_for_data(side, sid, ts) if self.midstream else None)
        if st is not None:
            st.end_time = ts
            self._finish(st, f"RST_STREAM {error_name(code)} by {'client' if side.from_client else 'server'}")

    def settings(self, from_client: bool, payload: bytes) -> None:
        """A side's SETTINGS bound what the *other* side may send: its frames and its HPACK table."""
        other = self.server if from_client else self.client
        for ident, value in SETTING(payload[:len(payload) - len(payload) % 6]):
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                dec = other.hpack  # type: ignore[attr-defined]
                dec.allowed = max(dec.allowed, value)
            elif ident == SETTINGS_MAX_FRAME_SIZE and DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_LIMIT:
                other.max_frame = value  # type: ignore[attr-defined]

    def goaway(self, from_client: bool, last_sid: int, code: int, ts: float) -> None:
        """Streams the sender of GOAWAY never processed (the other side's, above last_sid) are over."""
        by = "client" if from_client else "server"
        self.goaway_text = f"GOAWAY {error_name(code)} by {by}"
        parity = 0 if from_client else 1  # the receiver's streams: server's even, client's odd
        for sid in [s for s in self.streams if s > last_sid and s & 1 == parity]:
            st = self.streams[sid]
            st.end_time = ts
            self._finish(st, f"{self.goaway_text} (last stream {last_sid})")

    def _finish(self, st: _Stream, how: str) -> None:
        ex = st.ex
        sid = ex.stream_id or 0
        if self.streams.pop(sid, None) is None:
            return
        if self.midstream:
            if len(self.closed) >= _CLOSED_KEPT:
                self.closed.clear()
            self.closed.add(sid)
        h2 = st.h2
        h2.ended = how
        h2.end_time = st.end_time
        call = ex.grpc
        if call is not None:
            source = h2.trailers if "grpc-status" in h2.trailers else ex.response_headers
            code = source.get("grpc-status")
            if code is not None:
                call.status = status_name(code)
                call.status_code = int(code) if code.strip().isdigit() else None
                call.message = grpc_message(source.get("grpc-message"))
            req, resp = st.req_msgs, st.resp_msgs
            if req is not None and resp is not None:
                call.request_messages, call.request_sizes = req.count, req.sizes
                call.response_messages, call.response_sizes = resp.count, resp.sizes
                call.compressed = req.compressed or resp.compressed
        self.emit(ex)

    def cut_short(self, text: str) -> None:
        for st in self.streams.values():
            st.ex.damage.append(text)
        self.host.note_damage(text)

    def close(self, ts: float, why: str = "capture-end") -> None:
        why = self.goaway_text or CLOSE_REASONS.get(why, why)
        for st in list(self.streams.values()):
            if st.end_time is None:
                st.end_time = ts
            self._finish(st, why)
        self.done = True
