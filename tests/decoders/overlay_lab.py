"""A VXLAN overlay between two network namespaces, as Flannel or Calico-VXLAN build one, for real
captures of tunnelled traffic:

    node-a 192.168.77.1 fd00:77::1 ── veth (the underlay) ── node-b 192.168.77.2 fd00:77::2
      vx0  VXLAN 42, UDP 4789: 10.244.0.1 fd00:244::1      10.244.0.2 fd00:244::2
      vx1  VXLAN 43, UDP 8472 (the Linux default) over vx0: 10.245.0.1 ↔ 10.245.0.2 — nested
      vx2  VXLAN 44, UDP 4789 over the IPv6 underlay: 10.246.0.1 ↔ 10.246.0.2

An HTTP server in node-b answers on every address (overlay_apps.py); the client in node-a runs a
keep-alive connection to each pod address; tcpdump on the underlay sees only VXLAN (and ARP).
The lifecycle (namespaces, processes, clean-up) is the NodePort lab's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import count
from pathlib import Path

from tests.decoders.lab import Lab, _sh, start_capture
from tests.decoders.overlay_apps import REQUESTS  # noqa: F401  (what the client sends, for the tests)

APPS = Path(__file__).with_name("overlay_apps.py")
UNDERLAY = ("192.168.77.1", "192.168.77.2")
POD_V4 = ("10.244.0.1", "10.244.0.2")
POD_V6 = ("fd00:244::1", "fd00:244::2")
NESTED_V4 = ("10.245.0.1", "10.245.0.2")
UNDERLAY_V6 = ("fd00:77::1", "fd00:77::2")
OVER_V6 = ("10.246.0.1", "10.246.0.2")
PORT = 8080
_serial = count()


class OverlayLab(Lab):
    """Two namespaces ("a", "b") joined by a veth, with VXLAN devices over it (and one over the other)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        tag = f"ov{os.getpid() % 100000}x{next(_serial)}"
        self.ns = {role: f"{tag}-{role}" for role in ("a", "b")}
        self.procs: list[subprocess.Popen] = []

    def _network(self) -> None:
        for ns in self.ns.values():
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        a, b = self.ns["a"], self.ns["b"]
        _sh("ip", "-n", a, "link", "add", "under", "type", "veth", "peer", "name", "under", "netns", b)
        for i, ns in enumerate((a, b)):
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
            _sh("ip", "-n", ns, "addr", "add", f"{UNDERLAY_V6[i]}/64", "dev", "under", "nodad")
            _sh("ip", "-n", ns, "link", "add", "vx2", "type", "vxlan", "id", "44", "dstport", "4789",
                "local", UNDERLAY_V6[i], "remote", UNDERLAY_V6[1 - i], "dev", "under")
            _sh("ip", "-n", ns, "addr", "add", f"{OVER_V6[i]}/24", "dev", "vx2")
            _sh("ip", "-n", ns, "link", "set", "vx2", "up")

    def _workloads(self) -> None:
        self.spawn("b", sys.executable, str(APPS), "serve", str(PORT), log="server.log")
        # listening before any capture starts: a connection refused would be one more in it
        r = self.run("b", sys.executable, str(APPS), "wait", str(PORT), timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"server not ready: {r.stderr.strip()} {self.logs()}")

    def capture_underlay(self, path: Path, interface: str = "under") -> subprocess.Popen:
        """tcpdump in node-a, every frame: on the underlay, or ``any`` (each packet then once on
        every device it crosses: vx1, vx0, the underlay); returns once it listens."""
        return start_capture(self.ns["a"], interface, path, self.procs, bpf="")

    def traffic(self) -> list[dict]:
        """The client's requests (one dict each: its own 4-tuple, method, path, status)."""
        r = self.run("a", sys.executable, str(APPS), "client", str(PORT), POD_V4[1], POD_V6[1], NESTED_V4[1],
                     OVER_V6[1])
        if r.returncode != 0:
            raise RuntimeError(f"client failed: {r.stderr[-800:]} {self.logs()}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
