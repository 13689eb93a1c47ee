"""A picture for every capture: with no flow stitched, its exchanges as a sequence diagram (a section per
connection) in SVG, Mermaid and text alike; an overview for a capture too big to draw one by one; filters
(host, port, protocol, status, request id) narrowing what is drawn and listed."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from meshscope.decoders import (
    ExchangeFilter,
    FilterError,
    analyze,
    capture_diagram,
    diagram_mermaid,
    diagram_svg,
    diagram_text,
)
from meshscope.decoders.samples import NODEPORT_LAB
from meshscope.decoders.svg_text import fit, text_width

from meshscope.cli import main
from tests.decoders.mermaid_parser import mermaid_parse
from tests.decoders.picture_captures import RID, busy_capture, ordinary_capture
from tests.decoders.udp_builders import Resolver

SVG_NS = "{http://www.w3.org/2000/svg}"
CHECK = (Path(__file__).parents[1] / "api" / "svg_text_check.js").read_text()


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory):
    path = ordinary_capture(tmp_path_factory.mktemp("pictures") / "ordinary.pcap")
    return path, analyze([path])


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    path = busy_capture(tmp_path_factory.mktemp("pictures") / "busy.pcap", clients=20, per_client=6)
    return path, analyze([path])


def picture(analysis, flt: ExchangeFilter | None = None, **kw):
    return capture_diagram(analysis.flows, analysis.by_id(), flt, **kw)


def svg_texts(svg: str) -> list[str]:
    """Each text's full wording (a text cut to fit keeps it in its <title>)."""
    out = []
    for t in ET.fromstring(svg).iter(f"{SVG_NS}text"):  # well-formed, or this raises
        title = t.find(f"{SVG_NS}title")
        out.append(title.text or "" if title is not None else "".join(t.itertext()))
    return out


def arrows(svg: str) -> dict[str, int]:
    return {k: svg.count(f'marker-end="url(#a-{k})"') for k in ("handshake", "hello", "request", "response",
                                                                  "error")}


MERMAID_ARROW = re.compile(r"^    (\w+)(->>|-->>|--\)|-x)(\w+): (.+)$")
MERMAID_NOTE = re.compile(r"^    Note over (\w+)(?:,(\w+))?: (.+)$")


def mermaid_messages(text: str) -> list[tuple[str, str, str, str]]:
    """The arrows of a Mermaid sequenceDiagram, its structure checked on the way: the header, every
    participant declared before use and named once, only the arrow forms Mermaid knows, blocks opened
    and closed in pairs, no character Mermaid reads as syntax in a label."""
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    declared: set[str] = set()
    depth, found = 0, []
    for line in lines[1:]:
        if m := re.match(r"^    participant (\w+) as (.+)$", line):
            assert m.group(1) not in declared and not found, line
            declared.add(m.group(1))
        elif m := MERMAID_ARROW.match(line):
            assert {m.group(1), m.group(3)} <= declared, line
            found.append(m.groups())
        elif m := MERMAID_NOTE.match(line):
            assert {m.group(1), m.group(2) or m.group(1)} <= declared, line
        elif line == "    rect rgb(245, 245, 250)":
            depth += 1
        elif line == "    end":
            depth -= 1
            assert depth >= 0
        else:
            raise AssertionError(f"not Mermaid sequenceDiagram syntax: {line!r}")
        assert ";" not in line and "#" not in line
    assert depth == 0
    return found


def test_an_ordinary_capture_gets_a_sequence_diagram_of_its_exchanges(ordinary):
    _, a = ordinary
    assert a.flows == []  # nothing to stitch: before, a blank rectangle
    d = picture(a)
    svg = diagram_svg(d)
    texts = svg_texts(svg)
    for column in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        assert column in texts
    assert arrows(svg) == {"handshake": 3, "hello": 1, "request": 3, "response": 4, "error": 0}
    joined = "\n".join(texts)
    for label in ("TCP handshake → :80", "TCP handshake → :443", "TCP handshake → :50051",
                  "GET /products rid 0b9f6a2c…v4", "200 X", "503 X", "ClientHello SNI secure.example.com",
                  "ServerHello TLS 1.3", "gRPC Catalog/List stream 1", "200 UNAVAILABLE"):
        assert label in joined, label
    assert "connection 1: TCP 10.0.0.1:40001 → 10.0.0.2:80  2 exchanges" in texts
    assert "4 exchanges between 4 hosts; no multi-hop flow stitched: each exchange drawn" in texts
    offsets = [float(t[1:-3]) for t in texts if re.fullmatch(r"\+-?[0-9.]+ ms", t)]
    assert len(offsets) == 11 and min(offsets) >= 0


