"""Stopping a test's tcpdump only once it has written what the kernel handed it.

A fixed sleep before SIGINT is not enough on a loaded machine: packets still waiting in the capture
ring when tcpdump stops are lost, and a whole connection can go missing from a capture without
tshark seeing a gap (the flakes of test_dpkt_vs_tshark and the sidecar captures). tcpdump prints its
counts on SIGUSR1; once they stay the same for a moment nothing more is arriving or waiting.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time

_COUNTS = re.compile(rb"(\d+) packets captured, (\d+) packets received by filter")


def _counts(p: subprocess.Popen, timeout: float) -> tuple[bytes, bytes] | None:
    """Ask tcpdump for its counts (captured, received by filter); None when it did not answer."""
    os.kill(p.pid, signal.SIGUSR1)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stderr], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(p.stderr.fileno(), 4096)  # type: ignore[union-attr]
        if not chunk:
            return None
        seen += chunk
        if found := _COUNTS.findall(seen):
            return found[-1]
    return None


def settle(p: subprocess.Popen, quiet_s: float = 0.3, timeout: float = 15.0) -> None:
    """Wait (at most ``timeout``) until tcpdump's counts stay the same over ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline and p.poll() is None:
        counts = _counts(p, 2.0)
        if counts is not None and counts == last:
            return
        last = counts
        time.sleep(quiet_s)


def stop_tcpdump(p: subprocess.Popen, quiet_s: float = 0.3) -> str:
    """Settle, then SIGINT (tcpdump flushes and writes its final counts); its stderr."""
    settle(p, quiet_s)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=10)
    return (err or b"").decode(errors="replace")


def kernel_drops(counts: str) -> int:
    """Packets the kernel dropped because tcpdump's ring was full (from its final counts): a capture
    with drops misses packets anywhere, a connection's start included, where no tool sees a gap."""
    found = re.findall(r"(\d+) packets? dropped by kernel", counts)
    return int(found[-1]) if found else 0
