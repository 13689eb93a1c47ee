"""TLS hellos: SNI (also across many segments), ALPN, offered and chosen versions."""

from __future__ import annotations

import ssl

from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.read import read_exchanges
from meshscope.decoders.tls_hello import HelloAssembler, parse_client_hello, parse_server_hello

from tests.decoders.capture_builders import Conversation, corner_cases, tls_hellos, write


def test_client_hello_split_over_many_segments(tmp_path):
    exs = list(read_exchanges(corner_cases(tmp_path)["tls_split"])[0])
    assert len(exs) == 1
    ex = exs[0]
    assert ex.exchange_type == "tls" and ex.sni == "shop.example.com"
    assert ex.alpn == ["h2", "http/1.1"]
    assert "TLS 1.3" in ex.tls_offered_versions and ex.tls_version == "TLS 1.3"
    assert ex.request_time < ex.response_time and not ex.damage
    assert ex.conn.client_isn == 2**32 - 300  # sequence numbers wrapped inside the hello


def test_tls12_server_chooses_tls12(tmp_path):
    hello, flight = tls_hellos("old.example.com", alpn=("http/1.1",), server_max=ssl.TLSVersion.TLSv1_2)
    c = Conversation(sport=8443).handshake()
    c.send(True, hello)
    c.send(False, flight)
    exs = list(read_exchanges(write(tmp_path / "tls12.pcap", c.close().packets))[0])
    assert [(e.sni, e.alpn, e.tls_version) for e in exs] == [("old.example.com", ["http/1.1"], "TLS 1.2")]
    assert parse_client_hello(_body(hello)).versions[0] == "TLS 1.3"  # offered, not chosen


def _body(record_bytes: bytes) -> bytes:
    a = HelloAssembler()
    mtype, body = a.feed(record_bytes)
    assert mtype == 1
    return body


def test_hello_split_across_two_records(tmp_path):
    hello, flight = tls_hellos("split.example.com")
    body = hello[5:]
    half = len(body) // 2
    two = b"\x16\x03\x01" + half.to_bytes(2, "big") + body[:half] + \
        b"\x16\x03\x01" + (len(body) - half).to_bytes(2, "big") + body[half:]
    c = Conversation(sport=443).handshake()
    c.send(True, two, mss=100)
    c.send(False, flight)
    exs = list(read_exchanges(write(tmp_path / "two.pcap", c.close().packets))[0])
    assert [e.sni for e in exs] == ["split.example.com"]


def test_server_hello_without_client_hello_is_damage(tmp_path):
    _, flight = tls_hellos()
    c = Conversation(sport=443).handshake()
    c.send(False, flight)
    exs = list(read_exchanges(write(tmp_path / "sh.pcap", c.close().packets))[0])
    assert len(exs) == 1 and exs[0].tls_version == "TLS 1.3" and exs[0].sni is None
    assert "ClientHello not captured" in exs[0].damage


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_hello_parsers_raise_only_value_error(data):
    for parse in (parse_client_hello, parse_server_hello):
        try:
            parse(data)
        except ValueError:
            pass
    a = HelloAssembler()
    a.feed(b"\x16\x03\x01" + data)
    a.feed(data)
