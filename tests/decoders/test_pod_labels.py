"""Who sent what: ptcpdump's per-packet pcapng comments and a `kubectl get pods,svc -A -o json` listing
become labels on the connection (process, command, container, pod, namespace), and the graphs' columns
carry the pod name."""

from __future__ import annotations

import json
import struct
import subprocess

import pytest
from meshscope.decoders import K8sNames, analyze, endpoint_names
from meshscope.decoders.pod_labels import INBOUND, OUTBOUND, ptcpdump_labels
from meshscope.decoders.read import read_exchanges
from meshscope.decoders.samples import NODEPORT_LAB

from meshscope.cli import main
from meshscope.errors import UserError
from tests.conftest import need_binary
from tests.decoders.capture_builders import Conversation, frame, http_request, http_response


def _ptcpdump_comments(pid: int, cmd: str, container: str, pod: str, namespace: str) -> list[str]:
    """The three comments ptcpdump writes on a packet it attributes (internal/writer/pcapng.go)."""
    return [
        f"PID: {pid}\nCmd: {cmd}\nArgs: {cmd} --flag",
        f"ContainerName: {container}\nContainerId: 0123456789ab\nContainerImage: example/{container}:1\n"
        "ContainerLabels: {}",
        f"PodName: {pod}\nPodNamespace: {namespace}\nPodUID: 9f3c-uid\nPodLabels: {{app: {container}}}\n"
        "PodAnnotations: {}",
    ]


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_ptcpdump_pcapng(path, packets) -> None:
    """A pcapng as ptcpdump writes it: one Ethernet interface, each packet (scapy IP packet, comments,
    direction flag) an Enhanced Packet Block with opt_comment and epb_flags options."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
           _block(1, struct.pack("<HHI", 1, 0, 262144) + _option(2, b"eth0") + _option(0, b""))]
    for p, comments, direction in packets:
        data = bytes(frame(p, "ether"))
        ticks = round(float(p.time) * 1e6)
        body = struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
        body += data + b"\0" * (-len(data) % 4)
        if comments:
            body += b"".join(_option(1, c.encode()) for c in comments)
            body += _option(2, struct.pack("<I", direction)) + _option(0, b"")
        out.append(_block(6, body))
    path.write_bytes(b"".join(out))


@pytest.fixture
def ptcpdump_capture(tmp_path):
    """Two connections: one captured on the client's host (the curl pod's process on every packet,
    outbound when it sends, inbound when it receives), one on the server's host (the catalog pod's)."""
    client = _ptcpdump_comments(4242, "/usr/bin/curl", "curl", "loadgen-7d9f", "shop")
    server = _ptcpdump_comments(77, "/usr/local/bin/python3", "catalog", "catalog-5d4b", "shop")
    packets = []
    c = Conversation(client="10.244.1.5", server="10.244.2.9", cport=43000).handshake()
    c.send(True, http_request("GET", "/from-client-host", x_request_id="c-host"))
    c.send(False, http_response(200, b"hello"))
    for p in c.close().packets:
        sent = p.src == "10.244.1.5"
        packets.append((p, client, OUTBOUND if sent else INBOUND))
    c = Conversation(client="10.244.3.7", server="10.244.2.9", cport=43001).handshake()
    c.send(True, http_request("GET", "/from-server-host", x_request_id="s-host"))
    c.send(False, http_response(404, b"nope"))
    for i, p in enumerate(c.close().packets):
        sent = p.src == "10.244.2.9"
        packets.append((p, server if i % 3 else [], OUTBOUND if sent else INBOUND))  # not every packet
    path = tmp_path / "ptcpdump.pcapng"
    write_ptcpdump_pcapng(path, packets)
    return path


def test_ptcpdump_comments_label_each_end_of_the_connection(ptcpdump_capture):
    by_uri = {}
    for backend in ("dpkt", "scapy", "pyshark"):
        stream, report = read_exchanges(ptcpdump_capture, backend)
        exs = list(stream)
        assert not report.damage
        by_uri[backend] = {e.uri: e.conn.labels for e in exs}
    assert by_uri["scapy"] == by_uri["dpkt"] == by_uri["pyshark"]
    labels = by_uri["dpkt"]
    assert labels["/from-client-host"] == {
        "client.pid": "4242", "client.command": "/usr/bin/curl", "client.container": "curl",
        "client.container_id": "0123456789ab", "client.pod": "loadgen-7d9f", "client.namespace": "shop"}
    assert labels["/from-server-host"] == {
        "server.pid": "77", "server.command": "/usr/local/bin/python3", "server.container": "catalog",
        "server.container_id": "0123456789ab", "server.pod": "catalog-5d4b", "server.namespace": "shop"}
    # the naming hook of the graphs: each IP by its pod
    stream, _ = read_exchanges(ptcpdump_capture)
    assert endpoint_names(stream) == {"10.244.1.5": "shop/loadgen-7d9f", "10.244.2.9": "shop/catalog-5d4b"}


def test_the_labels_reach_the_json_document(ptcpdump_capture, capsys):
    assert main(["pcap", "analyze", "--json", str(ptcpdump_capture)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {e["conn"]["labels"].get("client.pod") for e in doc["exchanges"]} == {"loadgen-7d9f", None}
    # the capture's picture (no stitched flow): its columns carry the pods' names
    assert main(["pcap", "analyze", "--mermaid", str(ptcpdump_capture)]) == 0
    out = capsys.readouterr().out
    assert "as shop/loadgen-7d9f (10.244.1.5)" in out and "as shop/catalog-5d4b (10.244.2.9)" in out


@pytest.mark.tshark
def test_tshark_reads_the_same_comments(ptcpdump_capture):
    """The hand-built file is a pcapng tshark reads, with the comments where we read them."""
    need_binary("tshark")
    out = subprocess.run(["tshark", "-r", str(ptcpdump_capture), "-T", "fields", "-E", "occurrence=f",
                          "-e", "frame.comment"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    firsts = [line for line in out.splitlines() if line]
    assert firsts and all(line.startswith("PID: ") for line in firsts)
    assert {ptcpdump_labels([line.replace("\\n", "\n")])["pid"] for line in firsts} == {"4242", "77"}


def _kubectl_listing() -> dict:
    """What `kubectl get pods,svc -A -o json` prints, cut to the fields that matter here."""
    def pod(name, ns, ip, host_network=False):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                "spec": {"hostNetwork": host_network, "containers": [{"name": "app"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}

    def svc(name, ns, ip):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}}

    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [
        pod("loadgen-7d9f", "default", "172.18.0.1"),
        pod("catalog-5d4b", "default", "10.10.0.8"),
        pod("kube-proxy-x2", "kube-system", "172.18.0.2", host_network=True),  # the node's IP: not a pod's
        svc("catalog", "default", "10.96.0.10"),
        {"kind": "Pod", "metadata": {"name": "pending", "namespace": "default"},
         "status": {"phase": "Pending"}},
    ]}


def test_a_kubectl_listing_names_the_ends_of_any_capture(tmp_path, capsys):
    names_file = tmp_path / "pods.json"
    names_file.write_text(json.dumps(_kubectl_listing()))
    names = K8sNames.from_file(names_file)
    assert len(names) == 3 and names.lookup("10.96.0.10") == {"service": "catalog", "namespace": "default"}
    analysis = analyze([NODEPORT_LAB], names=names)
    for ex in analysis.exchanges:
        c = ex.conn
        assert (c.labels.get("client.pod") == "loadgen-7d9f") == (c.src == "172.18.0.1")
        assert (c.labels.get("server.pod") == "catalog-5d4b") == (c.dst == "10.10.0.8")
        assert "server.pod" not in c.labels or c.dst != "172.18.0.2"  # a host-network pod names nothing
    # the flow graph's columns: the unnamed client gets its pod's name; names from the hops stay
    assert main(["pcap", "analyze", "--mermaid", "--k8s-names", str(names_file), str(NODEPORT_LAB)]) == 0
    out = capsys.readouterr().out
    assert "participant P0 as default/loadgen-7d9f (172.18.0.1)" in out
    assert "as default/catalog (10.10.0.8)" in out  # Istio's peer metadata named it first
    assert main(["pcap", "analyze", "--mermaid", str(NODEPORT_LAB)]) == 0
    assert "participant P0 as 172.18.0.1\n" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    (json.dumps({"kind": "List", "items": []}), "no pod or service with an IP"),
])
def test_a_bad_names_file_is_one_line(tmp_path, capsys, content, message):
    bad = tmp_path / "names.json"
    bad.write_text(content)
    with pytest.raises(UserError, match=message):
        K8sNames.from_file(bad)
    assert main(["pcap", "analyze", "--k8s-names", str(bad), str(NODEPORT_LAB)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("backend", ["dpkt", "scapy", "pyshark"])
def test_a_kubectl_listing_names_the_ends_of_dns_lookups_too(tmp_path, backend):
    """The listing labels UDP conversations as it does TCP ones: a pod's lookup names the pod and the
    cluster DNS service."""
    from tests.decoders.capture_builders import write
    from tests.decoders.udp_builders import Resolver

    r = Resolver()
    r.query(0.000, 1, "catalog.default.svc.cluster.local")
    r.answer(0.002, 1, "catalog.default.svc.cluster.local", 0, ("10.0.0.8",))
    listing = _kubectl_listing()
    listing["items"] += [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
         "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running", "podIP": "10.1.0.5"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}}]
    listing["items"] = [i for i in listing["items"] if i["metadata"]["name"] != "catalog"]  # 10.96.0.10
    names = K8sNames.from_kubectl(listing)
    analysis = analyze([write(tmp_path / "dns.pcap", r.packets)], backend=backend, names=names)
    (lookup,) = analysis.exchanges
    assert lookup.exchange_type == "dns"
    assert lookup.conn.labels == {"client.pod": "web-1", "client.namespace": "shop",
                                  "server.service": "kube-dns", "server.namespace": "kube-system"}
    assert endpoint_names(analysis.exchanges) == {"10.1.0.5": "shop/web-1",
                                                  "10.96.0.10": "kube-system/kube-dns"}
