"""Capture files as they come from the field: compressed (sniffed, streamed; tshark reads the same
copies), several in one run (a bad one reported, the others analysed), cut by a small snaplen (real
`tcpdump -s 96`, compared with tshark), damage counted, plurals right."""

from __future__ import annotations

import bz2
import http.client
import http.server
import json
import lzma
import subprocess
import threading

import pytest
from meshscope.decoders import analyze
from meshscope.decoders.read import read_exchanges
from meshscope.decoders.samples import NODEPORT_LAB

from meshscope.cli import main
from tests.conftest import free_port, need_binary, need_root
from tests.decoders.canonical import canonical
from tests.decoders.capture_builders import (
    Conversation,
    frame,
    http_request,
    http_response,
    tls_hellos,
    write,
    write_frames,
)
from tests.decoders.test_dpkt_vs_tshark import Handler
from tests.decoders.tls_lab import tcpdump_lo

PATHS = ["/a", "/chunked/b", "/missing", "/c?q=1"]
SNAPLEN = 96
PACKETS = 10  # of _one_exchange's capture: handshake, request, response, their ACKs, the close


def _traffic(port: int) -> None:
    for conn_no in range(2):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for i, path in enumerate(PATHS):
            c.request("GET", path, headers={"X-Request-Id": f"{conn_no}{i}-field",
                                            "Host": f"web-{conn_no}.shop"})
            c.getresponse().read()
        c.request("POST", "/form", body=b"a=1&b=2" * 40, headers={"Host": "web.shop"})
        c.getresponse().read()
        c.close()


