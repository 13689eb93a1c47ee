"""A real Envoy gateway terminating TLS (key_log on) in front of a plaintext upstream, captured with real
tcpdump on loopback, analysed by `meshscope pcap analyze`:

- with the key log (``--keylog`` or a pcapng Decryption Secrets Block) each client request is read
  decrypted, its fields equal tshark's with the same key log, and it is linked to the gateway's
  upstream request by request id like any plaintext hop;
- without it, each TLS connection stays one TLS exchange ("no key" when a key log lacks it) and is
  linked to the upstream request it caused only as an *inferred* hop, with evidence and confidence;
  two connections at once from one client are shown as ambiguous;
- no key material appears in any output."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from meshscope.decoders.analysis import analyze
from meshscope.decoders.tls_keylog import KeyLog
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.launcher import EnvoyProcess
from meshscope.proxy.routes import Endpoint

from tests.conftest import need_binary, need_root
from tests.decoders.tls_lab import curl, tcpdump_lo, tshark_fields
from tests.proxy.conftest import example, silent_collector

pytestmark = [pytest.mark.root, pytest.mark.envoy, pytest.mark.tshark, pytest.mark.slow]
CLIENT, UPSTREAM = "127.0.0.2", "127.0.0.4"
RID = "7d0c5a1e-9b3f-4c2a-8e1d-00000000000{}"


@pytest.fixture(scope="module")
def gateway_capture(tmp_path_factory):
    need_root()
    for tool in ("tcpdump", "curl", "tshark", "editcap"):
        need_binary(tool)
    from meshscope.proxy.demo_upstream import DemoUpstream

    from tests.conftest import free_port

    d = tmp_path_factory.mktemp("gw")
    data = d / "data"
    # three loopback addresses play three hosts: client 127.0.0.2 → gateway 127.0.0.1 → upstream
    # 127.0.0.4 (the gateway's upstream connections leave from 127.0.0.1, where its clients arrive)
    with DemoUpstream(host=UPSTREAM, port=free_port()) as up:
        routes = example("sni-gateway", data, up.port)
        for c in routes.clusters:
            c.endpoints = [Endpoint(UPSTREAM, up.port)]
        port = routes.listeners[0].port
        keys = routes.listeners[0].tls[0].key_log.path
        pcap = d / "gw.pcap"
        with EnvoyProcess(build_bootstrap(routes, collector=silent_collector(), admin_port=0)):
            with tcpdump_lo(pcap, [port, up.port]):
                for i in range(3):  # one after another: each connection's request follows its handshake
                    curl(f"https://shop.example.com:{port}/headers?n={i}", d / "curl.keys", "--http1.1",
                         "--interface", CLIENT, "-H", f"x-request-id: {RID.format(i)}", port=port)
                    time.sleep(0.5)
                curl(f"https://shop.example.com:{port}/headers?n=h2", d / "curl.keys", "--http2",
                     "--interface", CLIENT, "-H", f"x-request-id: {RID.format(9)}", port=port)
                time.sleep(0.5)
                both = [subprocess.Popen(  # two at once from the same client: not to be told apart
                    ["curl", "-sk", "-o", "/dev/null", "--http1.1", "--interface", CLIENT, "--resolve",
                     f"shop.example.com:{port}:127.0.0.1", f"https://shop.example.com:{port}/headers?n=both{j}"])
                    for j in range(2)]
                for p in both:
                    p.wait(20)
    return d, pcap, keys, port, up.port


def _http(a, port):
    return sorted((e for e in a.exchanges if e.exchange_type == "http" and e.conn.dport == port),
                  key=lambda e: e.request_time)


def test_with_key_log_requests_are_decrypted_and_linked_by_request_id(gateway_capture):
    _d, pcap, keys, port, up_port = gateway_capture
    a = analyze([pcap], keylog=KeyLog.from_files([keys]))
    client_side = _http(a, port)
    assert len(client_side) == 6
    [h2] = [e for e in client_side if e.protocol == "h2"]  # h2 inside TLS: the HTTP/2 analyzer read it
    assert (h2.method, h2.uri, h2.host, h2.status) == \
        ("GET", "/headers?n=h2", f"shop.example.com:{port}", 200)
    for ex in client_side:
        assert (ex.tls_decryption, ex.tls_version, ex.sni) == ("decrypted", "TLS 1.3", "shop.example.com")
        assert ex.tls_cipher_suite.startswith("TLS_") and ex.status == 200 and ex.method == "GET"
    theirs = tshark_fields(pcap, keys, f"http.request and tcp.dstport == {port}",
                           ["tcp.srcport", "http.request.method", "http.request.uri", "http.host",
                            "http.request.line"])
    ours = {(str(e.conn.sport), e.method, e.uri, e.host) for e in client_side if e.protocol != "h2"}
    assert ours == {tuple(row[:4]) for row in theirs}
    [row] = tshark_fields(pcap, keys, f"http2.headers.method and tcp.dstport == {port}",
                          ["tcp.srcport", "http2.headers.method", "http2.headers.path",
                           "http2.headers.authority"])
    assert tuple(row) == (str(h2.conn.sport), h2.method, h2.uri, h2.host)
    by_id = a.by_id()
    for i in (0, 1, 2, "h2"):
        [flow] = [f for f in a.flows if f.exchange_ids and by_id[f.exchange_ids[0]].uri == f"/headers?n={i}"
                  and by_id[f.exchange_ids[0]].conn.dport == port]
        [hop] = flow.hops
        assert hop.kind == "l7-proxy" and "inferred" not in hop.evidence
        assert hop.dst.endswith(f":{up_port}")
        assert flow.request_id[:14] == RID.format(9 if i == "h2" else i)[:14]
    tls = [e for e in a.exchanges if e.exchange_type == "tls"]
    assert len(tls) == 6 and all(e.tls_decryption == "decrypted" for e in tls)


def test_pcapng_secrets_block_decrypts_without_keylog_option(gateway_capture):
    d, pcap, keys, port, _up = gateway_capture
    ng = d / "gw-with-keys.pcapng"
    subprocess.run(["editcap", "--inject-secrets", f"tls,{keys}", str(pcap), str(ng)], check=True, timeout=60)
    a = analyze([ng])
    assert [e.tls_decryption for e in _http(a, port)] == ["decrypted"] * 6


def test_without_keys_hops_are_inferred_and_ambiguity_is_shown(gateway_capture):
    _d, pcap, _keys, port, up_port = gateway_capture
    a = analyze([pcap])
    by_id = a.by_id()
    tls_roots = [f for f in a.flows if f.exchange_ids and by_id[f.exchange_ids[0]].exchange_type == "tls"]
    sure: dict[str, int] = {}  # upstream uri → client port of the TLS connection it was linked to
    ambiguous: dict[str, set[int]] = {}
    for f in tls_roots:
        client = by_id[f.exchange_ids[0]].conn.sport
        for hop in f.hops:
            assert hop.kind == "l7-proxy" and hop.evidence["inferred"] is True
            assert hop.dst.endswith(f":{up_port}")
            assert "sni = authority" in hop.evidence["evidence"] and 0 < hop.evidence["confidence"] <= 1
            uri = by_id[hop.exchange_ids[-1]].uri
            if hop.evidence.get("ambiguous"):
                assert len(hop.evidence["candidates"]) == 2
                ambiguous.setdefault(uri, set()).add(client)
            else:
                assert uri not in sure
                sure[uri] = client
    assert {"/headers?n=0", "/headers?n=1", "/headers?n=2", "/headers?n=h2"} <= set(sure)
    for uri, client in sure.items():  # every sure link is the connection that really carried it
        assert _client_ports_for(pcap, port, uri) == {client}
    # the two concurrent connections: a request that followed both handshakes names both, picks none
    assert ambiguous and set(ambiguous) <= {"/headers?n=both0", "/headers?n=both1"}
    for uri, clients in ambiguous.items():
        assert len(clients) == 2 and _client_ports_for(pcap, port, uri) <= clients and uri not in sure


def _client_ports_for(pcap, port, uri):
    """Which client connection carried a request, from tshark with the key log (ground truth)."""
    keys = next(pcap.parent.glob("data/keys/*.keys"))
    rows = tshark_fields(pcap, keys, f'(http.request.uri == "{uri}" or http2.headers.path == "{uri}") '
                         f'and tcp.dstport == {port}',
                         ["tcp.srcport"])
    return {int(r[0]) for r in rows}


def test_a_key_log_without_this_session_says_no_key(gateway_capture, tmp_path):
    _d, pcap, _keys, port, _up = gateway_capture
    other = tmp_path / "other.keys"
    other.write_text(f"CLIENT_RANDOM {'42' * 32} {'00' * 48}\n")
    a = analyze([pcap], keylog=KeyLog.from_files([other]))
    tls = [e for e in a.exchanges if e.exchange_type == "tls"]
    assert len(tls) == 6 and {e.tls_decryption for e in tls} == {"no key"}
    assert not _http(a, port)


def test_cli_keylog_and_no_secret_in_any_output(gateway_capture, tmp_path):
    _d, pcap, keys, port, _up = gateway_capture
    secrets = [line.split()[2] for line in keys.read_text().splitlines() if line.strip()]
    bad = tmp_path / "mixed.keys"
    bad.write_text(keys.read_text() + "this line is garbage\n")
    outs = []
    for extra in ([], ["--json"], ["--mermaid"]):
        r = subprocess.run([sys.executable, "-m", "meshscope.cli", "pcap", "analyze", str(pcap),
                            "--keylog", str(bad), *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout + r.stderr)
    assert "mixed.keys:" in outs[0] and "got 4 fields" in outs[0]  # reported by line number
    assert "garbage" not in outs[0]  # never by content
    doc = json.loads(_json_part(outs[1]))
    assert any(e.get("tls_decryption") == "decrypted" for e in doc["exchanges"])
    for text in outs:
        for s in secrets:
            assert s not in text and s[:16] not in text


def _json_part(text: str) -> str:
    """The JSON document of `--json` output (stderr lines follow it)."""
    return text[:text.rindex("}") + 1]