def test_mermaid_and_text_draw_the_same_exchanges(ordinary):
    _, a = ordinary
    d = picture(a)
    msgs = [m for s in d.sections for m in s.messages]
    found = mermaid_messages(diagram_mermaid(d))
    assert len(found) == len(msgs) == 11
    assert [label.rsplit(" (+", 1)[0] for *_, label in found] == [m.label for m in msgs]
    assert sum(arrow == "-->>" for _, arrow, _, _ in found) == 4  # the answers
    text = diagram_text(d)
    lines = text.splitlines()
    assert lines[0] == d.caption
    assert re.findall(r"^connection \d+: (.*)$", text, re.M) == [s.title for s in d.sections]
    assert len(lines) == 1 + len(d.sections) + len(msgs)
    assert "10.0.0.1 -> 10.0.0.4: gRPC Catalog/List stream 1" in text
    assert "10.0.0.1 <- 10.0.0.2: 503 X" in text


def test_long_texts_are_cut_to_their_box_with_the_whole_text_in_a_title(ordinary):
    _, a = ordinary
    svg = diagram_svg(picture(a))
    root = ET.fromstring(svg)
    cut = [t for t in root.iter(f"{SVG_NS}text") if t.find(f"{SVG_NS}title") is not None]
    assert cut, "the POST's 80-character path cannot fit between two columns"
    for t in cut:
        shown, full = t.text or "", t.find(f"{SVG_NS}title").text or ""
        assert shown.endswith("…") and full.startswith(shown[:-1]) and len(full) > len(shown)
    assert any("POST /cart/items/" in (t.find(f"{SVG_NS}title").text or "") for t in cut)
    assert fit("x" * 10, 1000) == ("x" * 10, False)
    shown, was_cut = fit("W" * 100, 120)
    assert was_cut and text_width(shown) <= 120


