"""HTTP/2 conversations for crafted captures: real frames and HPACK from python-hyper's ``h2`` (the
peer endpoints), and hand-laid frames (hyperframe, hpack) for what a well-behaved endpoint never
sends: CONTINUATION runs, padding, oversize frames, table-size bombs."""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
from hpack import Encoder

from tests.decoders.capture_builders import Conversation


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One frame as RFC 9113 section 4.1 lays it out."""
    return struct.pack("!BHBBL", len(payload) >> 16, len(payload) & 0xFFFF, ftype, flags, sid) + payload


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    """A gRPC length-prefixed message."""
    return struct.pack("!BL", int(compressed), len(message)) + message


class H2Pair:
    """A client and a server ``h2`` endpoint talking through a Conversation: what each sends is
    written as TCP segments and handed to the other, so every frame and header block is what a
    real HTTP/2 stack produces."""

    def __init__(self, conv: Conversation | None = None, mss: int = 1400) -> None:
        self.conv = conv or Conversation(sport=8080)
        self.mss = mss
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, validate_inbound_headers=False))
        self.server_events: list = []
        self.client_events: list = []

    def start(self, handshake: bool = True, server_first: bool = False) -> H2Pair:
        """The prefaces; ``server_first``: the server's SETTINGS go out on accept, before the
        client's preface (as gRPC servers do)."""
        if handshake:
            self.conv.handshake()
        if server_first:
            self.server.initiate_connection()
            out = self.server.data_to_send()
            self.conv.send(False, out, self.mss)
            self.client.initiate_connection()  # the client's preface before its answer to those SETTINGS
            self.client_events += self.client.receive_data(out)
        else:
            self.client.initiate_connection()
            self.flush()
            self.server.initiate_connection()
        self.flush()
        return self

    def flush(self) -> None:
        """Send what either endpoint has queued, until both are quiet."""
        for _ in range(10):
            moved = False
            out = self.client.data_to_send()
            if out:
                self.conv.send(True, out, self.mss)
                self.server_events += self.server.receive_data(out)
                moved = True
            out = self.server.data_to_send()
            if out:
                self.conv.send(False, out, self.mss)
                self.client_events += self.client.receive_data(out)
                moved = True
            if not moved:
                return

    def request(self, headers: list[tuple[str, str]], body: bytes = b"", end: bool = True) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream=not body and end)
        if body:
            self.client.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def respond(self, sid: int, headers: list[tuple[str, str]], body: bytes = b"",
                trailers: list[tuple[str, str]] | None = None) -> None:
        self.server.send_headers(sid, headers, end_stream=not body and not trailers)
        if body:
            self.server.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)
        self.flush()

    def raw(self, from_client: bool, data: bytes) -> None:
        """Bytes on the wire the endpoints never see (hand-laid frames)."""
        self.conv.send(from_client, data, self.mss)


def header_block(headers: list[tuple[str, str]], encoder: Encoder | None = None) -> bytes:
    return (encoder or Encoder()).encode(headers)
