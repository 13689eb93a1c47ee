"""On a real capture (tcpdump on loopback, real HTTP keep-alive and TLS clients and servers), the dpkt
backend finds what tshark finds: 5-tuples, methods, URIs, hosts, x-forwarded-for, x-request-id,
status pairing and SNI — and the other backends agree with it."""

from __future__ import annotations

import http.client
import http.server
import socket
import ssl
import subprocess
import threading
from urllib.parse import urlsplit

import pytest
from meshscope.decoders.read import read_exchanges

from benchmarks.bench_decoders import TSHARK_FIELDS
from tests.conftest import free_port, need_binary, need_root
from tests.decoders.canonical import canonical
from tests.decoders.capture_builders import write_cert
from tests.decoders.tls_lab import tcpdump_lo

# the facts the speed benchmark asks tshark for, less SNI (checked on the TLS side separately)
HTTP_FIELDS = [f for f in TSHARK_FIELDS if not f.startswith("tls.")]

pytestmark = [pytest.mark.root, pytest.mark.tshark, pytest.mark.slow]
SNIS = ["shop.example.com", "api.example.com", "pass.example.org"]
REQUESTS = 10  # _traffic: two keep-alive connections of five requests each


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = f"path={self.path}".encode() * 50
        self.send_response(404 if self.path.endswith("missing") else 200)
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 300):
                part = body[i : i + 300]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _tls_server(sock: socket.socket, ctx: ssl.SSLContext) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:  # the listening socket was closed: the test is over
            return
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.recv(100)
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (ssl.SSLError, OSError):
            pass


def _traffic(http_port: int, tls_port: int, tmp_path) -> list[str]:
    ids = []
    for conn_no in range(2):
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        for i, path in enumerate(["/a", "/chunked/b", "/missing", "/c?q=1"]):
            rid = f"{conn_no}{i}6b1c2e-8c3d-4e5f-9a0b-1c2d3e4f5a6b"
            ids.append(rid)
            c.request(
                "GET",
                path,
                headers={
                    "X-Request-Id": rid,
                    "X-Forwarded-For": f"192.0.2.{i + 1}",
                    "Host": f"webapp-{conn_no}.shop",
                },
            )
            c.getresponse().read()
        c.request("POST", "/form", body=b"a=1&b=2", headers={"X-Request-Id": f"post-{conn_no}"})
        ids.append(f"post-{conn_no}")
        c.getresponse().read()
        c.close()
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.set_alpn_protocols(["h2", "http/1.1"])
    for sni in SNIS:
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
            with cctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(100)
    return ids


def _capture(tcpdump: str, path, http_port: int, tls_port: int, d) -> list[str]:
    with tcpdump_lo(path, [http_port, tls_port]):
        return _traffic(http_port, tls_port, d)


def _lossy(path, ports) -> bool:
    """Whether the capture misses packets (then it is no fair reference): segments tshark sees missing,
    or whole connections tcpdump never wrote (a loaded machine can starve it past the drain time, and a
    connection missing from start to end leaves no gap for tshark to see)."""
    if _tshark(path, ports, "tcp.analysis.lost_segment or tcp.analysis.ack_lost_segment", ["frame.number"]):
        return True
    hellos = _tshark(path, ports, "tls.handshake.type == 1", ["frame.number"])
    requests = _tshark(path, ports, "http.request", ["frame.number"])
    return len(hellos) != len(SNIS) or len(requests) != REQUESTS


@pytest.fixture(scope="module")
def real_capture(tmp_path_factory):
    need_root()
    tcpdump = need_binary("tcpdump")
    need_binary("tshark")
    d = tmp_path_factory.mktemp("real")
    http_port, tls_port = free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cert, key = write_cert(d, "shop.example.com")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    sctx.set_alpn_protocols(["http/1.1"])
    tls_sock = socket.create_server(("127.0.0.1", tls_port))
    threading.Thread(target=_tls_server, args=(tls_sock, sctx), daemon=True).start()
    try:
        for attempt in range(3):  # a loaded machine can make tcpdump miss a packet: capture again
            path = d / f"real{attempt}.pcap"
            ids = _capture(tcpdump, path, http_port, tls_port, d)
            if not _lossy(path, (http_port, tls_port)):
                break
        else:
            pytest.fail("tcpdump lost packets on loopback in three attempts")
    finally:
        server.shutdown()
        tls_sock.close()
    return path, http_port, tls_port, ids


def _tshark(path, ports, filt, fields):
    cmd = [
        "tshark",
        "-r",
        str(path),
        "-Y",
        filt,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=\x1f",
        "-d",
        f"tcp.port=={ports[0]},http",
        "-d",
        f"tcp.port=={ports[1]},tls",
    ]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def _origin_form(uri: str) -> str:
    """tshark's http.response_for.uri is absolute (http://host/path?q); requests carry /path?q."""
    u = urlsplit(uri)
    return u.path + (f"?{u.query}" if u.query else "")


def test_dpkt_matches_tshark_fields(real_capture):
    path, http_port, tls_port, ids = real_capture
    stream, report = read_exchanges(path)
    exs = list(stream)
    assert not report.damage and not report.truncated
    http_ex = [e for e in exs if e.exchange_type == "http"]
    tls_ex = [e for e in exs if e.exchange_type == "tls"]

    rows = _tshark(
        path,
        (http_port, tls_port),
        "http.request",
        HTTP_FIELDS,
    )
    theirs = []
    for src, sport, dst, dport, method, uri, host, xff, lines in rows:
        rid = next(
            (
                ln.split(":", 1)[1].replace("\\r\\n", "").strip()
                for ln in lines.split("\x1f")
                if ln.lower().startswith("x-request-id:")
            ),
            None,
        )
        theirs.append((src, int(sport), dst, int(dport), method, uri, host or None, xff or None, rid))
    ours = [
        (*e.conn.key, e.method, e.uri, e.host, e.headers.get("x-forwarded-for"), e.request_id)
        for e in http_ex
    ]
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == REQUESTS and {e.request_id for e in http_ex} == set(ids)

    rows = _tshark(
        path,
        (http_port, tls_port),
        "http.response",
        ["tcp.dstport", "http.response.code", "http.response_for.uri"],
    )
    theirs = sorted((int(p), int(code), _origin_form(uri)) for p, code, uri in rows)
    ours = sorted((e.conn.sport, e.status, e.uri) for e in http_ex)
    assert ours == theirs

    rows = _tshark(
        path,
        (http_port, tls_port),
        "tls.handshake.type == 1",
        [
            "ip.src",
            "tcp.srcport",
            "tls.handshake.extensions_server_name",
            "tls.handshake.extensions_alpn_str",
        ],
    )
    theirs = sorted((src, int(sport), sni, tuple(alpn.split("\x1f"))) for src, sport, sni, alpn in rows)
    ours = sorted((e.conn.src, e.conn.sport, e.sni, tuple(e.alpn)) for e in tls_ex)
    assert ours == theirs and [s for *_, s, _ in ours] != [] and {e.sni for e in tls_ex} == set(SNIS)
    assert all(e.tls_version == "TLS 1.3" and e.conn.handshake_seen for e in tls_ex)


@pytest.mark.parametrize("backend", ["scapy", "pyshark"])
def test_backends_agree_on_the_real_capture(real_capture, backend):
    path = real_capture[0]
    ours = [canonical(e) for e in read_exchanges(path)[0]]
    theirs = [canonical(e) for e in read_exchanges(path, backend)[0]]
    assert ours and theirs == ours
