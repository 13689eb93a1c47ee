"""The servers and clients of the UDP lab (tests/decoders/udp_lab.py), run inside its namespaces.

    servers ADDR DIR   a DNS server (UDP and TCP, port 53: a Kubernetes-like zone, NXDOMAIN for
                       anything else, one deliberately slow name), an HTTP server (:8080), a TLS
                       server (127.0.0.1:8443, "secure.lab"), an HTTP CONNECT proxy (:3128) and a
                       QUIC server (:4433, versions 1 and 2, aioquic); prints "ready" when all listen
    quic HOST PORT VERSION SNI [N]   one QUIC handshake with aioquic ("1" or "2"), then closes;
                       N more ALPN names make the ClientHello span several Initial packets

The DNS answers are built with dpkt.dns, not with the decoder's own DNS code, so that the test
compares two implementations. Every server stops on SIGTERM; nothing runs unbounded."""

from __future__ import annotations

import asyncio
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dpkt

SLOW_NAME = "slow.web.svc.cluster.local"
SLOW_DELAY = 0.35  # s before the slow name is answered
ZONE = {  # name -> A record; AAAA for them is answered NOERROR with no records
    "catalog.default.svc.cluster.local": "10.77.0.1",
    SLOW_NAME: "10.77.0.1",
    "api.web.svc.cluster.local": "10.77.0.1",
}
TLS_NAME = "secure.lab"


def dns_answer(query: bytes) -> tuple[bytes, float]:
    """(the answer to one query, seconds to wait before sending it)."""
    q = dpkt.dns.DNS(query)
    r = dpkt.dns.DNS(id=q.id, qd=q.qd, op=dpkt.dns.DNS_RA | dpkt.dns.DNS_RD)
    r.qr = dpkt.dns.DNS_R
    name = q.qd[0].name.lower().rstrip(".") if q.qd else ""
    qtype = q.qd[0].type if q.qd else 0
    if name in ZONE:
        r.rcode = dpkt.dns.DNS_RCODE_NOERR
        if qtype == dpkt.dns.DNS_A:
            rr = dpkt.dns.DNS.RR(name=q.qd[0].name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=30)
            rr.ip = bytes(int(x) for x in ZONE[name].split("."))
            rr.rlen = 4
            r.an = [rr]
    else:
        r.rcode = dpkt.dns.DNS_RCODE_NXDOMAIN
    return bytes(r), (SLOW_DELAY if name == SLOW_NAME else 0.0)


class DnsUdp(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            answer, delay = dns_answer(data)
        except Exception:  # not a query we can read: say nothing
            return
        asyncio.get_running_loop().call_later(delay, self.transport.sendto, answer, addr)


async def dns_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            n = int.from_bytes(await reader.readexactly(2), "big")
            answer, delay = dns_answer(await reader.readexactly(n))
            await asyncio.sleep(delay)
            writer.write(len(answer).to_bytes(2, "big") + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = f"hello from {self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def http_servers(addr: str, workdir: Path) -> None:
    from tests.decoders.capture_builders import write_cert

    plain = ThreadingHTTPServer((addr, 8080), Hello)
    tls = ThreadingHTTPServer(("127.0.0.1", 8443), Hello)
    cert, key = write_cert(workdir, TLS_NAME)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    for srv in (plain, tls):
        threading.Thread(target=srv.serve_forever, daemon=True).start()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An egress proxy's CONNECT: 200, then bytes both ways (secure.lab is this host's TLS server)."""
    head = await reader.readuntil(b"\r\n\r\n")
    method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
    if method != "CONNECT":
        writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
        writer.close()
        return
    host, _, port = target.rpartition(":")
    up_r, up_w = await asyncio.open_connection("127.0.0.1" if host == TLS_NAME else host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))


async def quic_server(addr: str, workdir: Path) -> None:
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.packet import QuicProtocolVersion

    from tests.decoders.capture_builders import write_cert

    qdir = workdir / "quic"
    qdir.mkdir(exist_ok=True)
    cert, key = write_cert(qdir, "quic.lab")
    versions = [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2]
    config = QuicConfiguration(is_client=False, alpn_protocols=["h3"], supported_versions=versions)
    config.load_cert_chain(cert, key)
    await serve(addr, 4433, configuration=config)


async def servers(addr: str, workdir: Path) -> None:
    loop = asyncio.get_running_loop()
    http_servers(addr, workdir)
    await loop.create_datagram_endpoint(DnsUdp, local_addr=(addr, 53))
    await asyncio.start_server(dns_tcp, addr, 53)
    await asyncio.start_server(connect_proxy, addr, 3128)
    await quic_server(addr, workdir)
    print("ready", flush=True)
    await asyncio.sleep(600)  # the test stops it long before


async def quic_client(host: str, port: int, version: str, sni: str, extra_alpn: int = 0) -> None:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.packet import QuicProtocolVersion

    v = QuicProtocolVersion.VERSION_2 if version == "2" else QuicProtocolVersion.VERSION_1
    alpn = ["h3", *(f"x-padding-protocol-{i:04d}" for i in range(extra_alpn))]
    config = QuicConfiguration(is_client=True, alpn_protocols=alpn, server_name=sni,
                               verify_mode=ssl.CERT_NONE, original_version=v, supported_versions=[v])
    async with asyncio.timeout(10), connect(host, port, configuration=config) as client:
        await client.ping()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    cmd = sys.argv[1]
    if cmd == "servers":
        asyncio.run(servers(sys.argv[2], Path(sys.argv[3])))
    elif cmd == "quic":
        asyncio.run(quic_client(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5],
                                int(sys.argv[6]) if len(sys.argv) > 6 else 0))
    else:
        raise SystemExit(f"unknown command {cmd}")