def _tshark_heads(path, port: int) -> list[tuple[str, str, str]]:
    """(method, uri, status) of every request and response tshark reads frame by frame (desegmentation
    off: a cut frame is all there is). Filtered on ``http``: tshark sets ``http.request`` only for a
    head it read to its end, and shows the method and URI of a cut one all the same."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "tcp.desegment_tcp_streams:FALSE",
         "-o", "http.desegment_headers:FALSE", "-o", "http.desegment_body:FALSE",
         "-d", f"tcp.port=={port},http", "-Y", "http",
         "-T", "fields", "-e", "http.request.method", "-e", "http.request.uri", "-e", "http.response.code"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [tuple(line.split("\t")) for line in out.splitlines()]
    return [r for r in rows if len(r) == 3 and (r[0] or r[2])]  # not a body's continuation frame


@pytest.fixture(scope="module")
def field_captures(tmp_path_factory):
    """Real tcpdump on loopback, whole packets and cut at SNAPLEN bytes, of the same keep-alive traffic."""
    need_root()
    need_binary("tcpdump")
    need_binary("tshark")
    d = tmp_path_factory.mktemp("field")
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    whole, cut = d / "whole.pcap", d / "cut96.pcap"
    try:
        with tcpdump_lo(whole, [port]), tcpdump_lo(cut, [port], snaplen=SNAPLEN):
            _traffic(port)
    finally:
        server.shutdown()
    return {"whole": whole, "cut": cut, "port": port, "dir": d}


def _compressed_copies(path, d) -> dict[str, object]:
    """gzip, zstd and lz4 made by their own command-line tools (as users make them); bzip2, xz by Python."""
    copies = {}
    for tool, ext in (("gzip", "gz"), ("zstd", "zst"), ("lz4", "lz4")):
        exe = need_binary(tool)
        out = d / f"{path.stem}.pcap.{ext}"
        with open(out, "wb") as f:
            subprocess.run([exe, "-c", str(path)], stdout=f, check=True, timeout=60)
        copies[tool] = out
    copies["bzip2"] = d / f"{path.stem}.pcap.bz2"
    copies["bzip2"].write_bytes(bz2.compress(path.read_bytes()))
    copies["xz"] = d / f"{path.stem}.pcap.xz"
    copies["xz"].write_bytes(lzma.compress(path.read_bytes()))
    return copies


@pytest.mark.root
@pytest.mark.tshark
def test_compressed_copies_give_the_same_analysis_and_tshark_reads_them(field_captures):
    whole = field_captures["whole"]
    stream, plain_report = read_exchanges(whole, capture="c")
    plain = [canonical(e) for e in stream]
    assert len(plain) == 10 and not plain_report.damage
    tshark_plain = subprocess.run(["tshark", "-r", str(whole)], capture_output=True, text=True,
                                  check=True).stdout
    copies = _compressed_copies(whole, field_captures["dir"])
    for kind, path in copies.items():
        stream, report = read_exchanges(path, capture="c")
        assert [canonical(e) for e in stream] == plain, kind
        assert (report.compression, report.packets, report.damage) == (kind, plain_report.packets, []), kind
        if kind in ("gzip", "zstd", "lz4"):  # what tshark reads itself (4.0 refuses bzip2 and xz)
            theirs = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True, check=True)
            assert theirs.stdout == tshark_plain, kind
    # the CLI and a multi-process analysis read them too
    assert analyze([copies["zstd"]], workers=2).reports[0].exchanges == 10


@pytest.mark.root
@pytest.mark.tshark
def test_a_capture_cut_by_its_snaplen_still_gives_its_request_and_status_lines(field_captures):
    cut, port = field_captures["cut"], field_captures["port"]
    stream, report = read_exchanges(cut)
    ours = list(stream)
    assert report.snaplen == SNAPLEN and report.cut_by_snaplen >= 10
    assert any("snaplen" in line for line in report.damage)
    theirs = _tshark_heads(cut, port)
    requests = [(m, u) for m, u, _s in theirs if m]
    statuses = [int(s) for m, _u, s in theirs if not m and s]
    assert len(requests) == 10 and len(statuses) == 10  # tshark reads every start line of the cut capture
    assert [(e.method, e.uri) for e in ours] == requests
    assert [e.status for e in ours] == statuses
    # the same requests and statuses as the whole capture; the headers after the cut are not invented
    stream, _ = read_exchanges(field_captures["whole"])
    whole = list(stream)
    assert [(e.method, e.uri, e.status) for e in ours] == [(e.method, e.uri, e.status) for e in whole]
    assert all(not e.headers.get("x-request-id") for e in ours)
    assert all(any("head cut short" in d for d in e.damage) for e in ours)
    # the other backends read the cut capture the same way
    for backend in ("scapy", "pyshark"):
        stream, rep = read_exchanges(cut, backend)
        assert [canonical(e) for e in stream] == [canonical(e) for e in ours], backend
        assert rep.cut_by_snaplen == report.cut_by_snaplen


@pytest.mark.root
def test_compressed_and_cut_reports_in_the_cli(field_captures, capsys):
    d = field_captures["dir"]
    gz = d / "cut96.pcap.gz"
    gz.write_bytes(subprocess.run(["gzip", "-c", str(field_captures["cut"])], capture_output=True,
                                  check=True).stdout)
    assert main(["pcap", "analyze", str(gz)]) == 0
    out = capsys.readouterr().out
    assert "cut96.pcap.gz: pcap (gzip), " in out and "10 exchanges; " in out
    assert f"cut by snaplen {SNAPLEN}" in out


def _one_exchange(path):
    c = Conversation(cport=42000).handshake()
    c.send(True, http_request("GET", "/only", x_request_id="only-one"))
    c.send(False, http_response(200, b"one"))
    return write(path, c.close().packets)


def test_several_files_each_reported_a_bad_one_does_not_stop_the_others(tmp_path, capsys):
    good = _one_exchange(tmp_path / "good.pcap")
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture at all\n" * 10)
    header_cut = tmp_path / "header-cut.pcap"
    header_cut.write_bytes(good.read_bytes()[:10])
    body_cut = tmp_path / "body-cut.pcap"
    body_cut.write_bytes(good.read_bytes()[:-20])
    bad_gzip = tmp_path / "bad.pcap.gz"
    bad_gzip.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 40)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    missing = tmp_path / "missing.pcap"
    args = [str(p) for p in (good, garbage, header_cut, body_cut, bad_gzip, folder, missing)]
    assert main(["pcap", "analyze", "--json", *args]) == 1  # some failed
    doc = json.loads(capsys.readouterr().out)
    reports = {c["capture"]: c for c in doc["captures"]}
    assert list(reports) == ["good.pcap", "garbage.pcap", "header-cut.pcap", "body-cut.pcap", "bad.pcap.gz",
                             "a-folder", "missing.pcap"]
    assert reports["good.pcap"]["error"] is None and reports["good.pcap"]["exchanges"] == 1
    assert reports["body-cut.pcap"]["error"] is None and reports["body-cut.pcap"]["truncated"]
    assert "not a pcap or pcapng" in reports["garbage.pcap"]["error"]
    assert "header cut short" in reports["header-cut.pcap"]["error"]
    assert "gzip" in reports["bad.pcap.gz"]["error"]
    assert "is a directory" in reports["a-folder"]["error"]
    assert "no such capture file" in reports["missing.pcap"]["error"]
    assert str(tmp_path) not in json.dumps(doc["captures"])  # named as the captures are, not by full path
    assert reports["body-cut.pcap"]["exchanges"] == 1
    assert [e["uri"] for e in doc["exchanges"]] == ["/only"] and doc["duplicates"] == 1  # two copies: folded
    # the text output: one line per capture; errors first on stderr
    assert main(["pcap", "analyze", *args]) == 1
    captured = capsys.readouterr()
    assert f"  good.pcap: pcap, {PACKETS} packets, 1 connection, 1 exchange\n" in captured.out
    assert "  a-folder: NOT READ: a-folder: is a directory, not a capture file" in captured.out
    assert captured.err.startswith("meshscope: garbage.pcap: not a pcap or pcapng file")
    # nothing readable at all: one line, exit 2
    assert main(["pcap", "analyze", str(folder), str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory" in err and "no such capture file" in err


def test_all_damage_is_counted_with_the_first_examples(tmp_path, capsys):
    c = Conversation(cport=42100).handshake()
    for i in range(12):  # every second request lost: a gap each
        segs = c.send(True, http_request("GET", f"/r{i}", x_request_id=f"r{i}"))
        if i % 2:
            c.packets.remove(segs[0])
        c.send(False, http_response(200, b"x"))
    path = write(tmp_path / "lossy.pcap", c.close().packets)
    assert main(["pcap", "analyze", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    total = int(err[0].split(": ")[2].split()[0])
    assert err[0] == f"meshscope: lossy.pcap: {total} damaged places:" and total >= 6
    assert len(err) == 1 + 5 + 1 and err[-1] == f"meshscope: lossy.pcap:   … and {total - 5} more"


def test_counts_read_right_in_the_singular(tmp_path, capsys):
    path = _one_exchange(tmp_path / "one.pcap")
    assert main(["pcap", "analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 flows over 0 exchanges; 1 exchange had no NAT or proxy hop" in out
    assert f"one.pcap: pcap, {PACKETS} packets, 1 connection, 1 exchange\n" in out
    assert "1 exchanges" not in out and "1 connections" not in out


def test_the_lab_sample_reads_the_same_through_every_compression(tmp_path):
    """No root needed: the bundled real capture, compressed by the tools at hand."""
    need_binary("zstd")  # scripts/setup.sh installs it; under CI a missing tool fails, not skips
    plain = analyze([NODEPORT_LAB])
    doc = plain.to_dict()
    for kind, path in _compressed_copies(NODEPORT_LAB, tmp_path).items():
        renamed = tmp_path / kind / NODEPORT_LAB.name  # the same capture name: the same exchange ids
        renamed.parent.mkdir()
        renamed.write_bytes(path.read_bytes())
        got = analyze([renamed]).to_dict()
        assert got["captures"][0].pop("compression") == kind
        want = json.loads(json.dumps(doc))
        want["captures"][0].pop("compression")
        assert got == want, kind


@pytest.mark.parametrize("snaplen", [96, 300])
def test_a_tls_hello_cut_by_the_snaplen_gives_what_it_kept_whole(tmp_path, snaplen):
    """A real OpenSSL ClientHello and server flight, cut as `tcpdump -s N` cuts them: the extensions
    kept whole (SNI, ALPN) are read, nothing past the cut is guessed (tshark 4.0 reads neither)."""
    client_hello, server_flight = tls_hellos(sni="shop.example.com", alpn=("h2", "http/1.1"))
    c = Conversation(cport=44000).handshake()
    c.send(True, client_hello)
    c.send(False, server_flight)
    frames = []
    for p in c.close().packets:
        raw = bytes(frame(p, "ether"))
        frames.append((float(p.time), raw[:snaplen], len(raw)))
    path = write_frames(tmp_path / f"tls{snaplen}.pcap", frames, snaplen=snaplen)
    (ex,), report = (lambda s, r: (list(s), r))(*read_exchanges(path))
    assert report.cut_by_snaplen == 2 and ex.exchange_type == "tls"
    if snaplen == 96:  # 42 bytes of the hello: not even the cipher suites
        assert (ex.sni, ex.alpn, ex.tls_offered_versions) == (None, [], [])
    else:
        assert (ex.sni, ex.alpn) == ("shop.example.com", ["h2", "http/1.1"])
        assert ex.tls_version == "TLS 1.3"  # supported_versions is early in the ServerHello
        assert any("SNI and ALPN read from the" in d for d in ex.damage)
