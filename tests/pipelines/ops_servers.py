"""Debian's real Alertmanager (0.25) and Prometheus (2.42) on loopback ports, for tests.

Alertmanager runs without clustering, with a route that notifies a webhook the test serves after one
second of grouping, and resolved notifications on. Prometheus scrapes the given targets every second.
Both are stoppable and restartable on the same port and data directory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from tests.conftest import free_port, need
from tests.pipelines.kafka_broker import _end, _wait_listening

ALERTMANAGER = "prometheus-alertmanager"
PROMETHEUS = "prometheus"


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"needs `{name}` (Debian package; scripts/setup.sh test installs it)")
    return path  # type: ignore[return-value]


class _Server:
    """A Debian binary run on a loopback port, its output in workdir/<name>.log."""

    name = ""

    def __init__(self, binary: str, workdir: Path, config: dict) -> None:
        self.binary = need_tool(binary)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / f"{self.name}.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, args: list[str], timeout: float) -> None:
        log_path = self.workdir / f"{self.name}.log"
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen([*args, "--log.level=warn"], stdout=out, stderr=subprocess.STDOUT)
        _wait_listening(self.proc, self.port, log_path, timeout)

    def stop(self) -> None:
        _end(self.proc)
        self.proc = None


class AlertmanagerServer(_Server):
    """One Alertmanager whose only receiver is ``webhook_url``, grouping alerts by alertname."""

    name = "alertmanager"

    def __init__(self, workdir: Path, webhook_url: str, *,
                 group_by: tuple[str, ...] = ("alertname",)) -> None:
        super().__init__(ALERTMANAGER, workdir, {
            "route": {"receiver": "test", "group_by": list(group_by), "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "test", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
        })

    def start(self) -> None:
        self._run([self.binary, f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="], 20.0)
        deadline = time.monotonic() + 20
        while httpx.get(f"{self.url}/-/ready", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, "alertmanager never became ready"
            time.sleep(0.1)

    def alerts(self, **params: str) -> list[dict]:
        """Alertmanager's own view: GET /api/v2/alerts (active only unless params say otherwise)."""
        return httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5).json()

    def groups(self) -> list[dict]:
        return httpx.get(f"{self.url}/api/v2/alerts/groups", timeout=5).json()


class PrometheusServer(_Server):
    """One Prometheus scraping ``targets`` (host:port) every second."""

    name = "prometheus"

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        super().__init__(PROMETHEUS, workdir, {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "meshscope", "static_configs": [{"targets": targets}]}],
        })

    def start(self) -> None:
        tsdb = self.workdir / "tsdb"
        self._run([self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={tsdb}",
                   f"--web.listen-address=127.0.0.1:{self.port}"], 30.0)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's result vector (raises on a query error)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` asks Prometheus."""
        url = f"{self.url}/api/v1/label/{label}/values"
        body = httpx.get(url, params={"match[]": match}, timeout=10).json()
        assert body["status"] == "success", (label, match, body)
        return body["data"]

    def targets_up(self) -> bool:
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
        active = body["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)
