"""The Alertmanager notifier against Debian's real Alertmanager 0.25: alerts appear in its API, grouped,
reach the receiver it notifies and resolve there; a stopped Alertmanager is counted and logged once,
and learns the active alerts again from the re-sends once it is back."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from meshscope.pipelines.alerts.alertmanager import AlertmanagerNotifier, api_url, to_postable
from meshscope.pipelines.alerts.notify import alertmanager_payload
from prometheus_client import REGISTRY

from meshscope.errors import UserError
from meshscope.model import Alert
from tests.pipelines.ops_servers import AlertmanagerServer
from tests.pipelines.traffic import WebhookReceiver, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.alertmanager]


def alert(state: str, cluster: str = "catalog", rule: str = "upstream-5xx-spike",
          first: float | None = None) -> Alert:
    first = time.time() - 30 if first is None else first
    return Alert(rule=rule, group_key=f"upstream_cluster={cluster}", state=state, window_s=60, observed=30,
                 baseline=0, first_seen=first, last_seen=time.time(), sample_request_ids=["rid-1", "rid-2"],
                 labels={"alertname": rule, "severity": "critical", "upstream_cluster": cluster},
                 description=f"5xx spike on {cluster}")


def sample(name: str, target: str) -> float:
    return REGISTRY.get_sample_value(name, {"receiver": "alertmanager", "target": target}) or 0.0


def test_postable_alert_is_what_alertmanager_receives():
    now = 1_800_000_100.0
    a = alert("firing", first=1_800_000_000.0)
    p = to_postable(a, now=now, valid_for=240, external_url="http://ms:8000")
    assert p["labels"] == {"alertname": "upstream-5xx-spike", "severity": "critical",
                           "upstream_cluster": "catalog"}
    assert p["startsAt"] == "2027-01-15T08:00:00.000Z" and p["endsAt"] == "2027-01-15T08:05:40.000Z"
    assert p["annotations"]["sample_request_ids"] == "rid-1,rid-2"
    assert p["annotations"]["trace_url"] == "http://ms:8000/#rid-2"
    assert p["generatorURL"].startswith("http://ms:8000/api/alerts?rule=upstream-5xx-spike")
    resolved = alert("resolved", first=1_800_000_000.0)
    resolved.last_seen = now + 5  # the event clock ahead of the wall clock: endsAt is still now
    assert to_postable(resolved, now=now, valid_for=240)["endsAt"] == "2027-01-15T08:01:40.000Z"
    odd = alert("firing")
    odd.labels = {"alertname": "x", "team-name": "db", "empty": ""}
    assert to_postable(odd, now=now, valid_for=1)["labels"] == {"alertname": "x", "team_name": "db"}
    assert api_url("http://am:9093/") == "http://am:9093/api/v2/alerts"
    assert api_url("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"


async def test_alerts_reach_alertmanager_group_resolve_and_survive_its_restart(tmp_path, caplog):
    with WebhookReceiver() as receiver:
        am = AlertmanagerServer(tmp_path / "am", receiver.url)
        am.start()
        peer = AlertmanagerServer(tmp_path / "peer", receiver.url)  # a second member of an HA pair
        peer.start()
        notifier = AlertmanagerNotifier([am.url, peer.url], resend_interval=1.0, attempts=2, backoff=0.05,
                                        timeout=2.0, external_url="http://127.0.0.1:8000")
        target = am.url + "/api/v2/alerts"
        resender = asyncio.create_task(notifier.run())
        try:
            # the webhook payload (what Alertmanager sends) is refused: the bug this notifier fixes
            old = httpx.post(target, json=alertmanager_payload([alert("firing")]), timeout=5)
            assert old.status_code == 400

            sent_before = sample("meshscope_notifications_sent_total", target)
            await notifier.send([alert("firing", "catalog"), alert("firing", "webapp")])
            active = await wait_for(lambda: _async(lambda: len(am.alerts()) == 2 and am.alerts()), 10,
                                    "both alerts in Alertmanager's API")
            assert {a["labels"]["upstream_cluster"] for a in active} == {"catalog", "webapp"}
            assert {a["fingerprint"] for a in peer.alerts()} == {a["fingerprint"] for a in active}
            assert all(a["annotations"]["trace_url"] == "http://127.0.0.1:8000/#rid-2" for a in active)
            groups = am.groups()
            assert [g["labels"] for g in groups] == [{"alertname": "upstream-5xx-spike"}]
            assert len(groups[0]["alerts"]) == 2
            await wait_for(lambda: _async(lambda: len(receiver.alerts("firing")) >= 2), 15, "the receiver")
            first = receiver.payloads[0]
            assert first["groupLabels"] == {"alertname": "upstream-5xx-spike"}
            assert sample("meshscope_notifications_sent_total", target) >= sent_before + 2

            # a resolution: sent once with endsAt now; Alertmanager notifies the receiver resolved
            await notifier.send([alert("resolved", "catalog")])
            await wait_for(lambda: _async(lambda: [a["labels"]["upstream_cluster"] for a in am.alerts()]
                                          == ["webapp"]), 10, "catalog resolved in Alertmanager")
            await wait_for(lambda: _async(lambda: any(
                a["labels"]["upstream_cluster"] == "catalog" for a in receiver.alerts("resolved"))),
                15, "the resolution at the receiver")

            # Alertmanager stops: failures are counted, logged once, and the alerts return with it
            am.stop()
            failed_before = sample("meshscope_notifications_failed_total", target)
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="meshscope.alerts"):
                await notifier.send([alert("firing", "inventory", rule="upstream-retry-spike")])
                await wait_for(lambda: _async(lambda: sample("meshscope_notifications_failed_total", target)
                                              >= failed_before + 3), 10, "failures during the resends")
            assert sample("meshscope_notifications_failed_total", target) > failed_before
            down = [r for r in caplog.records if "not delivered" in r.getMessage()]
            assert len(down) == 1, [r.getMessage() for r in caplog.records]
            am.start()  # a fresh Alertmanager knows no alert: the re-sends tell it
            back = await wait_for(lambda: _async(lambda: len(am.alerts()) == 2 and am.alerts()), 15,
                                  "the active alerts after the restart")
            assert {a["labels"]["alertname"] for a in back} == {"upstream-5xx-spike", "upstream-retry-spike"}
            await wait_for(lambda: _async(lambda: any(
                a["labels"].get("upstream_cluster") == "inventory" for a in receiver.alerts("firing"))),
                15, "the alert raised while Alertmanager was down, at the receiver")
        finally:
            resender.cancel()
            await asyncio.gather(resender, return_exceptions=True)
            await notifier.aclose()
            am.stop()
            peer.stop()


async def _async(check):
    """Run a blocking check (httpx, the receiver's list) off the event loop."""
    return await asyncio.to_thread(check)


def test_urls_are_checked():
    with pytest.raises(UserError, match="not an http"):
        AlertmanagerNotifier(["am:9093"])


async def test_settings_auth_and_tls(tmp_path):
    """Bearer token and a private CA, from settings: the receiver sees the token over verified TLS;
    without the CA the certificate is refused and the failure counted."""
    import ssl
    import subprocess

    from meshscope.settings import load_settings

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with WebhookReceiver(context) as server:  # it stands in for Alertmanager's HTTPS endpoint
        url = server.url.removesuffix("/alerts")
        settings = load_settings(env={"MESHSCOPE_ALERTMANAGER_URLS": url,
                                      "MESHSCOPE_ALERTMANAGER_RESEND_INTERVAL": "2.5",
                                      "MESHSCOPE_ALERTMANAGER_BEARER_TOKEN": "s3cret",
                                      "MESHSCOPE_ALERTMANAGER_CA_FILE": str(cert)})
        assert settings.alertmanager_resend_interval == 2.5
        notifier = AlertmanagerNotifier.from_settings(settings)
        await notifier.send([alert("firing")])
        await notifier.aclose()
        assert server.headers[0]["Authorization"] == "Bearer s3cret"
        assert server.payloads[0][0]["labels"]["upstream_cluster"] == "catalog"

        basic = AlertmanagerNotifier([url], username="ops", password="pw", ca_file=cert)
        await basic.send([alert("firing")])
        await basic.aclose()
        assert server.headers[1]["Authorization"] == "Basic b3BzOnB3"

        untrusted = AlertmanagerNotifier([url], attempts=1)
        failed = sample("meshscope_notifications_failed_total", url + "/api/v2/alerts")
        await untrusted.send([alert("firing")])
        await untrusted.aclose()
        assert sample("meshscope_notifications_failed_total", url + "/api/v2/alerts") == failed + 1
        assert len(server.payloads) == 2
