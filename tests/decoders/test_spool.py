"""The exchange spool: what goes in comes back, whole or joined, with folded copies left out."""

from __future__ import annotations

import orjson
import pytest
from meshscope.decoders.spool import ExchangeSpool

from tests.decoders.made_exchanges import conn, http


def _spooled(n: int) -> tuple[ExchangeSpool, list]:
    c = conn("10.0.0.1:40000", "10.0.0.2:80", isn=1, t=1.0)
    exchanges = [http(c, 1.0 + i, index=i, uri=f"/{i}?\n") for i in range(n)]  # "\n" escaped in JSON
    spool = ExchangeSpool()
    list(spool.park(exchanges))
    return spool, exchanges


@pytest.mark.parametrize("n", [0, 1, 3, 5000])
@pytest.mark.parametrize("skip", [False, True])
def test_joined_is_the_kept_lines_comma_separated(n, skip):
    spool, exchanges = _spooled(n)
    if skip and n:
        spool.skip = {exchanges[0].id, exchanges[-1].id}
    doc = b"[" + b"".join(spool.joined(b",", chunk=4096)) + b"]"  # small chunks: many pieces
    kept = [ex for ex in exchanges if ex.id not in spool.skip]
    assert doc == b"[" + b",".join(spool.lines()) + b"]"
    assert [e["id"] for e in orjson.loads(doc)] == [ex.id for ex in kept]
    assert list(spool) == kept
    spool.close()


def test_a_capture_given_twice_still_writes_every_exchange():
    # the copies folded away have the ids of the exchanges kept: skipping by id must not drop those
    from meshscope.decoders.analysis import analyze
    from meshscope.decoders.samples import NODEPORT_LAB

    once = analyze([NODEPORT_LAB])
    twice = analyze([NODEPORT_LAB, NODEPORT_LAB])
    kept = {ex.id for ex in twice.stitched}
    assert twice.duplicates == len(kept) == len(once.stitched)
    assert {e["id"] for e in orjson.loads(twice.to_json())["exchanges"]} == kept
