"""Webhooks: Alertmanager's payload (version 4) reaches a real HTTP receiver; a dead one is survived."""

from __future__ import annotations

import time

from meshscope.pipelines.alerts.notify import WebhookNotifier, alertmanager_payload

from meshscope.model import Alert
from tests.conftest import free_port
from tests.pipelines.traffic import WebhookReceiver


def alert(state: str, cluster: str = "catalog") -> Alert:
    return Alert(rule="upstream-5xx-spike", group_key=f"upstream_cluster={cluster}", state=state,
                 window_s=60, observed=42, baseline=3, first_seen=1_800_000_000.0,
                 last_seen=1_800_000_090.5, sample_request_ids=["a", "b"],
                 labels={"alertname": "upstream-5xx-spike", "severity": "critical",
                         "upstream_cluster": cluster},
                 description="5xx spike")


def test_payload_follows_alertmanager_webhook_format():
    p = alertmanager_payload([alert("firing"), alert("firing", "webapp")], external_url="http://ms:8000")
    assert p["version"] == "4" and p["status"] == "firing" and p["receiver"] == "meshscope"
    assert p["groupKey"] == '{}:{alertname="upstream-5xx-spike"}'
    assert p["groupLabels"] == {"alertname": "upstream-5xx-spike"}
    assert p["commonLabels"] == {"alertname": "upstream-5xx-spike", "severity": "critical"}
    first = p["alerts"][0]
    assert first["startsAt"] == "2027-01-15T08:00:00.000Z" and first["endsAt"] == "0001-01-01T00:00:00Z"
    assert first["annotations"]["sample_request_ids"] == "a,b" and first["annotations"]["baseline"] == "3"
    assert len({a["fingerprint"] for a in p["alerts"]}) == 2
    assert first["generatorURL"] == "http://ms:8000/api/alerts?rule=upstream-5xx-spike&group=upstream_cluster%3Dcatalog"
    resolved = alertmanager_payload([alert("resolved")])["alerts"][0]
    assert resolved["status"] == "resolved" and resolved["endsAt"] == "2027-01-15T08:01:30.500Z"


async def test_webhooks_receive_one_message_per_rule_and_dead_ones_are_survived():
    with WebhookReceiver() as receiver:
        dead = f"http://127.0.0.1:{free_port()}/nobody"
        notifier = WebhookNotifier([receiver.url, dead], timeout=1.0, attempts=2)
        started = time.monotonic()
        await notifier.send([alert("firing"), alert("resolved", "webapp")])
        await notifier.aclose()
    assert time.monotonic() - started < 5
    assert len(receiver.payloads) == 1
    assert [a["status"] for a in receiver.alerts()] == ["firing", "resolved"]
    assert notifier.failures == 1  # the dead receiver, after its retries
