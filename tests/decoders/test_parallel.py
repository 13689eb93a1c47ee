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


def test_two_workers_keep_dns_lookups_whole_and_split_quic(tmp_path):
    """DNS goes to one worker (a lookup's attempts come from several ports); QUIC by its ports."""
    from tests.decoders.capture_builders import write
    from tests.decoders.quic_vectors import CLIENT_INITIAL, SERVER_INITIAL
    from tests.decoders.udp_builders import Resolver, datagram

    r = Resolver()
    for i in range(40):
        name = f"svc{i}"
        r.query(i, 2 * i, f"{name}.web.svc.cluster.local", cport=40000 + i)
        r.answer(i + 0.001, 2 * i, f"{name}.web.svc.cluster.local", 3, cport=40000 + i)
        r.query(i + 0.002, 2 * i + 1, f"{name}.svc.cluster.local", cport=41000 + i)  # another port
        r.answer(i + 0.003, 2 * i + 1, f"{name}.svc.cluster.local", 0, ("10.0.0.1",), cport=41000 + i)
    quic = [datagram(50 + i, "10.3.0.5", 50000 + i, "10.3.0.9", 443, CLIENT_INITIAL) for i in range(10)]
    quic += [datagram(50.5 + i, "10.3.0.9", 443, "10.3.0.5", 50000 + i, SERVER_INITIAL) for i in range(10)]
    capture = write(tmp_path / "udp.pcap", r.packets + quic)
    one, two = analyze([capture], workers=1), analyze([capture], workers=2)
    assert two.reports == one.reports
    report = one.reports[0]
    assert (report.dns_lookups, report.quic_connections, report.datagrams) == (40, 10, 180)
    assert all(len(ex.dns.attempts) == 1 for ex in one.exchanges if ex.dns is not None)
    assert _document(two) == _document(one)
