"""A VXLAN overlay between two network namespaces, as Flannel or Calico-VXLAN build one, for real
captures of tunnelled traffic:

    node-a 192.168.77.1 ── veth (the underlay) ── node-b 192.168.77.2
      vx0  VXLAN 42, UDP 4789: 10.244.0.1 fd00:244::1      10.244.0.2 fd00:244::2
      vx1  VXLAN 43, UDP 8472 (the Linux default) over vx0: 10.245.0.1 ↔ 10.245.0.2 — nested

An HTTP server in node-b answers on every address; the client in node-a runs keep-alive
connections to each pod address; tcpdump on the underlay sees only VXLAN (and ARP).
Run as a script, this file is the server (`serve PORT`), its readiness probe (`wait PORT`) or the
client (`client PORT ADDR...`).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

UNDERLAY = ("192.168.77.1", "192.168.77.2")
POD_V4 = ("10.244.0.1", "10.244.0.2")
POD_V6 = ("fd00:244::1", "fd00:244::2")
NESTED_V4 = ("10.245.0.1", "10.245.0.2")
PORT = 8080
REQUESTS = (("GET", "/ok", 200), ("GET", "/missing", 404), ("POST", "/form", 201))
_serial = count()


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


class OverlayLab:
    """Two namespaces joined by a veth, with VXLAN devices over it (and one over the other)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        tag = f"ov{os.getpid() % 100000}x{next(_serial)}"
        self.ns = (f"{tag}-a", f"{tag}-b")
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> OverlayLab:
        try:
            self._network()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def down(self) -> None:
        from tests.decoders.lab import stop_processes

        stop_processes(self.procs)
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def _network(self) -> None:
        a, b = self.ns
        for ns in self.ns:
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", a, "link", "add", "under", "type", "veth", "peer", "name", "under", "netns", b)
        for i, ns in enumerate(self.ns):
            me, peer = UNDERLAY[i], UNDERLAY[1 - i]
            _sh("ip", "-n", ns, "addr", "add", f"{me}/24", "dev", "under")
            _sh("ip", "-n", ns, "link", "set", "under", "up")
            _sh("ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789",
                "local", me, "remote", peer, "dev", "under")
            _sh("ip", "-n", ns, "addr", "add", f"{POD_V4[i]}/24", "dev", "vx0")
            _sh("ip", "-n", ns, "addr", "add", f"{POD_V6[i]}/64", "dev", "vx0", "nodad")
            _sh("ip", "-n", ns, "link", "set", "vx0", "up")
            _sh("ip", "-n", ns, "link", "add", "vx1", "type", "vxlan", "id", "43", "dstport", "8472",
                "local", POD_V4[i], "remote", POD_V4[1 - i], "dev", "vx0")
            _sh("ip", "-n", ns, "addr", "add", f"{NESTED_V4[i]}/24", "dev", "vx1")
            _sh("ip", "-n", ns, "link", "set", "vx1", "up")
        log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - kept open for the process' lifetime
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", b, sys.executable, __file__, "serve",
                                            str(PORT)], stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))
        log.close()
        # listening before any capture starts: a connection refused would be one more in it
        subprocess.run(["ip", "netns", "exec", b, sys.executable, __file__, "wait", str(PORT)], check=True,
                       capture_output=True, timeout=30)

    def capture(self, path: Path) -> subprocess.Popen:
        """tcpdump on node-a's underlay, every frame; returns once it listens."""
        from tests.decoders.lab import start_capture

        return start_capture(self.ns[0], "under", path, self.procs, bpf="")

    def traffic(self) -> list[dict]:
        """The client's requests (one dict each: its own 4-tuple, method, path, status)."""
        r = subprocess.run(["ip", "netns", "exec", self.ns[0], sys.executable, __file__, "client", str(PORT),
                            POD_V4[1], POD_V6[1], NESTED_V4[1]], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"client failed: {r.stderr[-800:]} {(self.dir / 'server.log').read_text()}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def _answer(self, status: int) -> None:
        body = f"{self.command} {self.path} via {self.connection.getsockname()[0]}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._answer(404 if self.path == "/missing" else 200)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(201)

    def log_message(self, *args):
        pass


class _DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _serve(port: int) -> None:
    _DualStack(("::", port), _Handler).serve_forever()


def _wait(port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _client(port: int, addresses: list[str]) -> None:
    for addr in addresses:
        conn = http.client.HTTPConnection(addr, port, timeout=5)
        conn.connect()
        local = conn.sock.getsockname()
        for method, path, _ in REQUESTS:
            conn.request(method, path, body=b"a=1" if method == "POST" else None,
                         headers={"X-Request-Id": f"{addr}{path}"})
            resp = conn.getresponse()
            resp.read()
            print(json.dumps({"src": local[0], "sport": local[1], "dst": addr, "dport": port,
                              "method": method, "path": path, "status": resp.status}), flush=True)
        conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve(int(sys.argv[2]))
    elif sys.argv[1] == "wait":
        _wait(int(sys.argv[2]))
    else:
        _client(int(sys.argv[2]), sys.argv[3:])
