"""Real TLS on loopback for the decryption tests: `openssl s_server` and curl writing key logs, real
tcpdump, and a small driver that runs each captured connection through decoders.tls_decrypt (TCP
reassembly by decoders.tcp_reassembly, frames by dpkt) and collects what comes out decrypted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import dpkt
from meshscope.decoders.tcp_reassembly import StreamReassembler
from meshscope.decoders.tls_decrypt import TlsSession
from meshscope.decoders.tls_keylog import KeyLog
from meshscope.proxy.certs import self_signed_pair

from tests.conftest import stop_process
from tests.tcpdump import kernel_drops, stop_tcpdump


class Collect:
    """A plaintext sink that keeps the bytes and marks gaps."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.gaps = 0
        self.parts: list[list[bytes]] = [[]]  # the chunks between gaps

    def data(self, payload: bytes, ts: float) -> None:
        self.chunks.append(payload)
        self.parts[-1].append(payload)

    def gap(self, nbytes: int, ts: float) -> None:
        self.gaps += 1
        self.parts.append([])

    def pieces(self) -> list[bytes]:
        return [b"".join(p) for p in self.parts]

    @property
    def bytes(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Conn:
    client: tuple[str, int]
    server: tuple[str, int]
    session: TlsSession
    to_server: Collect = field(default_factory=Collect)
    to_client: Collect = field(default_factory=Collect)
    events: list[tuple[bool, bytes]] = field(default_factory=list)  # in-order TCP bytes, both directions


def replay(events: list[tuple[bool, bytes | int]], keylog: KeyLog | None) -> Conn:
    """Feed recorded (from_client, bytes) events — an int is a gap of that many bytes — to a new session."""
    c = Conn(("c", 0), ("s", 0), TlsSession(keylog))
    c.session.client.sink, c.session.server.sink = c.to_server, c.to_client
    for from_client, what in events:
        if isinstance(what, int):
            c.session.gap(from_client, what, 0.0)
        else:
            c.session.feed(from_client, what, 0.0)
    c.session.finish()
    return c


class _Feed:
    def __init__(self, conn: Conn, from_client: bool) -> None:
        self.conn, self.session, self.from_client = conn, conn.session, from_client

    def data(self, payload: bytes, ts: float) -> None:
        self.conn.events.append((self.from_client, payload))
        self.session.feed(self.from_client, payload, ts)

    def gap(self, nbytes: int, ts: float) -> None:
        self.session.gap(self.from_client, nbytes, ts)


def tls_connections(pcap: Path, keylog: KeyLog | None, server_ports: set[int],
                    drop=lambda i, payload: False) -> list[Conn]:
    """Every TCP connection to one of ``server_ports`` in a loopback (or Ethernet) capture, decrypted.
    ``drop(i, payload)`` removes chosen data segments (the i-th data segment overall) to make losses."""
    conns: dict[tuple, tuple[Conn, StreamReassembler, StreamReassembler]] = {}
    order: list[Conn] = []
    i = 0
    with open(pcap, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        link = reader.datalink()
        for ts, buf in reader:
            if link == dpkt.pcap.DLT_NULL:
                ip = dpkt.loopback.Loopback(buf).data
            elif link == dpkt.pcap.DLT_LINUX_SLL:
                ip = dpkt.sll.SLL(buf).data
            else:
                ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            t = ip.data
            src, dst = (dpkt.utils.inet_to_str(ip.src), t.sport), (dpkt.utils.inet_to_str(ip.dst), t.dport)
            if dst[1] in server_ports:
                key, from_client = (src, dst), True
            elif src[1] in server_ports:
                key, from_client = (dst, src), False
            else:
                continue
            entry = conns.get(key)
            if entry is None or (t.flags & dpkt.tcp.TH_SYN and not t.flags & dpkt.tcp.TH_ACK):
                session = TlsSession(keylog)
                c = Conn(key[0], key[1], session)
                session.client.sink, session.server.sink = c.to_server, c.to_client
                entry = (c, StreamReassembler(_Feed(c, True)), StreamReassembler(_Feed(c, False)))
                conns[key] = entry
                order.append(c)
            c, up, down = entry
            r = up if from_client else down
            if t.flags & dpkt.tcp.TH_SYN:
                r.syn(t.seq)
                continue
            if t.data:
                i += 1
                if drop(i, bytes(t.data)):
                    continue
                r.segment(t.seq, bytes(t.data), ts)
            (down if from_client else up).acked(t.ack, ts)
    for c, up, down in conns.values():
        up.flush(0.0)
        down.flush(0.0)
        c.session.finish()
    return order


@contextlib.contextmanager
def tcpdump_lo(path: Path, ports: list[int], snaplen: int = 0):
    """Real tcpdump on loopback for these ports, stopped on exit once it has written what the kernel
    handed it (tests/tcpdump.py); ``snaplen``: bytes kept per packet (0: all)."""
    filt = " or ".join(f"tcp port {p}" for p in ports)
    # a 64 MB ring: loopback frames take up to 64 KB each, so tcpdump's default 2 MB holds only ~30 of
    # them, and a starved tcpdump then loses packets (a connection's start, where tshark sees no gap)
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-B", "65536",
                             "-s", str(snaplen), "-w", str(path), filt],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        line = b""
        while b"listening" not in line and time.time() < deadline:
            line = dump.stderr.readline()
        yield
    finally:
        counts = stop_tcpdump(dump)
    if drops := kernel_drops(counts):
        raise RuntimeError(f"tcpdump's ring overflowed, the capture misses {drops} packets: {counts.strip()}")


@contextlib.contextmanager
def openssl_server(workdir: Path, port: int, *args: str, keylog: Path | None = None):
    """`openssl s_server -WWW` serving files from ``workdir/www`` (HTTP/1.0 answers)."""
    cert, key = self_signed_pair(workdir / "certs", ["shop.example.com"])
    www = workdir / "www"
    www.mkdir(exist_ok=True)
    argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
            "-WWW", "-quiet", "-naccept", "50", *args]
    if keylog is not None:
        argv += ["-keylogfile", str(keylog)]
    proc = subprocess.Popen(argv, cwd=www, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port)
        yield www
    finally:
        stop_process(proc, 5)


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def curl(url: str, keylog: Path, *args: str, port: int) -> bytes:
    """Real curl with SSLKEYLOGFILE, resolving shop.example.com to loopback."""
    env = dict(os.environ, SSLKEYLOGFILE=str(keylog))
    out = subprocess.run(["curl", "-sk", "--max-time", "10",
                          "--resolve", f"shop.example.com:{port}:127.0.0.1",
                          *args, url], env=env, capture_output=True, timeout=20, check=True)
    return out.stdout


