"""Decoding one capture in several processes (decoders.parallel) gives what one process gives."""

from __future__ import annotations

import orjson

from benchmarks.make_capture import write_http_tls
from decoders.analyze import analyze
from decoders.samples import NODEPORT_LAB


def _document(a) -> dict:
    doc = orjson.loads(a.to_json())
    doc["exchanges"].sort(key=lambda e: e["id"])  # workers' batches interleave in another order
    return doc


def test_two_workers_give_what_one_gives_on_generated_traffic(tmp_path):
    capture = tmp_path / "http_tls.pcap"
    write_http_tls(capture, 20_000)
    one, two = analyze([capture], workers=1), analyze([capture], workers=2)
    assert two.reports == one.reports
    assert one.reports[0].exchanges > 2000  # several batches from each worker
    assert _document(two) == _document(one)


def test_two_workers_give_what_one_gives_on_the_lab_sample():
    one, two = analyze([NODEPORT_LAB], workers=1), analyze([NODEPORT_LAB], workers=2)
    assert _document(two) == _document(one)
    assert len(one.flows) > 0
