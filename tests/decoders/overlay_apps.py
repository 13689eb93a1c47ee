"""The overlay lab's programs (decoders/overlay_lab.py), run inside its namespaces: the HTTP server
(`serve PORT`, dual-stack, keep-alive), its readiness probe (`wait PORT`) and the client (`client
PORT ADDR...`: one keep-alive connection per address, the requests of REQUESTS, one JSON line each
with the client's own 4-tuple). Standard library only."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import sys
import time

REQUESTS = (("GET", "/ok", 200), ("GET", "/missing", 404), ("POST", "/form", 201))


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
