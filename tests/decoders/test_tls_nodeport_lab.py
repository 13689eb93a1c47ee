"""The TLS-terminating Envoy gateway behind the lab's NodePort DNAT hop (network namespaces, iptables,
real Envoy with ``key_log``, real curl with HTTP/1.1 and h2, real ``tcpdump -i any`` on the node):

- with the gateway's key log every hop of every request is linked exactly — NodePort DNAT (by ISN),
  the decrypted client request to the gateway's plaintext upstream request (by request id), the app's
  call to catalog — and the decrypted fields equal tshark's with the same key log;
- without it each request's gateway hop is *inferred* from what is visible (SNI = authority,
  x-forwarded-for …) with evidence and a confidence, and links the connection that really carried it;
- no key material appears in any output: text, JSON, Mermaid, SVG, logs."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time

import pytest
from meshscope.decoders.analysis import analyze
from meshscope.decoders.tls_keylog import KeyLog

from meshscope.model import normalize_request_id
from tests.conftest import need_binary, need_root
from tests.decoders.lab import CATALOG, CLIENT, GW, NODE, TERMINATE_NODEPORT, TERMINATE_SNI, WEBAPP, Lab
from tests.decoders.tls_lab import tshark_fields

pytestmark = [pytest.mark.root, pytest.mark.envoy, pytest.mark.tshark, pytest.mark.slow,
              pytest.mark.timeout(180)]
RID = "5e0b7c1a-3d2f-4a6b-8c9d-0000000000{:02d}"
PLAN = [("/products?n=0", "--http1.1"), ("/products?n=1", "--http1.1"), ("/products?n=2", "--http2")]


@pytest.fixture(scope="module")
def nodeport_tls(tmp_path_factory):
    """Three requests, each on its own TLS connection through NodePort 31443; client port → (path, id)."""
    need_root()
    for tool in ("ip", "iptables", "tcpdump", "openssl", "curl", "tshark"):
        need_binary(tool)
    d = tmp_path_factory.mktemp("tls-nodeport")
    sent: dict[int, tuple[str, str]] = {}
    with Lab(d) as lab:
        cap = lab.capture("node", "any", d / "node.pcap")
        for i, (path, proto) in enumerate(PLAN):
            rid = RID.format(i)
            sent[lab.curl_https(path, proto, "-H", f"x-request-id: {rid}")] = (path, rid)
            time.sleep(0.3)  # one connection after another: the timing evidence is then unambiguous
        Lab.stop_capture(cap)
    # Envoy writes its key log as it likes; it is complete once Envoy has stopped
    keys = lab.key_log
    assert keys.read_text().count("CLIENT_TRAFFIC_SECRET_0") == len(PLAN)
    return d, d / "node.pcap", keys, sent


def _flows_from(a, exchange_type):
    by_id = a.by_id()
    return by_id, [f for f in a.flows if f.exchange_ids and len(f.hops) > 1
                   and by_id[f.exchange_ids[0]].exchange_type == exchange_type]


def test_with_the_key_log_every_hop_is_linked_exactly(nodeport_tls):
    _d, pcap, keys, sent = nodeport_tls
    a = analyze([pcap], keylog=KeyLog.from_files([keys]))
    by_id, flows = _flows_from(a, "http")
    assert len(flows) == len(PLAN)
    for flow in flows:
        root = by_id[flow.exchange_ids[0]]
        path, rid = sent[root.conn.sport]
        assert (root.method, root.uri, root.status) == ("GET", path, 200)
        assert (root.tls_decryption, root.tls_version, root.sni) == ("decrypted", "TLS 1.3", TERMINATE_SNI)
        assert (root.protocol == "h2") == (path == "/products?n=2")  # h2 inside TLS, read by the h2 analyzer
        assert flow.request_id == rid
        assert [h.kind for h in flow.hops] == ["nat-dnat", "l7-proxy", "app-call"]
        nat, proxy, app = flow.hops
        assert nat.nodeport == TERMINATE_NODEPORT and nat.sni == TERMINATE_SNI
        assert nat.src == f"{CLIENT}:{root.conn.sport}" and nat.dst == f"{GW}:9443"
        assert nat.evidence["dnat"] and nat.evidence["match"] == "isn"
        assert nat.evidence["pre"] == f"{CLIENT}:{root.conn.sport} → {NODE}:{TERMINATE_NODEPORT}"
        assert "inferred" not in proxy.evidence
        assert {"x-request-id", "x-forwarded-for"} <= set(proxy.evidence["matched_by"])
        assert proxy.evidence["x_forwarded_for"] == CLIENT
        assert proxy.src.startswith(f"{GW}:") and proxy.dst == f"{WEBAPP}:8080"
        assert proxy.src_name == "istio-system/istio-ingressgateway" and proxy.dst_name == "default/webapp"
        assert proxy.request_ids[0] == rid and all(normalize_request_id(r) == rid for r in proxy.request_ids)
        upstream = by_id[proxy.exchange_ids[-1]]
        assert (upstream.uri, upstream.tls_decryption) == (path, None)  # the plaintext leg
        assert app.src.startswith(f"{WEBAPP}:") and app.dst == f"{CATALOG}:3000"
    # every TLS connection (seen before and after the DNAT) was decrypted
    tls = [e for e in a.exchanges if e.exchange_type == "tls"]
    assert len(tls) == 2 * len(PLAN) and {e.tls_decryption for e in tls} == {"decrypted"}


def test_decrypted_fields_equal_tsharks(nodeport_tls):
    _d, pcap, keys, sent = nodeport_tls
    a = analyze([pcap], keylog=KeyLog.from_files([keys]))
    for port in (TERMINATE_NODEPORT, 9443):  # before and after the NAT hop
        ours = [e for e in a.exchanges if e.exchange_type == "http" and e.conn.dport == port]
        h1 = {(str(e.conn.sport), e.method, e.uri, e.host) for e in ours if e.protocol != "h2"}
        theirs = tshark_fields(pcap, keys, f"http.request and tcp.dstport == {port}",
                               ["tcp.srcport", "http.request.method", "http.request.uri", "http.host"])
        assert h1 == {tuple(r) for r in theirs} and len(h1) == 2
        h2 = {(str(e.conn.sport), e.method, e.uri, e.host) for e in ours if e.protocol == "h2"}
        theirs = tshark_fields(pcap, keys, f"http2.headers.method and tcp.dstport == {port}",
                               ["tcp.srcport", "http2.headers.method", "http2.headers.path",
                                "http2.headers.authority"])
        assert h2 == {tuple(r) for r in theirs} and len(h2) == 1
        assert {int(p) for p, *_ in h1 | h2} == set(sent)


def test_without_keys_the_gateway_hop_is_inferred(nodeport_tls):
    _d, pcap, _keys, sent = nodeport_tls
    a = analyze([pcap])
    by_id, flows = _flows_from(a, "tls")
    assert len(flows) == len(PLAN)
    assert not [e for e in a.exchanges if e.exchange_type == "http" and e.tls_decryption]
    for flow in flows:
        root = by_id[flow.exchange_ids[0]]
        path, rid = sent[root.conn.sport]
        assert root.tls_decryption is None and root.sni == TERMINATE_SNI
        assert [h.kind for h in flow.hops] == ["nat-dnat", "l7-proxy", "app-call"]
        nat, proxy, app = flow.hops
        assert nat.nodeport == TERMINATE_NODEPORT and nat.evidence["match"] == "isn"  # NAT: still exact
        ev = proxy.evidence
        assert ev["inferred"] is True and not ev.get("ambiguous") and 0.45 <= ev["confidence"] <= 1
        assert {"sni = authority", "x-forwarded-for ends with the client",
                "x-forwarded-proto: https"} <= set(ev["evidence"])
        assert proxy.dst == f"{WEBAPP}:8080"
        assert by_id[proxy.exchange_ids[-1]].uri == path  # the request this connection really carried
        assert normalize_request_id(by_id[proxy.exchange_ids[-1]].headers["x-request-id"]) == rid
        assert app.dst == f"{CATALOG}:3000"


def test_no_key_material_in_any_output(nodeport_tls, tmp_path, caplog):
    _d, pcap, keys, _sent = nodeport_tls
    secrets = [line.split()[2] for line in keys.read_text().splitlines() if line.strip()]
    assert len(secrets) >= 4 * len(PLAN)
    outs = []
    svg = tmp_path / "flows.svg"
    for extra in ([], ["--json"], ["--mermaid"], ["--svg", str(svg)]):
        r = subprocess.run([sys.executable, "-m", "meshscope.cli", "pcap", "analyze", str(pcap),
                            "--keylog", str(keys), *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout + r.stderr)
    outs.append(svg.read_text())
    doc = json.loads(outs[1][:outs[1].rindex("}") + 1])
    assert sum(e.get("tls_decryption") == "decrypted" for e in doc["exchanges"]) >= 2 * len(PLAN)
    assert "GET /products?n=2" in outs[0] and "<svg" in outs[-1]  # they did draw the decrypted requests
    with caplog.at_level(logging.DEBUG):
        analyze([pcap], keylog=KeyLog.from_files([keys]))
    outs.append(caplog.text)
    outs += [p.read_text() for p in pcap.parent.glob("*.log")]  # Envoy's and the apps' own logs
    for text in outs:
        for s in secrets:
            assert s not in text and s[:16] not in text and s[-16:] not in text


def test_graphs_mark_the_inferred_gateway_hops(nodeport_tls):
    """SVG, Mermaid and text of the capture without keys: each gateway hop says "inferred (confidence)";
    with the key log, none does."""
    from meshscope.decoders.flow_text import render_text
    from meshscope.decoders.graph_mermaid import diagram_mermaid
    from meshscope.decoders.graph_svg import diagram_svg
    from meshscope.decoders.graph_text import diagram_text
    from meshscope.decoders.sequence import flow_diagram

    _d, pcap, keys, _sent = nodeport_tls
    for keylog, inferred in ((None, len(PLAN)), (KeyLog.from_files([keys]), 0)):
        a = analyze([pcap], keylog=keylog)
        diagram = flow_diagram(a.flows, a.by_id())
        for drawn in (diagram_svg(diagram), diagram_mermaid(diagram), diagram_text(diagram)):
            assert len(re.findall(r"l7-proxy inferred \(\d\.\d\d\)", drawn)) == inferred
        assert render_text(a.flows, a.by_id()).count("inferred (confidence ") == inferred