@pytest.mark.chromium
def test_every_text_fits_its_box_in_a_browser(ordinary, busy):
    """Chromium measures each text as the web page's tests do (tests/api/svg_text_check.js)."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import need_binary

    need_binary("/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            for _, a in (ordinary, busy):
                page.set_content(f"<!doctype html><html><body>{diagram_svg(picture(a))}</body></html>")
                assert page.evaluate(CHECK, "svg") == []
        finally:
            browser.close()


@pytest.mark.chromium
def test_mermaids_own_parser_reads_every_picture(ordinary, busy):
    """Mermaid's parser (its one-file build, in Chromium) accepts each kind of picture, and refuses a
    broken one: the structural check above is not the only judge."""
    lab = analyze([NODEPORT_LAB])
    texts = [diagram_mermaid(picture(ordinary[1])), diagram_mermaid(picture(busy[1])),
             diagram_mermaid(picture(lab)), diagram_mermaid(picture(lab, ExchangeFilter.parse(status="503"))),
             diagram_mermaid(picture(ordinary[1], ExchangeFilter.parse(status="404")))]
    *found, broken = mermaid_parse([*texts, texts[0].replace("->>", "->>:", 1)])
    assert found == ["ok"] * len(texts)
    assert "Parse error" in broken


def test_a_capture_too_big_to_draw_whole_gets_an_overview(busy, ordinary):
    _, a = busy
    d = picture(a)
    assert d.section_name == "overview"
    assert d.caption.startswith("120 exchanges between 23 hosts: more than 100 exchanges or 16 hosts")
    assert len(d.participants) == 12 and "other hosts" in d.participants  # 11 busiest, the rest in one
    msgs = d.sections[0].messages
    counts = [int(re.search(r"×(\d+)", m.label).group(1)) for m in msgs]
    assert sum(counts) == 120  # every exchange counted once
    to_404 = [m for m in msgs if m.dst == "10.2.0.2"]
    assert to_404 and all(m.style == "error" and "errors 100.0 % (4xx" in m.label for m in to_404)
    assert all(m.style == "request" and "errors" not in m.label for m in msgs if m.dst == "10.2.0.1")
    assert any("(5xx" in m.label for m in msgs if m.dst == "10.2.0.3")
    svg = diagram_svg(d)
    assert arrows(svg)["error"] == len([m for m in msgs if m.style == "error"]) > 0
    assert "more than 100 exchanges" in diagram_text(d).splitlines()[0]
    found = mermaid_messages(diagram_mermaid(d))
    assert len(found) == len(msgs) and any(arrow == "-x" for _, arrow, _, _ in found)
    assert picture(a, max_exchanges=1000).section_name == "overview"  # 23 hosts: too many columns
    # the threshold is a setting: a small one turns the ordinary capture into an overview too
    small = picture(ordinary[1], max_exchanges=3)
    assert small.section_name == "overview" and "more than 3 exchanges" in small.caption
    assert {m.label for m in small.sections[0].messages} == {
        "HTTP/1 ×2, errors 50.0 % (5xx 1), p50 2.0 ms", "TLS ×1, p50 2.0 ms",
        "gRPC ×1, errors 100.0 % (UNAVAILABLE 1), p50 2.0 ms"}


def test_a_filter_brings_a_busy_capture_back_to_its_exchanges(busy):
    _, a = busy
    d = picture(a, ExchangeFilter.parse(host="10.1.0.1"))
    assert d.section_name == "connection" and len(d.sections) == 6
    assert d.caption.startswith("6 exchanges matching host 10.1.0.1 between 4 hosts")
    d = picture(a, ExchangeFilter.parse(status="5xx"))
    assert d.section_name == "connection" and all("503" in s.messages[-1].label for s in d.sections)


def _drawn(a, **kw) -> set[tuple[str, int]]:
    """(server, port) of every connection the filtered picture draws."""
    d = picture(a, ExchangeFilter.parse(**kw))
    return {(m.group(1), int(m.group(2))) for s in d.sections
            if (m := re.search(r"→ ([\d.]+):(\d+)", s.title))}


def test_filters_narrow_what_is_drawn(ordinary):
    _, a = ordinary
    web, tls, rpc = ("10.0.0.2", 80), ("10.0.0.3", 443), ("10.0.0.4", 50051)
    assert _drawn(a) == {web, tls, rpc}
    assert _drawn(a, host="10.0.0.1") == {web, tls, rpc}  # either end
    assert _drawn(a, host="10.0.0.3") == {tls}
    assert _drawn(a, host="10.0.0.2/31") == {web, tls}  # an address block
    assert _drawn(a, host="secure.example.com") == {tls}  # the SNI
    assert _drawn(a, host="shop") == {web}  # the Host header
    assert _drawn(a, port="40003") == {rpc} and _drawn(a, port=443) == {tls}
    assert _drawn(a, protocol="http") == {web}
    assert _drawn(a, protocol="h2") == _drawn(a, protocol="grpc") == {rpc}  # gRPC rides HTTP/2
    assert _drawn(a, protocol="tls") == {tls} and _drawn(a, protocol="dns") == set()
    assert _drawn(a, status="5xx") == {web} and _drawn(a, status="unavailable") == {rpc}
    assert _drawn(a, status="503,UNAVAILABLE") == {web, rpc}
    assert _drawn(a, request_id=RID[:8]) == {web} and _drawn(a, request_id=RID.upper()) == {web}
    d = picture(a, ExchangeFilter.parse(host="10.0.0.2", status="5xx"))
    assert [m.label for s in d.sections for m in s.messages if m.style != "handshake"][-1] == "503 X"
    assert [m.style for m in d.sections[0].messages] == ["handshake", "request", "response"]  # the 503 only
    empty = picture(a, ExchangeFilter.parse(status="404"))
    assert empty.sections == [] and empty.caption == "no exchange matching status 404"
    assert "no exchange matching status 404" in diagram_svg(empty)
    assert mermaid_messages(diagram_mermaid(empty)) == [] and "status 404" in diagram_mermaid(empty)


@pytest.mark.parametrize("bad, message", [
    (dict(protocol="smtp"), "protocol 'smtp' is none of"),
    (dict(port="http"), "port 'http' is not a number"),
    (dict(port=70000), "out of range"),
    (dict(status="6xx"), "status '6xx' is not like"),
    (dict(host="10.0.0.0/99"), "not an address block"),
])
def test_bad_filters_say_what_is_wrong(bad, message):
    with pytest.raises(FilterError, match=message):
        ExchangeFilter.parse(**bad)


def test_filters_keep_whole_flows_of_a_stitched_capture():
    a = analyze([NODEPORT_LAB])
    rid = next(f.request_id for f in a.flows if f.request_id)
    d = picture(a, ExchangeFilter.parse(request_id=rid))
    assert d.section_name == "flow" and len(d.sections) == 1 and d.caption.startswith("1 flow matching")
    assert any(m.style == "nat" for m in d.sections[0].messages)  # drawn whole: its NAT hop too
    assert len(picture(a, ExchangeFilter.parse(status="503")).sections) == 1
    assert picture(a).caption == ""  # all four flows drawn, nothing left out: as before
    assert "first 1 drawn" in picture(a, max_flows=1).caption


def test_cli_draws_filters_and_lists(ordinary, tmp_path, capsys):
    path, _ = ordinary
    out = tmp_path / "ordinary.svg"
    assert main(["pcap", "analyze", str(path), "--svg", str(out)]) == 0
    svg = out.read_text()
    assert arrows(svg)["request"] == 3 and "ClientHello SNI secure.example.com" in svg
    text = capsys.readouterr().out
    assert text.count("connection ") == 3 and "10.0.0.1 <- 10.0.0.4: 200 UNAVAILABLE" in text
    assert main(["pcap", "analyze", str(path), "--mermaid", "--protocol", "tls"]) == 0
    found = mermaid_messages(capsys.readouterr().out)
    assert [arrow for _, arrow, _, _ in found] == ["->>", "->>", "-->>"]  # handshake, hello, answer
    assert main(["pcap", "analyze", str(path), "--json", "--status", "5xx"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["filter"] == "status 5xx" and [e["status"] for e in doc["exchanges"]] == [503]
    assert main(["pcap", "analyze", str(path), "--host", "10.9.9.9"]) == 0
    assert capsys.readouterr().out.startswith("no exchange matching host 10.9.9.9\n")


def test_a_loopback_capture_keeps_its_services_apart(tmp_path):
    """On one address (tcpdump -i lo) each server port is a column of its own: arrows, not notes."""
    from tests.decoders.capture_builders import Conversation, http_request, http_response, write

    packets = []
    for n, port in enumerate((10000, 3000)):
        conv = Conversation(client="127.0.0.1", server="127.0.0.1", cport=50000 + n, sport=port,
                            cisn=1000 + 99991 * n, sisn=7000 + 77777 * n).handshake()
        conv.send(True, http_request("GET", f"/via/{port}"))
        conv.send(False, http_response(200))
        packets += conv.packets
    a = analyze([write(tmp_path / "lo.pcap", packets)])
    for d in (picture(a), picture(a, max_exchanges=1)):  # the sequence diagram and the overview alike
        assert d.participants == ["127.0.0.1", "127.0.0.1:10000", "127.0.0.1:3000"]
        assert all(m.src != m.dst for s in d.sections for m in s.messages)
    text = diagram_text(picture(a))
    assert "127.0.0.1 -> 127.0.0.1:3000: GET /via/3000" in text


def test_dns_lookups_are_drawn_counted_and_filtered(tmp_path):
    """A pod's lookups (a search-path NXDOMAIN, a slow retried answer, one never answered) with no request
    after them: drawn as queries and answers, counted as DNS in the overview, found by the filters."""
    r = Resolver(client="10.1.0.5", server="10.96.0.10")
    r.query(0.000, 1, "catalog.default.web.svc.cluster.local")
    r.answer(0.001, 1, "catalog.default.web.svc.cluster.local", 3)  # NXDOMAIN
    r.query(0.002, 2, "catalog.default.svc.cluster.local")
    r.answer(0.004, 2, "catalog.default.svc.cluster.local", 0, ("10.0.0.8",))
    r.query(1.000, 3, "api.web.svc.cluster.local")
    r.query(6.000, 3, "api.web.svc.cluster.local")
    r.answer(6.400, 3, "api.web.svc.cluster.local", 0, ("10.0.0.9",))
    r.query(7.000, 4, "lost.web.svc.cluster.local", cport=41001)
    from tests.decoders.capture_builders import write

    a = analyze([write(tmp_path / "dns.pcap", r.packets)])
    d = picture(a)
    assert d.participants == ["10.1.0.5", "10.96.0.10"]
    assert [s.title for s in d.sections] == ["UDP 10.1.0.5:41000 → 10.96.0.10:53  2 exchanges",
                                             "UDP 10.1.0.5:41001 → 10.96.0.10:53  1 exchange"]
    labels = [(m.style, m.label) for s in d.sections for m in s.messages]
    assert ("request", "DNS A catalog.default") in labels
    assert ("response", "NOERROR after 1 NXDOMAIN A 10.0.0.8") in labels
    assert ("request", "DNS A lost.web.svc.cluster.local") in labels and len(labels) == 5  # no answer
    svg = diagram_svg(d)
    assert arrows(svg)["request"] == 3 and arrows(svg)["response"] == 2
    assert len(mermaid_messages(diagram_mermaid(d))) == 5
    assert "10.1.0.5 <- 10.96.0.10: NOERROR A 10.0.0.9" in diagram_text(d)
    assert len(picture(a, ExchangeFilter.parse(protocol="dns")).sections) == 2
    assert _drawn(a, status="NXDOMAIN") == {("10.96.0.10", 53)}  # an attempt's answer counts
    assert len(picture(a, ExchangeFilter.parse(status="NXDOMAIN")).sections[0].messages) == 2
    assert len(picture(a, ExchangeFilter.parse(host="catalog.default.svc.cluster.local")).sections) == 1
    over = picture(a, max_exchanges=1)
    (row,) = over.sections[0].messages
    assert row.style == "error" and row.label.startswith("DNS ×3, errors 33.3 % (no answer 1)")


def test_cli_threshold_and_bad_filters(ordinary):
    import subprocess

    path, _ = ordinary
    run = [sys.executable, "-m", "meshscope.cli", "pcap", "analyze", str(path)]
    r = subprocess.run([*run, "--max-exchanges", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "more than 2 exchanges" in r.stdout and "\noverview 1: 4 hosts" in r.stdout
    for bad in (["--protocol", "smtp"], ["--status", "6xx"], ["--port", "x"], ["--max-exchanges", "-1"]):
        r = subprocess.run([*run, *bad], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "", bad
        assert r.stderr.startswith("meshscope: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_quic_initial_is_drawn_as_its_hello_over_udp(tmp_path):
    """RFC 9001 Appendix A's client and server Initials: one UDP section, the Initial's ClientHello named
    as QUIC with its version, SNI and ALPN; the quic filter finds it, the tls filter does not."""
    from tests.decoders.capture_builders import write
    from tests.decoders.quic_vectors import CLIENT_INITIAL, SERVER_INITIAL
    from tests.decoders.udp_builders import datagram

    packets = [datagram(0, "10.0.0.1", 50000, "10.0.0.2", 443, CLIENT_INITIAL),
               datagram(0.01, "10.0.0.2", 443, "10.0.0.1", 50000, SERVER_INITIAL)]
    a = analyze([write(tmp_path / "quic.pcap", packets)])
    d = picture(a)
    assert [s.title for s in d.sections] == ["UDP 10.0.0.1:50000 → 10.0.0.2:443  1 exchange"]
    hello = d.sections[0].messages[0]
    assert hello.style == "hello" and hello.label == "QUIC v1 ClientHello SNI example.com ALPN alpn"
    assert len(picture(a, ExchangeFilter.parse(protocol="quic")).sections) == 1
    assert picture(a, ExchangeFilter.parse(protocol="tls")).sections == []
    assert picture(a, max_exchanges=0).sections[0].messages[0].label.startswith("QUIC ×1")
