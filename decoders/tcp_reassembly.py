"""TCP reassembly of one direction of a connection: in-order bytes out, retransmissions trimmed,
out-of-order segments held (bounded), lost segments turned into an explicit gap so the parser
above can resynchronise. Sequence arithmetic is modulo 2**32."""

from __future__ import annotations

from typing import Protocol

MOD = 1 << 32
HALF = 1 << 31
MAX_PENDING_BYTES = 256 * 1024  # out-of-order bytes held per direction before declaring a gap
MAX_PENDING_SEGMENTS = 256


def _trim(behind: int, payload: bytes, missing: int) -> tuple[bytes, int] | None:
    """Drop the ``behind`` bytes already delivered from a segment; None if nothing new is left."""
    if behind >= len(payload) + missing:
        return None
    if behind >= len(payload):
        return b"", missing - (behind - len(payload))
    return payload[behind:], missing


class StreamSink(Protocol):
    """Where in-order bytes of one direction go."""

    def data(self, payload: bytes, ts: float) -> None: ...

    def gap(self, nbytes: int, ts: float) -> None: ...


class StreamReassembler:
    """One direction of a TCP connection."""

    __slots__ = ("sink", "next_seq", "isn", "pending", "pending_bytes", "delivered", "gaps", "gap_bytes")

    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
        self.next_seq: int | None = None
        self.isn: int | None = None
        self.pending: dict[int, tuple[bytes, int, float]] = {}  # seq -> (payload, missing, ts)
        self.pending_bytes = 0
        self.delivered = 0
        self.gaps = 0
        self.gap_bytes = 0

    def syn(self, seq: int) -> None:
        """A SYN (or SYN-ACK) fixes the initial sequence number; data starts at seq + 1."""
        if self.isn is None or self.next_seq is None or self.delivered == 0:
            self.isn = seq
            self.next_seq = (seq + 1) % MOD

    def segment(self, seq: int, payload: bytes, ts: float, missing: int = 0) -> None:
        """A segment's payload; ``missing`` bytes after it were on the wire but cut by the snaplen."""
        if self.next_seq is None:  # mid-stream: no SYN seen, start where the capture starts
            self.next_seq = seq
        rel = (seq - self.next_seq) % MOD
        if rel >= HALF:  # starts before what we already delivered: retransmission or overlap
            trimmed = _trim(MOD - rel, payload, missing)
            if trimmed is None:
                return
            payload, missing = trimmed
            rel = 0
            seq = self.next_seq
        if rel == 0:
            if payload and not missing:  # the common case, inlined
                self.next_seq = (self.next_seq + len(payload)) % MOD
                self.delivered += len(payload)
                self.sink.data(payload, ts)
            else:
                self._deliver(payload, missing, ts)
            if self.pending:
                self._drain()
            return
        old = self.pending.get(seq)
        if old is None or len(old[0]) + old[1] < len(payload) + missing:
            self.pending_bytes += len(payload) - (len(old[0]) if old else 0)
            self.pending[seq] = (payload, missing, ts)
        if self.pending_bytes > MAX_PENDING_BYTES or len(self.pending) > MAX_PENDING_SEGMENTS:
            self.skip_hole(ts)

    def acked(self, ack: int, ts: float) -> None:
        """The peer acknowledged up to ``ack``: a hole below held segments it covers was lost from
        the capture (the receiver had it), so give up waiting for it."""
        if not self.pending or self.next_seq is None:
            return
        first = min(self.pending, key=self._distance)
        if 0 < self._distance(first) < HALF and (ack - first) % MOD < HALF:
            self.skip_hole(ts)

    def skip_hole(self, ts: float) -> None:
        """Declare the bytes up to the earliest held segment lost, and carry on from there."""
        if not self.pending or self.next_seq is None:
            return
        first = min(self.pending, key=self._distance)
        hole = self._distance(first)
        if 0 < hole < HALF:
            self._gap(hole, ts)
        self._drain()

    def flush(self, ts: float) -> None:
        """End of the connection (or of the capture): deliver everything held, across holes."""
        while self.pending:
            self.skip_hole(ts)

    def _distance(self, seq: int) -> int:
        return (seq - self.next_seq) % MOD  # type: ignore[operator]

    def _deliver(self, payload: bytes, missing: int, ts: float) -> None:
        if payload:
            self.next_seq = (self.next_seq + len(payload)) % MOD  # type: ignore[operator]
            self.delivered += len(payload)
            self.sink.data(payload, ts)
        if missing:
            self._gap(missing, ts)

    def _gap(self, nbytes: int, ts: float) -> None:
        self.next_seq = (self.next_seq + nbytes) % MOD  # type: ignore[operator]
        self.gaps += 1
        self.gap_bytes += nbytes
        self.sink.gap(nbytes, ts)

    def _drain(self) -> None:
        """Deliver held segments that are now in order (trimming any overlap)."""
        while self.pending:
            progressed = False
            for seq in list(self.pending):
                rel = self._distance(seq)
                if rel != 0 and rel < HALF:
                    continue
                payload, missing, ts = self.pending.pop(seq)
                self.pending_bytes -= len(payload)
                progressed = True
                if rel:  # overlaps what was delivered
                    trimmed = _trim(MOD - rel, payload, missing)
                    if trimmed is None:
                        continue
                    payload, missing = trimmed
                self._deliver(payload, missing, ts)
                progressed = True
            if not progressed:
                return
