"""TCP reassembly: any order, duplicates and overlaps give the original bytes; losses become gaps;
sequence numbers wrap; held data is bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.read import read_exchanges
from meshscope.decoders.tcp_reassembly import MAX_PENDING_BYTES, StreamReassembler


class Collect:
    def __init__(self) -> None:
        self.out = bytearray()
        self.gaps: list[int] = []

    def data(self, payload: bytes, ts: float) -> None:
        self.out += payload

    def gap(self, nbytes: int, ts: float) -> None:
        self.gaps.append(nbytes)
        self.out += b"?" * nbytes


DATA = bytes(range(256)) * 32  # longer than any generated stream


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 300), min_size=1, max_size=20), st.randoms(),
       st.integers(0, 5))
def test_any_order_with_duplicates_gives_the_original(isn, sizes, rnd, dups):
    segs, pos = [], 0
    for n in sizes:
        segs.append((pos, DATA[pos:pos + n]))
        pos += n
    data = DATA[:pos]
    first = segs[0]
    rest = segs[1:] + [rnd.choice(segs) for _ in range(dups)]
    rest += [(p + 1, d[1:]) for p, d in rnd.sample(segs, min(2, len(segs))) if len(d) > 1]  # overlaps
    rnd.shuffle(rest)
    sink = Collect()
    r = StreamReassembler(sink)
    r.syn(isn)
    for p, d in [first] + rest:
        r.segment((isn + 1 + p) % 2**32, d, 0.0)
    r.flush(0.0)
    assert bytes(sink.out) == data and sink.gaps == []


def test_lost_segment_becomes_a_gap_when_the_peer_acknowledges_past_it():
    sink = Collect()
    r = StreamReassembler(sink)
    r.syn(2**32 - 5)  # wraps while streaming
    base = 2**32 - 4
    r.segment(base % 2**32, b"aaaa", 0.0)
    r.segment((base + 8) % 2**32, b"cccc", 0.0)  # bbbb lost
    assert bytes(sink.out) == b"aaaa"
    r.acked((base + 12) % 2**32, 0.0)  # the receiver had everything: the capture lost it
    assert bytes(sink.out) == b"aaaa????cccc" and sink.gaps == [4]


def test_held_bytes_are_bounded():
    sink = Collect()
    r = StreamReassembler(sink)
    r.syn(0)
    for i in range(1, 400):  # the first 1000 bytes never come
        r.segment(1 + i * 1000, b"x" * 1000, 0.0)
        assert r.pending_bytes <= MAX_PENDING_BYTES
    assert sink.gaps == [1000]


def test_retransmitted_and_reordered_request_in_a_capture(tmp_path):
    from tests.decoders.capture_builders import corner_cases

    stream, report = read_exchanges(corner_cases(tmp_path)["retrans"])
    exs = list(stream)
    assert [(e.uri, e.request_id, e.status) for e in exs] == [("/retrans", "r-1", 200)]
    assert exs[0].headers["x-pad"] == "p" * 200 and exs[0].damage == [] and not report.damage
