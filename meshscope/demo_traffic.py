"""Demo traffic for `meshscope up --traffic`: requests through the bundled proxy that make traces,
retries, a 5xx burst (so the default alert rules fire) and timeouts, then the sample capture upload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SAMPLE_CAPTURES = Path(__file__).resolve().parents[1] / "decoders" / "samples"


@dataclass(slots=True)
class TrafficReport:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)  # scenario -> one request id seen
    capture_upload: str | None = None  # the upload id of the sample capture

    def count(self, status: int) -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


# (scenario, path, how many): bounded; the 5xx and retry bursts exceed the default rules' threshold_cur (10)
SCENARIOS = (
    ("normal", "/headers", 40),
    ("retried", "/flaky/2?key=demo", 24),
    ("5xx burst", "/status/503", 30),
    ("timeout", "/delay/2", 3),
)


async def drive(proxy_url: str, *, concurrency: int = 8, timeout: float = 10.0) -> TrafficReport:
    """Send every scenario's requests through the proxy (at most `concurrency` at once)."""
    report = TrafficReport()
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=proxy_url, timeout=timeout) as client:

        async def one(scenario: str, path: str) -> None:
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

        for scenario, path, n in SCENARIOS:
            await asyncio.gather(*(one(scenario, path) for _ in range(n)))
    return report


def sample_capture() -> Path | None:
    """The bundled capture of the NodePort lab path, if this build ships one."""
    found = sorted(SAMPLE_CAPTURES.glob("*.pcap*")) if SAMPLE_CAPTURES.is_dir() else []
    return found[0] if found else None


async def upload_sample(api_url: str, headers: dict[str, str] | None = None) -> str | None:
    """Upload the sample capture to the API (as a person would) and return its upload id."""
    path = sample_capture()
    if path is None:
        return None
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0, headers=headers) as client:
        with path.open("rb") as f:
            response = await client.post("/api/pcaps", files={"file": (path.name, f)})
        response.raise_for_status()
        return response.json().get("id")
