"""A big TLS capture with its key log, from real traffic: curl through the bundled Envoy TLS gateway
(BoringSSL, key_log on) — TLS 1.3 and 1.2, HTTP/1.1 keep-alive and h2, many requests per connection —
captured with real tcpdump, then every connection replayed with fresh client addresses until the
capture holds the asked number of packets. A replayed connection keeps its ClientHello random, so the
key log decrypts every copy (as it does for tshark).

    python -m benchmarks.make_tls_capture OUT.pcap --packets 200000   # writes OUT.pcap and OUT.keys"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dpkt

KINDS = (("--http1.1", "1.3"), ("--http2", "1.3"), ("--http1.1", "1.2"), ("--http2", "1.2"))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_sessions(workdir: Path, requests_per_connection: int = 20) -> tuple[Path, Path, int]:
    """Real traffic through Envoy with key_log on: (pcap, key log, gateway port)."""
    from meshscope.proxy.bootstrap import build_bootstrap
    from meshscope.proxy.demo_upstream import DemoUpstream
    from meshscope.proxy.launcher import EnvoyProcess
    from meshscope.proxy.routes import Endpoint, load_routes

    examples = Path(__file__).resolve().parents[1] / "proxy" / "examples"
    routes = load_routes(examples / "sni-gateway.yaml", data_dir=workdir)
    port = _free_port()
    routes.listeners[0].port, routes.listeners[0].address = port, "127.0.0.1"
    keys = routes.listeners[0].tls[0].key_log.path
    pcap = workdir / "real.pcap"
    with DemoUpstream(port=_free_port()) as up:
        for c in routes.clusters:
            c.endpoints = [Endpoint("127.0.0.1", up.port)]
        with EnvoyProcess(build_bootstrap(routes, collector=None, admin_port=0)):
            dump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0",
                                     "-w", str(pcap), f"tcp port {port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                while b"listening" not in (dump.stderr.readline() or b"listening"):
                    pass
                for http, tls in KINDS:
                    urls = [f"https://shop.example.com:{port}/headers?n={i}"
                            for i in range(requests_per_connection)]
                    tls_args = ["--tlsv1.3"] if tls == "1.3" else ["--tlsv1.2", "--tls-max", "1.2"]
                    subprocess.run(["curl", "-sk", "--resolve",
                                    f"shop.example.com:{port}:127.0.0.1", http, *tls_args, *urls],
                                   check=True, timeout=60, stdout=subprocess.DEVNULL)
                time.sleep(1.0)  # loopback packets still in the ring buffer (FACTS: stranded by a stop)
            finally:
                dump.terminate()
                dump.wait(10)
    return pcap, keys, port


def _copy_port(ports: dict[int, int], copy: int, port: int) -> int:
    """The ephemeral port a copy's connection uses in place of the recorded ``port``: even, spread."""
    return ports.setdefault(port, 32768 + 2 * ((copy * 7 + len(ports) * 131) % 14000))


def replay(src: Path, dst: Path, packets: int, server_port: int) -> int:
    """Copies of every connection in ``src`` until ``packets``: each copy a new client address and
    each connection of it a new even ephemeral port (as Linux's connect() picks), so that the copies
    are as many distinct connections as real clients would make (sharding is by ports)."""
    frames = []
    with open(src, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            frames.append((ts, buf))
    t0 = frames[0][0]
    written = 0
    with open(dst, "wb") as out:
        w = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB, snaplen=262144)
        copy = 0
        while written < packets:
            client_ip = bytes([10, 64 + (copy >> 16) % 64, (copy >> 8) % 256, copy % 256])
            ports: dict[int, int] = {}  # recorded client port → this copy's
            for ts, buf in frames:
                eth = dpkt.ethernet.Ethernet(buf)
                ip = eth.data
                if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                    continue
                tcp = ip.data
                if tcp.dport == server_port:
                    ip.src = client_ip
                    tcp.sport = _copy_port(ports, copy, tcp.sport)
                else:
                    ip.dst = client_ip
                    tcp.dport = _copy_port(ports, copy, tcp.dport)
                ip.sum = tcp.sum = 0  # recomputed on pack
                w.writepkt(bytes(eth), ts=1_700_000_000.0 + copy * 0.05 + (ts - t0))
                written += 1
            copy += 1
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--packets", type=int, default=200_000)
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("tcpdump"):
        raise SystemExit("needs root and tcpdump (a real capture on loopback)")
    with tempfile.TemporaryDirectory() as tmp:
        pcap, keys, port = record_sessions(Path(tmp))
        n = replay(pcap, args.out, args.packets, port)
        keys_out = args.out.with_suffix(".keys")
        shutil.copyfile(keys, keys_out)
        keys_out.chmod(0o600)
    print(f"{args.out}: {n} packets; key log {keys_out}")


if __name__ == "__main__":
    main()
