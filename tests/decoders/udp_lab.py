"""A pod and a "cluster" in two network namespaces, for real captures of DNS, QUIC and CONNECT.

    pod 10.77.0.2 ── veth ── svc 10.77.0.1: DNS (:53 UDP+TCP), HTTP (:8080), CONNECT proxy (:3128)
                                            in front of a TLS server, QUIC (:4433, v1 and v2)

The pod's /etc/resolv.conf (bind-mounted by `ip netns exec` from /etc/netns/<pod>/resolv.conf) has
a Kubernetes search path for namespace "web" with ndots:5, so curl's lookups go through glibc's
search-domain expansion. tcpdump runs in the pod on eth0. Everything is removed on exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

from tests.decoders.lab import LabLifecycle, _sh, _veth, start_capture, stop_processes

POD, SVC = "10.77.0.2", "10.77.0.1"
APPS = Path(__file__).with_name("udp_lab_apps.py")
RESOLV = ("search web.svc.cluster.local svc.cluster.local cluster.local\n"
          "nameserver 10.77.0.1\noptions ndots:5\n")
_serial = count()


class UdpLab(LabLifecycle):
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        tag = f"mu{os.getpid() % 100000}x{next(_serial)}"
        self.pod, self.svc = f"{tag}-pod", f"{tag}-svc"
        self.etc = Path("/etc/netns") / self.pod
        self.procs: list[subprocess.Popen] = []

    def _up(self) -> None:
        for ns in (self.pod, self.svc):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _veth(self.svc, "s-p", self.pod)
        _sh("ip", "-n", self.svc, "addr", "add", f"{SVC}/24", "dev", "s-p")
        _sh("ip", "-n", self.svc, "link", "set", "s-p", "up")
        _sh("ip", "-n", self.pod, "addr", "add", f"{POD}/24", "dev", "eth0")
        _sh("ip", "-n", self.pod, "link", "set", "eth0", "up")
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(RESOLV)
        log = open(self.dir / "servers.log", "wb")  # noqa: SIM115 - kept open for the process' lifetime
        p = subprocess.Popen(["ip", "netns", "exec", self.svc, sys.executable, str(APPS), "servers", SVC,
                              str(self.dir)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        deadline = time.monotonic() + 30
        while b"ready" not in (self.dir / "servers.log").read_bytes():
            if p.poll() is not None or time.monotonic() > deadline:
                text = (self.dir / "servers.log").read_text()[-2000:]
                raise RuntimeError(f"lab servers did not start: {text}")
            time.sleep(0.1)

    def down(self) -> None:
        stop_processes(self.procs)
        for ns in (self.pod, self.svc):
            _sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)

    def capture(self, path: Path, snaplen: int = 0) -> subprocess.Popen:
        return start_capture(self.pod, "eth0", path, self.procs, bpf="", snaplen=snaplen)

    def in_pod(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A command in the pod (its /etc/resolv.conf is the pod's)."""
        return subprocess.run(["ip", "netns", "exec", self.pod, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def quic(self, version: str, sni: str = "quic.lab", extra_alpn: int = 0) -> subprocess.CompletedProcess:
        return self.in_pod(sys.executable, str(APPS), "quic", SVC, "4433", version, sni, str(extra_alpn))
