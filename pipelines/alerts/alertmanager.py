"""Alertmanager as the receiver of meshscope's alerts, fed the way Prometheus feeds it.

Alertmanager takes alerts on ``POST /api/v2/alerts`` as a JSON array of ``{labels, annotations,
startsAt, endsAt, generatorURL}`` (the webhook payload, version 4, is what it *sends*; it answers 400
to that). Every URL gets every alert: the members of an HA cluster deduplicate among themselves.
Active alerts are sent again every resend interval with ``endsAt`` a few intervals ahead, so an
Alertmanager that restarted or missed a post learns them again, and one that stops hearing from
meshscope resolves them by itself. A resolution goes out once with ``endsAt`` = now, and is kept for a
target until that target took it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from meshscope.pipelines.alerts.notify import FAILED, SENT, alerts_url, rfc3339, target_label

from meshscope.errors import UserError
from meshscope.model import Alert
from meshscope.settings import Settings

log = logging.getLogger("meshscope.alerts")

API_PATH = "/api/v2/alerts"
VALID_FOR = 4  # resend intervals an active alert's endsAt lies ahead (Prometheus: 4 × resend delay)
MAX_PENDING = 10_000  # resolutions held for a target that is down
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")

Key = tuple[str, str]  # (rule, group key)


def api_url(url: str) -> str:
    """``http://am:9093`` or ``http://am:9093/prefix`` → the alerts endpoint under it."""
    url = url.rstrip("/")
    return url if url.endswith(API_PATH) else url + API_PATH


def _labels(alert: Alert) -> dict[str, str]:
    """Alertmanager's label rules: names [a-zA-Z_][a-zA-Z0-9_]*, and an empty value means no label."""
    out = {}
    for name, value in alert.labels.items():
        name = _LABEL_NAME.sub("_", name)
        if name[:1].isdigit():
            name = "_" + name
        if value:
            out[name] = str(value)
    out.setdefault("alertname", alert.rule)
    return out


def to_postable(alert: Alert, *, now: float, valid_for: float, external_url: str = "") -> dict:
    """One entry of the array POSTed to /api/v2/alerts (Alertmanager's ``postableAlert``)."""
    annotations = {
        "summary": f"{alert.rule}: {alert.group_key}",
        "description": alert.description or alert.rule,
        "observed": f"{alert.observed:g}",
        "window_seconds": f"{alert.window_s:g}",
    }
    if alert.baseline is not None:
        annotations["baseline"] = f"{alert.baseline:g}"
    if alert.sample_request_ids:
        annotations["sample_request_ids"] = ",".join(alert.sample_request_ids)
        if external_url:  # the web page opens the trace named in its fragment
            annotations["trace_url"] = f"{external_url}/#{quote(alert.sample_request_ids[-1])}"
    if alert.state == "firing":
        ends = now + valid_for
    else:
        ends = max(alert.first_seen, min(alert.last_seen, now))
    postable = {
        "labels": _labels(alert),
        "annotations": annotations,
        "startsAt": rfc3339(alert.first_seen),
        "endsAt": rfc3339(ends),
    }
    if external_url:
        postable["generatorURL"] = alerts_url(external_url, alert)
    return postable


@dataclass(slots=True)
class _Target:
    url: str  # the alerts endpoint
    label: str  # the URL without credentials, for metrics and logs
    healthy: bool | None = None  # None: not tried yet
    resolved: dict[Key, Alert] = field(default_factory=dict)  # resolutions this target has not taken
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # posts in order: no resolve overtakes


