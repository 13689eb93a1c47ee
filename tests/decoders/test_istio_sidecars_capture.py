"""Two Envoy 1.40 sidecars configured as istiod configures them (tests/proxy/istio_sidecar.py): webapp's
outbound cluster speaks mesh mTLS to catalog's inbound listener with Istio's SNI and ALPN, SPIFFE
certificates from a test CA (tests/proxy/spiffe_ca.py) as SDS secrets, a DestinationRule-style one
request per connection (so later connections are resumptions); catalog's sidecar hands each request
to its app from 127.0.0.6. Both sidecars get their key logs from the EnvoyFilter of deploy/istio,
its patches merged as istiod merges them (tests/deploy/envoyfilter.py). Real curl and tcpdump: first
with the pods sharing the host's loopback (127.0.0.2 is webapp's pod, 127.0.0.3 catalog's), then as
pods in network namespaces (tests/decoders/mesh_lab.py: iptables REDIRECT to 15006, captures on the
node and on each pod's loopback and eth0, joined into one flow per request).

Asserted for every request: with either sidecar's key log the mTLS leg is read decrypted (fields equal
tshark's with the same key log) and every hop is linked by request id — app → webapp's sidecar →
(mTLS) → catalog's sidecar → app; the legs carry Istio's SNI, ALPN and, on the full handshake, both
SPIFFE identities, and the graphs draw them; without keys each mTLS leg stays a TLS exchange and its
hop to catalog's app is inferred; no key material in any output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from meshscope.decoders.analysis import analyze
from meshscope.decoders.flow_text import render_text
from meshscope.decoders.graph_mermaid import diagram_mermaid
from meshscope.decoders.graph_svg import diagram_svg
from meshscope.decoders.graph_text import diagram_text
from meshscope.decoders.sequence import flow_diagram
from meshscope.decoders.tls_keylog import KeyLog

from meshscope.model import normalize_request_id
from tests.conftest import free_port, need_binary, need_root
from tests.decoders.tls_lab import tcpdump_lo, tshark_fields
from tests.deploy.envoyfilter import apply_envoy_filter, selects
from tests.proxy.istio_sidecar import Outbound, Pod, sidecar_bootstrap
from tests.proxy.spiffe_ca import TestCa

pytestmark = [pytest.mark.root, pytest.mark.envoy, pytest.mark.tshark, pytest.mark.slow,
              pytest.mark.timeout(180)]
ENVOY_FILTER = Path(__file__).resolve().parents[2] / "deploy" / "istio" / "envoyfilter-tls-key-log.yaml"
DEBUG = {"meshscope.io/tls-key-log": "true"}
WEBAPP = Pod("webapp-1", "shop", "127.0.0.2", "webapp", {"app": "webapp", **DEBUG})
CATALOG = Pod("catalog-1", "shop", "127.0.0.3", "catalog", {"app": "catalog", **DEBUG})
SERVICE = "catalog.shop.svc.cluster.local"
SNI = f"outbound_.8080_._.{SERVICE}"
RID = "6a7b8c9d-0e1f-4a2b-9c3d-00000000000{}"
REQUESTS = 3


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    need_root()
    for tool in ("tcpdump", "curl", "tshark"):
        need_binary(tool)
    from meshscope.proxy.demo_upstream import DemoUpstream
    from meshscope.proxy.launcher import EnvoyProcess, validate

    d = tmp_path_factory.mktemp("sidecars")
    ca = TestCa(d / "ca")
    envoy_filter = yaml.safe_load(ENVOY_FILTER.read_text())
    inbound_port, app_port, outbound_port = free_port(), free_port(), free_port()
    configs = []
    to_catalog = Outbound(SERVICE, 8080, (CATALOG.ip, inbound_port), CATALOG.spiffe,
                          max_requests_per_connection=1)  # as a DestinationRule's connectionPool can ask
    for pod, role in ((WEBAPP, {"outbound": to_catalog, "outbound_port": outbound_port}),
                      (CATALOG, {"inbound": (inbound_port, app_port)})):
        cert, key, _ = ca.issue(pod.name, pod.spiffe)
        config = sidecar_bootstrap(pod, cert, key, ca.ca_file, **role)
        assert selects(envoy_filter, pod.namespace, pod.labels)
        # the pod's /etc/istio/proxy (the sidecar's emptyDir) is a folder of the test here
        (d / pod.name).mkdir()
        patch = json.loads(json.dumps(envoy_filter).replace("/etc/istio/proxy/", f"{d / pod.name}/"))
        patched = apply_envoy_filter(config, patch)
        assert patched != config  # the patch found what it is meant for
        validate(patched)
        configs.append(patched)
    keys = {"outbound": d / WEBAPP.name / "outbound.keys", "inbound": d / CATALOG.name / "inbound.keys"}
    pcap = d / "sidecars.pcap"
    with DemoUpstream(host=CATALOG.ip, port=app_port), EnvoyProcess(configs[0], workdir=d / "webapp-envoy"), \
            EnvoyProcess(configs[1], workdir=d / "catalog-envoy"), \
            tcpdump_lo(pcap, [outbound_port, inbound_port, app_port]):
        for i in range(REQUESTS):  # webapp's app calls catalog through its sidecar
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "--max-time", "10", "--interface", WEBAPP.ip,
                            "-H", "host: catalog.shop:8080", "-H", f"x-request-id: {RID.format(i)}",
                            f"http://{WEBAPP.ip}:{outbound_port}/headers?n={i}"], check=True, timeout=20)
            time.sleep(0.3)
    return d, pcap, keys, {"inbound": inbound_port, "app": app_port, "outbound": outbound_port}


def test_the_envoy_filter_patches_what_istio_generates(mesh):
    """Merged as istiod merges it: into the inbound mTLS chain's DownstreamTlsContext and into the
    outbound cluster's ``tlsMode-istio`` transport socket match, the rest of each context kept."""
    d, _pcap, _keys, _ports = mesh
    webapp = json.loads((d / "webapp-envoy" / "envoy.json").read_text())["static_resources"]
    catalog = json.loads((d / "catalog-envoy" / "envoy.json").read_text())["static_resources"]
    [cluster] = [c for c in webapp["clusters"] if c["name"] == f"outbound|8080||{SERVICE}"]
    istio, disabled = cluster["transport_socket_matches"]
    tls = istio["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["key_log"] == {"path": str(d / WEBAPP.name / "outbound.keys")}
    assert tls["sni"] == SNI
    assert tls["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert "key_log" not in json.dumps(disabled) and "transport_socket" not in cluster
    [inbound] = [lst for lst in catalog["listeners"] if lst["name"] == "virtualInbound"]
    [chain] = inbound["filter_chains"]
    server = chain["transport_socket"]["typed_config"]
    assert server["common_tls_context"]["key_log"] == {"path": str(d / CATALOG.name / "inbound.keys")}
    assert server["require_client_certificate"] is True
    assert server["common_tls_context"]["tls_certificate_sds_secret_configs"] == [{"name": "default"}]


def test_both_sidecars_write_the_same_secrets(mesh):
    _d, _pcap, keys, _ports = mesh
    lines = {name: set(path.read_text().splitlines()) for name, path in keys.items()}
    assert lines["inbound"] == lines["outbound"]  # both ends of each connection log its secrets
    assert sum(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines["inbound"]) == REQUESTS


def _mtls(a, ports, kind):
    return sorted((e for e in a.exchanges if e.exchange_type == kind and e.conn.dport == ports["inbound"]),
                  key=lambda e: e.request_time or 0.0)


@pytest.mark.parametrize("which", ["inbound", "outbound"])
def test_with_either_key_log_every_hop_is_linked(mesh, which):
    _d, pcap, keys, ports = mesh
    a = analyze([pcap], keylog=KeyLog.from_files([keys[which]]))
    tls = _mtls(a, ports, "tls")
    assert len(tls) == REQUESTS  # one request per connection
    for i, ex in enumerate(tls):
        assert (ex.tls_decryption, ex.tls_version, ex.sni) == ("decrypted", "TLS 1.3", SNI)
        assert ex.alpn == ["istio-peer-exchange", "istio"]
        assert (ex.conn.src, ex.conn.dst) == (WEBAPP.ip, CATALOG.ip)
        if i == 0:  # the full handshake shows both certificates (decrypted: TLS 1.3 sends them encrypted)
            assert (ex.tls_client_identity, ex.tls_server_identity) == (WEBAPP.spiffe, CATALOG.spiffe)
        else:  # later connections resume the session: no certificate on the wire
            assert ex.tls_client_identity is None and ex.tls_server_identity is None
    inside = _mtls(a, ports, "http")
    assert [(e.method, e.uri, e.host, e.status) for e in inside] == \
        [("GET", f"/headers?n={i}", "catalog.shop:8080", 200) for i in range(REQUESTS)]
    assert [normalize_request_id(e.request_id) for e in inside] == [RID.format(i) for i in range(REQUESTS)]
    theirs = tshark_fields(pcap, keys[which], f"http.request and tcp.dstport == {ports['inbound']}",
                           ["tcp.srcport", "http.request.method", "http.request.uri", "http.host"])
    ours = sorted((str(e.conn.sport), e.method, e.uri, e.host) for e in inside)
    assert sorted(tuple(r) for r in theirs) == ours
    by_id = a.by_id()
    flows = sorted((f for f in a.flows if f.hops), key=lambda f: f.start)
    assert len(flows) == REQUESTS
    for i, flow in enumerate(flows):
        root = by_id[flow.exchange_ids[0]]
        assert (root.conn.dst, root.conn.dport, root.uri) == (WEBAPP.ip, ports["outbound"], f"/headers?n={i}")
        assert flow.request_id == RID.format(i)
        assert [h.kind for h in flow.hops] == ["l7-proxy", "l7-proxy"]
        outbound, inbound = flow.hops  # webapp's sidecar, then catalog's
        for hop in flow.hops:
            assert "inferred" not in hop.evidence and "x-request-id" in hop.evidence["matched_by"]
        assert outbound.src.startswith(f"{WEBAPP.ip}:") and outbound.dst == f"{CATALOG.ip}:{ports['inbound']}"
        assert by_id[outbound.exchange_ids[-1]].tls_decryption == "decrypted"
        assert inbound.src.startswith("127.0.0.6:") and inbound.dst == f"{CATALOG.ip}:{ports['app']}"


def test_the_graphs_label_the_mesh_legs(mesh):
    _d, pcap, keys, _ports = mesh
    a = analyze([pcap], keylog=KeyLog.from_files([keys["inbound"]]))
    diagram = flow_diagram(a.flows, a.by_id())
    svg, mermaid, text = diagram_svg(diagram), diagram_mermaid(diagram), diagram_text(diagram)
    for drawn in (svg, mermaid, text):
        assert drawn.count("ClientHello → catalog.shop:8080 mesh mTLS") == REQUESTS
        # the identities: once, from the full handshake (the resumed ones show no certificate)
        assert drawn.count("SPIFFE ns shop, sa webapp") == 1
        assert drawn.count("SPIFFE ns shop, sa catalog") == 1
    assert "inferred" not in text


def test_without_keys_the_mesh_legs_stay_tls_and_the_inbound_hop_is_inferred(mesh):
    _d, pcap, _keys, ports = mesh
    a = analyze([pcap])
    assert not _mtls(a, ports, "http")
    tls = _mtls(a, ports, "tls")
    assert len(tls) == REQUESTS and all(e.sni == SNI and e.tls_decryption is None for e in tls)
    by_id = a.by_id()
    flows = sorted((f for f in a.flows if f.hops and by_id[f.exchange_ids[0]].exchange_type == "tls"),
                   key=lambda f: f.start)
    assert len(flows) == REQUESTS
    for i, flow in enumerate(flows):
        [hop] = flow.hops
        ev = hop.evidence
        assert ev["inferred"] is True and not ev.get("ambiguous") and 0.45 <= ev["confidence"] <= 1
        assert {"istio sni names the authority's service",
                "sidecar inbound: 127.0.0.6 to where the mTLS leg arrived"} <= set(ev["evidence"])
        assert by_id[hop.exchange_ids[-1]].uri == f"/headers?n={i}"  # the request its connection carried
    text = diagram_text(flow_diagram(a.flows, by_id))
    assert text.count("ClientHello → catalog.shop:8080 mesh mTLS") == REQUESTS and "SPIFFE" not in text
    assert len([ln for ln in text.splitlines() if "l7-proxy inferred (" in ln]) == REQUESTS


def test_no_key_material_in_any_output(mesh, tmp_path):
    d, pcap, keys, _ports = mesh
    secrets = {line.split()[2] for path in keys.values() for line in path.read_text().splitlines() if line}
    svg = tmp_path / "mesh.svg"
    outs = []
    for extra in ([], ["--json"], ["--mermaid"], ["--svg", str(svg)]):
        r = subprocess.run([sys.executable, "-m", "meshscope.cli", "pcap", "analyze", str(pcap),
                            "--keylog", str(keys["inbound"]), "--keylog", str(keys["outbound"]), *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout + r.stderr)
    outs.append(svg.read_text())
    outs += [p.read_text(errors="replace") for p in d.glob("*-envoy/envoy*.log")]
    outs.append(render_text(analyze([pcap], keylog=KeyLog.from_files(list(keys.values()))).flows, {}))
    assert "/headers?n=2" in outs[0] and "mesh mTLS" in outs[2] and "SPIFFE ns shop" in outs[4]
    for text in outs:
        for s in secrets:
            assert s not in text and s[:16] not in text


# -- the same two sidecars as pods in network namespaces (tests/decoders/mesh_lab.py): inbound traffic
# redirected to 15006 by iptables, tcpdump on the node and on each pod's loopback and eth0

@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    need_root()
    for tool in ("ip", "iptables", "tcpdump", "curl"):
        need_binary(tool)
    from tests.decoders.mesh_lab import MeshLab

    d = tmp_path_factory.mktemp("mesh-pods")
    with MeshLab(d, yaml.safe_load(ENVOY_FILTER.read_text())) as lab:
        points = (("node", "any"), ("webapp", "lo"), ("catalog", "lo"), ("catalog", "eth0"))
        caps = [lab.capture(role, interface, d / f"{role}-{interface}.pcap") for role, interface in points]
        for i in range(REQUESTS):
            lab.call_catalog(f"/items?n={i}", RID.format(i))
            time.sleep(0.3)
        for cap in caps:
            MeshLab.stop_capture(cap)
    return d, lab.keys


def test_pods_loopback_captures_join_the_mtls_leg_with_keys(pods):
    """node `-i any` (the mTLS leg, seen on both veths) + each pod's loopback (app → its sidecar,
    sidecar → app from 127.0.0.6): with catalog's key log, one flow per request, every hop by id."""
    from tests.decoders.mesh_lab import APP_PORT, CATALOG, OUTBOUND_PORT, WEBAPP

    d, keys = pods
    a = analyze([d / "node-any.pcap", d / "webapp-lo.pcap", d / "catalog-lo.pcap"],
                keylog=KeyLog.from_files([keys["inbound"]]))
    mtls = [e for e in a.exchanges if e.exchange_type == "tls"]
    assert len(mtls) == REQUESTS and {e.tls_decryption for e in mtls} == {"decrypted"}  # copies folded
    by_id = a.by_id()
    flows = sorted((f for f in a.flows if f.hops), key=lambda f: f.start)
    assert len(flows) == REQUESTS
    for i, flow in enumerate(flows):
        root = by_id[flow.exchange_ids[0]]
        assert (root.conn.capture, root.conn.dst) == ("webapp-lo.pcap", WEBAPP.ip)
        assert root.conn.dport == OUTBOUND_PORT
        assert root.uri == f"/items?n={i}" and flow.request_id == RID.format(i)
        outbound, inbound = flow.hops
        assert [h.kind for h in flow.hops] == ["l7-proxy", "l7-proxy"]
        for hop in flow.hops:
            assert "inferred" not in hop.evidence and "x-request-id" in hop.evidence["matched_by"]
        mtls_request = by_id[outbound.exchange_ids[-1]]
        assert (mtls_request.conn.capture, mtls_request.tls_decryption, mtls_request.sni) == \
            ("node-any.pcap", "decrypted", SNI)
        assert outbound.src.startswith(f"{WEBAPP.ip}:") and outbound.dst == f"{CATALOG.ip}:{APP_PORT}"
        app = by_id[inbound.exchange_ids[-1]]
        assert app.conn.capture == "catalog-lo.pcap" and inbound.src.startswith("127.0.0.6:")
        assert inbound.dst == f"{CATALOG.ip}:{APP_PORT}"


def test_a_pods_own_captures_join_without_keys_as_inferred(pods):
    """catalog's eth0 (the mTLS leg, before the REDIRECT) and its loopback (127.0.0.6 → app), no keys:
    each mTLS connection is linked to the request it carried, as an inferred hop."""
    d, _keys = pods
    a = analyze([d / "catalog-eth0.pcap", d / "catalog-lo.pcap"])
    by_id = a.by_id()
    flows = sorted((f for f in a.flows if f.hops), key=lambda f: f.start)
    assert len(flows) == REQUESTS
    for i, flow in enumerate(flows):
        root = by_id[flow.exchange_ids[0]]
        assert (root.exchange_type, root.sni, root.conn.capture) == ("tls", SNI, "catalog-eth0.pcap")
        [hop] = flow.hops
        assert hop.evidence["inferred"] is True and not hop.evidence.get("ambiguous")
        assert "sidecar inbound: 127.0.0.6 to where the mTLS leg arrived" in hop.evidence["evidence"]
        carried = by_id[hop.exchange_ids[-1]]
        assert (carried.conn.capture, carried.uri) == ("catalog-lo.pcap", f"/items?n={i}")


@pytest.mark.chromium
def test_mermaids_parser_reads_the_mesh_graphs(mesh, pods):
    """The labelled graphs of both labs, with and without keys, as Mermaid's own parser reads them."""
    from tests.decoders.mermaid_parser import mermaid_parse

    texts = []
    for pcaps, keys in (([mesh[1]], mesh[2]["inbound"]),
                        ([pods[0] / "catalog-eth0.pcap", pods[0] / "catalog-lo.pcap"], pods[1]["inbound"])):
        for keylog in (KeyLog.from_files([keys]), None):
            a = analyze(pcaps, keylog=keylog)
            texts.append(diagram_mermaid(flow_diagram(a.flows, a.by_id())))
    assert all("mesh mTLS" in t for t in texts)
    assert mermaid_parse(texts) == ["ok"] * len(texts)
