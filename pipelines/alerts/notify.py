"""Where alerts go: the log, and webhooks in Alertmanager's webhook payload format (version 4);
Alertmanager itself is fed by alertmanager.py. Both count what they delivered and what they did not.

Any receiver that accepts Alertmanager webhooks (PagerDuty / Slack bridges, alertmanager-webhook
loggers …) accepts meshscope's. A webhook that is down is retried a few times, then logged; it never
stops the pipeline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from prometheus_client import Counter

from meshscope.model import Alert

log = logging.getLogger("meshscope.alerts")

SENT = Counter("meshscope_notifications_sent", "Alerts delivered, per receiver kind and target",
               ["receiver", "target"])
FAILED = Counter("meshscope_notifications_failed", "Alerts not delivered after the retries, per receiver "
                 "kind and target", ["receiver", "target"])

# Alertmanager's "zero" endsAt for alerts still firing
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit id for a label set (Alertmanager's fingerprint is one too)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def target_label(url: str) -> str:
    """A receiver URL as a metric label and in logs: without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def alerts_url(external_url: str, alert: Alert) -> str:
    """Where meshscope's API lists this alert's firings and resolutions."""
    return f"{external_url}/api/alerts?{urlencode({'rule': alert.rule, 'group': alert.group_key})}"


def _group_key(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{}:{" + inner + "}"


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def alertmanager_payload(alerts: Sequence[Alert], receiver: str = "meshscope",
                         external_url: str = "") -> dict:
    """One webhook message (Alertmanager's format, version "4") for alerts of one rule."""
    items = []
    for a in alerts:
        annotations = {
            "summary": a.description,
            "description": a.description,
            "observed": f"{a.observed:g}",
            "window_seconds": f"{a.window_s:g}",
            "sample_request_ids": ",".join(a.sample_request_ids),
        }
        if a.baseline is not None:
            annotations["baseline"] = f"{a.baseline:g}"
        items.append({
            "status": a.state,
            "labels": dict(a.labels),
            "annotations": annotations,
            "startsAt": rfc3339(a.first_seen),
            "endsAt": rfc3339(a.last_seen) if a.state == "resolved" else ZERO_TIME,
            "generatorURL": alerts_url(external_url, a) if external_url else "",
            "fingerprint": fingerprint(a.labels),
        })
    group_labels = {"alertname": alerts[0].rule}
    return {
        "version": "4",
        "groupKey": _group_key(group_labels),
        "truncatedAlerts": 0,
        "status": "firing" if any(a.state == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": _common([i["labels"] for i in items]),
        "commonAnnotations": _common([i["annotations"] for i in items]),
        "externalURL": external_url,
        "alerts": items,
    }


def log_alert(alert: Alert) -> None:
    level = logging.WARNING if alert.state == "firing" else logging.INFO
    log.log(level, "alert %s %s %s: %s samples=%s", alert.rule, alert.state.upper(), alert.group_key,
            alert.description, ",".join(alert.sample_request_ids))


class WebhookNotifier:
    """POSTs Alertmanager-format messages to every configured URL, one message per rule."""

    def __init__(self, urls: Sequence[str], timeout: float = 5.0, attempts: int = 3,
                 external_url: str = "") -> None:
        self.urls = list(urls)
        self.attempts = attempts
        self.external_url = external_url
        self.failures = 0
        for url in self.urls:
            SENT.labels("webhook", target_label(url))
            FAILED.labels("webhook", target_label(url))
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, alerts: Sequence[Alert]) -> None:
        """Deliver to every URL (retrying with backoff); failures are logged and counted, not raised."""
        by_rule: dict[str, list[Alert]] = {}
        for a in alerts:
            by_rule.setdefault(a.rule, []).append(a)
        posts = [
            self._post(url, alertmanager_payload(group, external_url=self.external_url), len(group))
            for group in by_rule.values() for url in self.urls
        ]
        await asyncio.gather(*posts)

    async def _post(self, url: str, payload: dict, count: int) -> None:
        label = target_label(url)
        for attempt in range(self.attempts):
            try:
                response = await self._client.post(url, json=payload)
                if response.status_code < 500:
                    if response.status_code >= 400:
                        log.error("webhook %s refused the alert: HTTP %d", label, response.status_code)
                        self.failures += 1
                        FAILED.labels("webhook", label).inc(count)
                    else:
                        SENT.labels("webhook", label).inc(count)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = repr(exc)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(0.5 * 2**attempt)
        self.failures += 1
        FAILED.labels("webhook", label).inc(count)
        log.error("webhook %s unreachable after %d attempts: %s", label, self.attempts, reason)

    async def aclose(self) -> None:
        await self._client.aclose()