def tshark_fields(pcap: Path, keylog: Path, filt: str, fields: list[str], *opts: str) -> list[list[str]]:
    """tshark with the same key log: one row per matching frame, one column per field."""
    cmd = ["tshark", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", *opts, "-Y", filt, "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def tshark_follow_tls(pcap: Path, keylog: Path, streams: int,
                      server_port: int) -> dict[int, tuple[bytes, bytes]]:
    """tshark's decrypted bytes of TCP streams 0..streams-1: client port → (client's, server's)."""
    syns = subprocess.run(["tshark", "-r", str(pcap), "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0",
                           "-T", "fields", "-e", "tcp.stream", "-e", "tcp.srcport"],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    client_port = {int(a): int(b) for a, b in (line.split("\t") for line in syns.splitlines() if line)}
    cmd = ["tshark", "-r", str(pcap), "-o", f"tls.keylog_file:{keylog}", "-q"]
    for i in range(streams):
        cmd += ["-z", f"follow,tls,raw,{i}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    result: dict[int, tuple[bytes, bytes]] = {}
    stream, node0, untabbed, tabbed = None, None, [], []
    for line in out.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            stream = int(line.rsplit(" ", 1)[1])
        elif line.startswith("Node 0: "):
            node0 = int(line.rsplit(":", 1)[1])
        elif line.startswith("====="):
            if stream is not None:
                a, b = bytes.fromhex("".join(untabbed)), bytes.fromhex("".join(tabbed))
                # untabbed lines are node 0's: whoever tshark met first, not always the client
                result[client_port[stream]] = (b, a) if node0 == server_port else (a, b)
            stream, node0, untabbed, tabbed = None, None, [], []
        elif stream is not None and line.strip() and not line.startswith(("Follow:", "Node 1:")):
            (tabbed if line.startswith("\t") else untabbed).append(line.strip())
    return result
