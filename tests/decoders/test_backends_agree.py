"""dpkt, scapy and pyshark (tshark) give the same Exchanges and reports on the same captures."""

from __future__ import annotations

import pytest
from meshscope.decoders.read import read_exchanges

from tests.conftest import need_binary
from tests.decoders.canonical import canonical
from tests.decoders.capture_builders import (
    LINKS,
    Conversation,
    corner_cases,
    frame,
    http_request,
    http_response,
    write,
    write_frames,
)

CASES = ["keepalive", "pipelined", "retrans", "lost", "midstream", "tls_split", "ipv6_rst", "multi_iface",
         "snaplen", "v6_null", "v6_sll2", "padded_keepalive"] + [f"link_{link}" for link in LINKS]
ETHERNET_MIN = 60  # a frame's bytes before the FCS: shorter ones are padded on the wire (and captured so)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    cases = corner_cases(d)
    for link in LINKS:
        c = Conversation(cport=41000).handshake()
        c.send(True, http_request("GET", f"/{link}", x_request_id=f"link-{link}"))
        c.send(False, http_response(200, b"linked"))
        cases[f"link_{link}"] = write(d / f"link_{link}.pcap", c.close().packets, link)
    for link in ("null", "sll2"):
        c = Conversation(client="fd00::7", server="fd00::8", cport=41001).handshake()
        c.send(True, http_request("GET", "/v6", x_request_id="v6"))
        c.send(False, http_response(200, b"six"))
        cases[f"v6_{link}"] = write(d / f"v6_{link}.pcap", c.close().packets, link)
    cases["padded_keepalive"] = padded_keepalive(d / "padded_keepalive.pcap")
    return cases


def padded_keepalive(path):
    """A keep-alive connection as an Ethernet NIC captures it: the pure ACKs, the SYNs, the FINs and
    a 2-byte segment padded to 60 bytes (scapy dissects the padding as a Padding layer under TCP)."""
    c = Conversation(cport=41002).handshake()
    for i in range(3):
        c.send(True, http_request("GET", f"/padded/{i}", x_request_id=f"pad-{i}"))
        c.send(False, http_response(200, b"ok"))
    c.send(True, http_request("POST", "/tiny", content_length="2"))
    c.send(True, b"hi")  # 54 + 2 bytes: padded too
    c.send(False, http_response(201, b""))
    frames = []
    for p in c.close().packets:
        raw = bytes(frame(p, "ether"))
        raw += b"\0" * (ETHERNET_MIN - len(raw))
        frames.append((float(p.time), raw, len(raw)))
    assert sum(len(f[1]) == ETHERNET_MIN for f in frames) >= 10
    return write_frames(path, frames)


def _report(r) -> tuple:
    return r.packets, r.connections, r.exchanges, r.truncated, r.damage, r.damage_count, r.cut_by_snaplen


def decode(path, backend):
    stream, report = read_exchanges(path, backend)
    return [canonical(e) for e in stream], report


@pytest.mark.parametrize("case", CASES)
def test_scapy_agrees_with_dpkt(corpus, case):
    ours, rep = decode(corpus[case], "dpkt")
    theirs, rep2 = decode(corpus[case], "scapy")
    assert ours, "every corpus capture holds at least one exchange"
    assert theirs == ours
    assert _report(rep2) == _report(rep)


@pytest.mark.tshark
@pytest.mark.parametrize("case", CASES)
def test_pyshark_agrees_with_dpkt(corpus, case):
    need_binary("tshark")
    ours, rep = decode(corpus[case], "dpkt")
    theirs, rep2 = decode(corpus[case], "pyshark")
    assert theirs == ours
    assert _report(rep2) == _report(rep)


def test_scapy_agrees_even_with_its_tls_and_http_layers_loaded(corpus):
    """Loading scapy's TLS/HTTP layers (any test or user may) changes how it dissects payloads."""
    from scapy.layers.http import HTTP  # noqa: F401
    from scapy.layers.tls.all import TLS  # noqa: F401

    for case in CASES:
        assert decode(corpus[case], "scapy")[0] == decode(corpus[case], "dpkt")[0], case
