"""`meshscope up --traffic` end to end: a newcomer's five minutes, checked through the API over HTTP,
then a clean shutdown that leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.test_dashboards import dashboard_exprs
from tests.conftest import free_port, listening
from tests.pipelines.ops_servers import AlertmanagerServer, PrometheusServer
from tests.pipelines.traffic import WebhookReceiver

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _sample(api: httpx.Client, name: str, **labels: str) -> float:
    """The sum of a metric's samples on the API's /metrics whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(api.get("/metrics").text)
               for s in family.samples if s.name == name and labels.items() <= s.labels.items())


def _pairs(alerts: list[dict]) -> set[tuple[str, str | None]]:
    return {(a["labels"]["alertname"], a["labels"].get("upstream_cluster")) for a in alerts}


def _promql_value(prom: PrometheusServer, expr: str) -> float:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def _grafana_query(prom: PrometheusServer, expr: str) -> list:
    """A dashboard query's result as Grafana would get it: the variables filled in (cluster: All), and
    the template function label_values(metric, label) asked of Prometheus' label API."""
    if m := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr):
        return prom.label_values(m.group(2), m.group(1))
    return prom.query(expr.replace("$__rate_interval", "1m").replace('"$cluster"', '".*"'))


def _children(pid: int) -> set[int]:
    """Every live descendant of pid (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def fast_default_rules(path: Path, timeframe: str = "20s") -> Path:
    """The bundled rules with a shorter window: the same spike logic, a shorter wait for the demo."""
    from meshscope.pipelines.alerts.rules import default_rules_path

    document = yaml.safe_load(default_rules_path().read_text())
    for rule in document["rules"]:
        rule["timeframe"] = timeframe
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.alertmanager
@pytest.mark.prometheus
def test_up_with_traffic_then_clean_shutdown(tmp_path):
    """One run of `meshscope up --traffic` (Envoy traffic through the whole stack) watched by a real
    Alertmanager and a real Prometheus: alerts fire, reach Alertmanager (stopped mid-way: failures
    counted, alerts delivered once it is back), its receiver, and resolve; Prometheus sees the whole
    5xx burst and every dashboard query has data; then a clean shutdown that leaves no process behind."""
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    receiver = WebhookReceiver().__enter__()
    am = AlertmanagerServer(tmp_path / "alertmanager", receiver.url)
    prom = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{ports['api_port']}"])
    am.start()
    prom.start()
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(tmp_path / "data"),
                                      "alertmanager_urls": [am.url], "alertmanager_resend_interval": 2,
                                      "alert_rules": str(fast_default_rules(tmp_path / "rules.yaml"))}))
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen([*MESHSCOPE, "--config", str(config), "up", "--traffic"], stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    api = httpx.Client(base_url=f"http://127.0.0.1:{ports['api_port']}", timeout=10)
    try:
        output = _wait_for(lambda: "meshscope is up" in Path(log.name).read_text()
                           and Path(log.name).read_text(), 120, "the stack and its demo traffic")
        am.stop()  # Alertmanager goes away before the bursts: the alerts cannot be delivered yet
        envoys = [p for p in _children(proc.pid) if "envoy" in Path(f"/proc/{p}/cmdline").read_text()]
        assert envoys, "the bundled Envoy runs under meshscope up"

        # a traced request: its access record resolves through the API
        rid = re.search(r"normal\s+meshscope trace (\S+)", output).group(1)
        trace = _wait_for(lambda: (t := api.get(f"/api/traces/{rid}").json()).get("hops") and t,
                          30, "the trace of a demo request")
        assert trace["hops"][0]["upstream_cluster"] == "webapp"
        assert trace["hops"][0]["node_id"] == "meshscope-gateway"

        # after the rules' reference window, the 5xx burst on catalog and the retry burst on inventory
        # fire the default spike rules, for those clusters only
        _wait_for(lambda: "demo bursts sent" in Path(log.name).read_text(), 100, "the demo bursts")
        want = {("upstream-5xx-spike", "upstream_cluster=catalog"),
                ("upstream-retry-spike", "upstream_cluster=inventory")}
        groups = _wait_for(lambda: want <= (g := {(a["rule"], a["group_key"]) for a in api.get(
            "/api/alerts", params={"state": "firing"}).json()["items"]}) and g, 15, "both alerts")
        assert groups == want

        # Alertmanager down: the failed deliveries are counted on /metrics; back up, it gets the alerts
        _wait_for(lambda: _sample(api, "meshscope_notifications_failed_total", receiver="alertmanager") >= 2,
                  20, "counted delivery failures of both alerts")
        am.start()
        in_am = {("upstream-5xx-spike", "catalog"), ("upstream-retry-spike", "inventory")}
        _wait_for(lambda: in_am <= _pairs(am.alerts()), 20, "the alerts in Alertmanager's API")
        grouped = {g["labels"]["alertname"]: [a["labels"]["upstream_cluster"] for a in g["alerts"]]
                   for g in am.groups()}
        assert grouped == {"upstream-5xx-spike": ["catalog"], "upstream-retry-spike": ["inventory"]}
        first = next(a for a in am.alerts() if a["labels"]["alertname"] == "upstream-5xx-spike")
        assert first["labels"]["severity"] == "critical"
        assert first["generatorURL"].startswith(f"{api.base_url}/api/alerts?")
        assert first["annotations"]["trace_url"].startswith(f"{api.base_url}/#")
        _wait_for(lambda: in_am <= _pairs(receiver.alerts("firing")), 20, "the receiver it notifies")
        assert _sample(api, "meshscope_notifications_sent_total", receiver="alertmanager") >= 2

        # Prometheus scraping the stack (the API port has every component's metrics): the whole burst
        burst_5xx = 'sum(increase(meshscope_responses_5xx_total{upstream_cluster="catalog"}[3m]))'
        _wait_for(lambda: _promql_value(prom, burst_5xx) >= 30, 20, "Prometheus to see the 5xx burst")
        burst_retried = 'sum(increase(meshscope_requests_retried_total{upstream_cluster="inventory"}[3m]))'
        assert _promql_value(prom, burst_retried) >= 20  # /flaky/2 retries most of the burst, not always all
        empty = [e for e in dashboard_exprs() if not _grafana_query(prom, e)]
        assert not empty, f"dashboard queries without data: {empty}"

        # after the bursts leave the rules' window the alerts resolve, at Alertmanager's receiver too
        _wait_for(lambda: in_am <= _pairs(receiver.alerts("resolved")), 60, "the resolutions")
        assert not am.alerts()

        # the sample capture of the NodePort lab path was uploaded and analysed into flows with a NAT hop
        upload = re.search(r"/api/pcaps/(\w+)/graph.svg", output).group(1)
        _wait_for(lambda: api.get(f"/api/pcaps/{upload}").json().get("state") == "done", 60, "analysis")
        flows = api.get(f"/api/pcaps/{upload}/flows").json()
        flows = flows["flows"] if isinstance(flows, dict) else flows
        kinds = {hop["kind"] for flow in flows for hop in flow["hops"]}
        assert "nat-dnat" in kinds and "l7-proxy" in kinds
        assert api.get(f"/api/pcaps/{upload}/graph.svg").text.lstrip().startswith(("<svg", "<?xml"))
    finally:
        descendants = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        api.close()
        am.stop()
        prom.stop()
        receiver.__exit__()
    assert code == 0, Path(log.name).read_text()[-3000:]
    # helpers such as multiprocessing's resource tracker exit on their own a moment after their parent
    deadline = time.monotonic() + 10
    while (left := [p for p in descendants if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind after shutdown: {left}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['api_port']}/healthz", timeout=2)


def test_second_up_reuses_the_stored_data(tmp_path):
    """Records stored by one run are there for the next (same data dir)."""
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(tmp_path / "data")}))
    base = f"http://127.0.0.1:{ports['api_port']}"

    def one_run(send: bool) -> int:
        proc = subprocess.Popen([*MESHSCOPE, "--config", str(config), "up"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_for(lambda: _healthy(base), 60, "the API")
            if send:
                # a listening port, not a request: a probe through the proxy would be a sixth record,
                # stored after the count below may already have stopped at five
                _wait_for(lambda: listening(ports["proxy_port"]), 30, "the proxy")
                for _ in range(5):
                    httpx.get(f"http://127.0.0.1:{ports['proxy_port']}/headers", timeout=5)
                return _wait_for(lambda: _count(base) >= 5 and _count(base), 30, "stored records")
            return _count(base)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    stored = one_run(send=True)
    assert stored == 5 and one_run(send=False) == stored


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False



def _count(base: str) -> int:
    page = httpx.get(base + "/api/records", params={"limit": 1000}, timeout=5).json()
    return len(page["items"])
