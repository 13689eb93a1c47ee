"""Demo traffic for `meshscope up --traffic`: requests through the bundled proxy that make traces,
retries and timeouts at once, a steady trickle while the alert rules watch a reference window, then
a 5xx burst and a retry burst that fire the default rules; and the sample capture upload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# (scenario, path, how many, how many at once); every loop here is bounded in count. /flaky/2 fails
# every 2nd call: one at a time, each request succeeds first time or on its one retry, never exhausts
BASELINE = (("normal", "/headers", 40, 8), ("retried", "/flaky/2?key=demo", 4, 1),
            ("timeout", "/delay/2", 3, 3))
# the bursts exceed the default rules' threshold_cur (10 in the current window)
BURSTS = (("5xx burst", "/status/503", 30, 8), ("retry burst", "/flaky/2?key=burst", 30, 1))


@dataclass(slots=True)
class TrafficReport:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)  # scenario -> one request id seen

    def count(self, status: int) -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def summary(self) -> str:
        statuses = ", ".join(f"{code}×{n}" for code, n in sorted(self.by_status.items()))
        return f"{self.sent} requests ({statuses})"


async def drive(proxy_url: str, scenarios: Sequence[tuple[str, str, int, int]] = BASELINE, *,
                timeout: float = 10.0) -> TrafficReport:
    """Send every scenario's requests through the proxy, scenario after scenario."""
    report = TrafficReport()
    async with httpx.AsyncClient(base_url=proxy_url, timeout=timeout) as client:

        async def one(scenario: str, path: str, limit: asyncio.Semaphore) -> None:
            async with limit:
                try:
                    response = await client.get(path)
                except httpx.HTTPError:
                    report.count(0)
                    return
                report.count(response.status_code)
                rid = response.headers.get("x-request-id")  # the proxy returns it on every response
                if rid:
                    report.request_ids.setdefault(scenario, rid)

        for scenario, path, n, at_once in scenarios:
            limit = asyncio.Semaphore(at_once)
            await asyncio.gather(*(one(scenario, path, limit) for _ in range(n)))
    return report


async def trickle(proxy_url: str, seconds: float, *, every: float = 1.0) -> TrafficReport:
    """One normal request per `every` seconds for `seconds`: the steady rate a spike is measured against."""
    report = TrafficReport()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        part = await drive(proxy_url, (("normal", "/headers", 1, 1),))
        report.sent += part.sent
        for code, n in part.by_status.items():
            report.by_status[code] = report.by_status.get(code, 0) + n
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
    return report


def sample_capture() -> Path:
    """The bundled capture of the NodePort lab path (client → NodePort → gateway → webapp → catalog)."""
    from meshscope.decoders import NODEPORT_LAB

    return Path(NODEPORT_LAB)


async def upload_sample(api_url: str, headers: dict[str, str] | None = None) -> str | None:
    """Upload the sample capture to the API (as a person would) and return its upload id."""
    path = sample_capture()
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0, headers=headers) as client:
        with path.open("rb") as f:
            response = await client.post("/api/pcaps", files={"file": (path.name, f)})
        response.raise_for_status()
        return response.json().get("id")
