"""The lab's workloads, run inside its network namespaces (standard library only).

    lab_apps.py catalog PORT PEER_METADATA
    lab_apps.py webapp PORT CATALOG_URL PEER_METADATA TLS_PORT CERT KEY
    lab_apps.py wait URL SECONDS
    lab_apps.py client NODE_IP HTTP_PORT TLS_PORT SNI      (prints one JSON line per request)

`webapp` plays an Istio pod (sidecar + app): it calls catalog with the request's x-request-id and
B3 ids and its own peer metadata; `/flaky` fails the first attempt of every request id with 503
so the gateway retries. Its TLS port answers whatever comes over TLS (the passthrough target).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway pools its upstream connections

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def catalog(port: int, meta: str) -> None:
    class Catalog(_Quiet):
        def do_GET(self) -> None:
            self.reply(200, b'{"items": ["tea", "cake"]}', {"x-envoy-peer-metadata": meta})

    ThreadingHTTPServer(("0.0.0.0", port), Catalog).serve_forever()


def webapp(port: int, catalog_url: str, meta: str, tls_port: int, cert: str, key: str) -> None:
    failed: set[str] = set()
    lock = threading.Lock()
    host, cport = catalog_url.split("//", 1)[1].split(":")

    class Webapp(_Quiet):
        def do_GET(self) -> None:
            if self.path == "/ready":  # the lab's readiness probe: no call to catalog
                self.reply(200, b"{}", {})
                return
            rid = self.headers.get("x-request-id", "")
            if self.path.startswith("/flaky"):
                with lock:
                    first = rid[:14] + rid[15:] not in failed  # the sampling digit may change on retry
                    failed.add(rid[:14] + rid[15:])
                if first:
                    self.reply(503, b'{"error": "warming up"}', {"x-envoy-peer-metadata": meta})
                    return
            out = {"x-request-id": rid, "x-envoy-peer-metadata": meta,
                   "x-b3-spanid": uuid.uuid4().hex[:16]}
            for h in ("x-b3-traceid", "x-b3-sampled"):
                if self.headers.get(h):
                    out[h] = self.headers[h]
            if self.headers.get("x-b3-spanid"):
                out["x-b3-parentspanid"] = self.headers["x-b3-spanid"]
            conn = http.client.HTTPConnection(host, int(cport), timeout=5)
            conn.request("GET", "/items", headers=out)
            body = conn.getresponse().read()
            conn.close()
            self.reply(200, body, {"x-envoy-peer-metadata": meta})

    threading.Thread(target=_tls_echo, args=(tls_port, cert, key), daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", port), Webapp).serve_forever()


def _tls_echo(port: int, cert: str, key: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.create_server(("0.0.0.0", port))
    while True:
        raw, _ = srv.accept()
        try:
            with ctx.wrap_socket(raw, server_side=True) as s:
                s.recv(4096)
                s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure")
        except (OSError, ssl.SSLError):
            pass


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def wait(url: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with _DIRECT.open(url, timeout=1) as r:
                if r.status == 200:
                    return 0
        except OSError:
            time.sleep(0.1)
    print(f"not ready: {url}", file=sys.stderr)
    return 1


def client(node: str, port: int, tls_port: int, sni: str) -> int:
    """A bounded set of requests: own id, generated id (pooled upstream), a retried one, TLS by SNI."""
    plan = [("/products", str(uuid.uuid4())), ("/products", None), ("/flaky", str(uuid.uuid4()))]
    for path, rid in plan:
        conn = http.client.HTTPConnection(node, port, timeout=10)
        conn.request("GET", path, headers={"x-request-id": rid} if rid else {})
        resp = conn.getresponse()
        sport = conn.sock.getsockname()[1]
        resp.read()
        conn.close()
        row = {"path": path, "request_id": rid, "status": resp.status, "sport": sport}
        print(json.dumps(row), flush=True)
        time.sleep(0.05)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((node, tls_port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(f"GET / HTTP/1.1\r\nhost: {sni}\r\n\r\n".encode())
        data = s.recv(4096)
    print(json.dumps({"path": "tls", "sni": sni, "status": int(data.split()[1])}), flush=True)
    return 0


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    if role == "catalog":
        catalog(int(args[0]), args[1])
    elif role == "webapp":
        webapp(int(args[0]), args[1], args[2], int(args[3]), args[4], args[5])
    elif role == "wait":
        sys.exit(wait(args[0], float(args[1])))
    elif role == "client":
        sys.exit(client(args[0], int(args[1]), int(args[2]), args[3]))
