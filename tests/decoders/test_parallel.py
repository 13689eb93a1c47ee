"""Decoding one capture in several processes (decoders.parallel) gives what one process gives."""

from __future__ import annotations

import orjson
from meshscope.decoders.analysis import analyze
from meshscope.decoders.samples import NODEPORT_LAB

from benchmarks.make_capture import write_http_tls


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


def test_workers_forgetting_which_connections_they_sent_lose_nothing(tmp_path, monkeypatch):
    from meshscope.decoders import parallel

    monkeypatch.setattr(parallel, "MAX_KEYS", 3)  # forked workers see it: sent again and again
    capture = tmp_path / "http_tls.pcap"
    write_http_tls(capture, 5_000)
    assert _document(analyze([capture], workers=2)) == _document(analyze([capture], workers=1))


def test_two_workers_give_what_one_gives_on_the_lab_sample():
    one, two = analyze([NODEPORT_LAB], workers=1), analyze([NODEPORT_LAB], workers=2)
    assert _document(two) == _document(one)
    assert len(one.flows) > 0


def _analyze_in_child(path: str, out) -> None:
    a = analyze([path], workers=2)
    out.put(a.reports[0].exchanges)


def test_inside_a_daemonic_process_it_decodes_in_that_process(tmp_path):
    # a daemonic process may not start children: the decoding stays in it instead of failing
    import multiprocessing

    capture = tmp_path / "http_tls.pcap"
    write_http_tls(capture, 2_000)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_analyze_in_child, args=(str(capture), out), daemon=True)
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert out.get(timeout=5) == analyze([capture], workers=1).reports[0].exchanges
