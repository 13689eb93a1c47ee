"""Shared test helpers: tests that need a tool or root say so; under CI a missing tool is a failure,
never a silent skip (CI installs everything through scripts/setup.sh)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

IN_CI = bool(os.environ.get("CI"))


def need(condition: bool, reason: str) -> None:
    """Skip with a reason on a developer machine; fail under CI, where everything must be installed."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def need_binary(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"needs `{name}` on PATH (scripts/setup.sh installs it)")
    return path  # type: ignore[return-value]


def stop_process(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, ``grace`` seconds to exit, then SIGKILL: how the tests end a server they started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (network namespaces, iptables, tcpdump)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on this loopback port (a probe that sends nothing)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d