class AlertmanagerNotifier:
    """Sends alerts to every Alertmanager URL; ``run`` re-sends the active ones every interval."""

    def __init__(self, urls: Sequence[str], *, resend_interval: float = 60.0, timeout: float = 10.0,
                 attempts: int = 3, backoff: float = 0.5, username: str | None = None,
                 password: str | None = None, bearer_token: str | None = None,
                 ca_file: str | Path | None = None, external_url: str = "") -> None:
        if resend_interval <= 0:
            raise UserError("alertmanager_resend_interval must be positive")
        for u in urls:
            if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).hostname:
                raise UserError(f"alertmanager_urls: {u!r} is not an http(s) URL like http://am:9093")
        self.targets = [_Target(api_url(u), target_label(api_url(u))) for u in urls]
        self.urls = [t.url for t in self.targets]
        self.resend_interval = resend_interval
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.external_url = external_url
        self.active: dict[Key, Alert] = {}
        for t in self.targets:  # series at 0 from the start, so rate() sees the first failure
            SENT.labels("alertmanager", t.label)
            FAILED.labels("alertmanager", t.label)
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
        auth = httpx.BasicAuth(username, password or "") if username else None
        verify: ssl.SSLContext | bool = True
        if ca_file:
            verify = ssl.create_default_context(cafile=str(ca_file))
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers, auth=auth, verify=verify)

    @classmethod
    def from_settings(cls, settings: Settings, external_url: str = "") -> AlertmanagerNotifier:
        return cls(settings.alertmanager_urls, resend_interval=settings.alertmanager_resend_interval,
                   timeout=settings.alertmanager_timeout, username=settings.alertmanager_username,
                   password=settings.alertmanager_password,
                   bearer_token=settings.alertmanager_bearer_token,
                   ca_file=settings.alertmanager_ca_file, external_url=external_url)

    @property
    def valid_for(self) -> float:
        return VALID_FOR * self.resend_interval

    async def send(self, alerts: Sequence[Alert]) -> None:
        """Note the alerts' states and post them (and resolutions still owed) to every target."""
        if not self.targets or not alerts:
            return
        fresh: list[Alert] = []
        for a in alerts:
            key = (a.rule, a.group_key)
            if a.state == "firing":
                self.active[key] = a
            else:
                self.active.pop(key, None)
            fresh.append(a)
        for t in self.targets:
            for a in fresh:
                if a.state == "resolved":
                    t.resolved[(a.rule, a.group_key)] = a
                else:
                    t.resolved.pop((a.rule, a.group_key), None)
            _bound(t.resolved)
        firing = [a for a in fresh if a.state == "firing"]
        await asyncio.gather(*(self._deliver(t, firing) for t in self.targets))

    async def resend(self) -> None:
        """Post every active alert (and owed resolution) to every target: what the timer does."""
        active = list(self.active.values())
        await asyncio.gather(*(self._deliver(t, active) for t in self.targets))

    async def run(self) -> None:
        """Re-send active alerts every ``resend_interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.resend_interval)
            if self.active or any(t.resolved for t in self.targets):
                await self.resend()

    async def _deliver(self, target: _Target, firing: list[Alert]) -> None:
        async with target.lock:
            resolved = list(target.resolved.values())
            if not firing and not resolved:
                return
            now = time.time()
            body = [to_postable(a, now=now, valid_for=self.valid_for, external_url=self.external_url)
                    for a in firing + resolved]
            if await self._post(target, body):
                for a in resolved:
                    if target.resolved.get((a.rule, a.group_key)) is a:
                        del target.resolved[(a.rule, a.group_key)]

    async def _post(self, target: _Target, body: list[dict]) -> bool:
        """POST with retries and backoff; counts and logs the outcome (logs only on a change)."""
        reason = ""
        for attempt in range(self.attempts):
            try:
                response = await self._client.post(target.url, json=body)
                if response.status_code < 300:
                    SENT.labels("alertmanager", target.label).inc(len(body))
                    if target.healthy is False:
                        log.info("alertmanager %s takes alerts again", target.label)
                    target.healthy = True
                    return True
                reason = f"HTTP {response.status_code}: {response.text[:300]}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    break  # refused as malformed: sending it again will not help
            except httpx.HTTPError as exc:
                reason = repr(exc)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff * 2**attempt)
        FAILED.labels("alertmanager", target.label).inc(len(body))
        if target.healthy is not False:
            log.error("alertmanager %s: %d alert(s) not delivered (will retry every %g s): %s",
                      target.label, len(body), self.resend_interval, reason)
        target.healthy = False
        return False

    async def aclose(self) -> None:
        await self._client.aclose()


def _bound(resolved: dict[Key, Alert]) -> None:
    """Forget the oldest resolutions owed to a target that has been down a long time."""
    while len(resolved) > MAX_PENDING:
        del resolved[next(iter(resolved))]

