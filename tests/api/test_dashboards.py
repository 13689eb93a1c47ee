"""dashboards/: every file parses, every Prometheus metric a Grafana query names is exported by a running
API's /metrics, and every Elasticsearch field the Grafana and Kibana objects name is mapped by the
access-record index template (and is an AccessRecord field or one the store adds)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
from pathlib import Path

import httpx
import yaml

from meshscope.model import AccessRecord
from tests.api.conftest import lab_records

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
TEMPLATE = Path(__file__).resolve().parents[2] / "pipelines" / "store" / "templates" / "access.json"
STORE_ADDED = {"@timestamp", "request_id_norm", "retried"}  # pipelines.store.elasticsearch.document()
METRIC = re.compile(r"\bmeshscope_[a-z0-9_]+")
QUERY_FIELD = re.compile(r"(?:_exists_:)?([@A-Za-z_][\w.@]*)\s*(?::|>=|<=|>|<)")


def walk(node, key: str):
    """Every value stored under `key` anywhere in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def query_fields(query: str) -> set[str]:
    fields = set(QUERY_FIELD.findall(query or ""))
    fields |= {m for m in re.findall(r"_exists_:([\w@.]+)", query or "")}
    return fields - {"_exists_"}


def mapped_fields() -> set[str]:
    return set(json.loads(TEMPLATE.read_text())["template"]["mappings"]["properties"])


def test_every_file_parses():
    files = sorted(DASHBOARDS.iterdir())
    assert {f.name for f in files} >= {
        "grafana-prometheus.json",
        "grafana-elasticsearch.json",
        "kibana-access-records.ndjson",
    }
    for f in files:
        if f.suffix == ".json":
            dash = json.loads(f.read_text())
            assert dash["title"] and dash["uid"] and dash["panels"]
            ids = [p["id"] for p in dash["panels"]]
            assert len(ids) == len(set(ids)), f.name
            assert all(p["targets"] for p in dash["panels"]), f.name
        elif f.suffix == ".ndjson":
            objects = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            ids = {(o["type"], o["id"]) for o in objects}
            for o in objects:
                for r in o["references"]:  # every reference resolves within the file
                    assert (r["type"], r["id"]) in ids, (o["id"], r)
                for key in ("visState", "panelsJSON", "optionsJSON", "uiStateJSON"):
                    if key in o["attributes"]:
                        json.loads(o["attributes"][key])
                for ss in walk(o["attributes"], "searchSourceJSON"):
                    json.loads(ss)


def dashboard_exprs() -> list[str]:
    """Every PromQL query of the Prometheus dashboard: panel targets and template variables."""
    dash = json.loads((DASHBOARDS / "grafana-prometheus.json").read_text())
    return list(walk(dash["panels"], "expr")) + [
        v["definition"] for v in dash["templating"]["list"] if "definition" in v
    ]


def test_prometheus_metrics_exist(api):
    """Records through a real pipeline (in-process bus, the API's SQLite store): every metric a dashboard
    query names is on the API's /metrics, or on the collector's registry, which `meshscope up` adds."""
    from meshscope.collector.publisher import PublisherMetrics
    from meshscope.pipelines import Pipeline
    from meshscope.pipelines.bus.memory import MemoryBus
    from meshscope.pipelines.store.sqlite import SqliteStore
    from prometheus_client import generate_latest

    settings = api.settings.replace(alert_webhooks=["http://127.0.0.1:9/hook"])

    async def index() -> None:
        bus, store = MemoryBus(), SqliteStore(settings)
        async with store:
            async with Pipeline(settings, bus, store, tick=0.05) as pipeline:
                await bus.publish("access", lab_records())
                for _ in range(200):
                    if pipeline.indexer.stats["indexed"] >= 1:
                        break
                    await asyncio.sleep(0.02)

    asyncio.run(index())
    wanted = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    assert {
        "meshscope_requests_total",
        "meshscope_responses_5xx_total",
        "meshscope_requests_retried_total",
    } <= wanted
    scraped = httpx.get(api.url + "/metrics").text
    collector = PublisherMetrics()
    collector.received.labels("als")
    scraped += generate_latest(collector.registry).decode()
    exported = {line.split("{")[0].split(" ")[0] for line in scraped.splitlines() if line and line[0] != "#"}
    assert wanted <= exported, wanted - exported
    # the label the dashboards group by, on the in-process counter and on the store-derived gauge
    assert 'meshscope_requests_total{upstream_cluster="outbound|8080||webapp"}' in scraped
    assert 'meshscope_stored_requests{upstream_cluster="outbound|8080||webapp"}' in scraped
    assert "# TYPE meshscope_stored_requests gauge" in scraped


def test_elasticsearch_fields_exist():
    mapped = mapped_fields()
    record_fields = {f.name for f in dataclasses.fields(AccessRecord)} | STORE_ADDED
    assert mapped <= record_fields  # the template maps nothing the records lack
    used: set[str] = set()
    grafana = json.loads((DASHBOARDS / "grafana-elasticsearch.json").read_text())
    for target in walk(grafana["panels"], "targets"):
        for t in target:
            used.add(t["timeField"])
            used |= query_fields(t["query"])
            used |= {a["field"] for a in t["bucketAggs"] + t["metrics"] if "field" in a}
    for organize in walk(grafana["panels"], "includeByName"):
        used |= set(organize)
    kibana = [
        json.loads(line) for line in (DASHBOARDS / "kibana-access-records.ndjson").read_text().splitlines()
    ]
    for o in kibana:
        a = o["attributes"]
        if o["type"] == "index-pattern":
            assert a["title"] == "meshscope-access-*"
            used.add(a["timeFieldName"])
        used |= set(a.get("columns", [])) | {s[0] for s in a.get("sort", [])}
        if "visState" in a:
            used |= set(walk(json.loads(a["visState"]), "field"))
        for ss in walk(a, "searchSourceJSON"):
            used |= query_fields(json.loads(ss).get("query", {}).get("query", ""))
    assert {"@timestamp", "upstream_cluster", "response_code", "retried"} <= used
    assert used <= mapped, used - mapped


def test_query_field_extraction():
    assert query_fields("response_code:[500 TO 599] OR retried:true") == {"response_code", "retried"}
    assert query_fields("response_code >= 500") == {"response_code"}
    assert query_fields("_exists_:response_flags") == {"response_flags"}


PROM_RULES = DASHBOARDS / "prometheus-rules.yaml"


def promtool() -> str:
    from tests.pipelines.ops_servers import need_tool

    return need_tool("promtool")


def test_prometheus_rules_pass_promtool_check():
    out = subprocess.run([promtool(), "check", "rules", str(PROM_RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 2 rules found" in out.stdout


def test_prometheus_rules_mirror_the_default_rules():
    """Same names, severities, windows and thresholds as pipelines/default_rules.yaml."""
    from meshscope.pipelines import load_rules

    prom = {r["alert"]: r for g in yaml.safe_load(PROM_RULES.read_text())["groups"] for r in g["rules"]}
    defaults = load_rules()
    assert set(prom) == {r.name for r in defaults}
    metric = {5: "meshscope_responses_5xx_total", "retried": "meshscope_requests_retried_total"}
    for rule in defaults:
        p = prom[rule.name]
        assert p["labels"]["severity"] == rule.severity
        assert rule.type == "spike" and rule.spike_type == "up" and rule.threshold_ref == 0
        window = f"{rule.timeframe / 60:g}m"
        name = metric[5] if rule.filter.get("status_class") == 5 else metric["retried"]
        expr = " ".join(p["expr"].split())
        assert f"increase({name}[{window}])) >= {rule.threshold_cur:g}" in expr
        reference = f"increase({name}[{window}] offset {window})"
        assert f">= {rule.spike_height:g} * sum by ({rule.query_key}) ({reference})" in expr


def _series(cluster: str, values: str, metric: str = "meshscope_responses_5xx_total", instance: str = "a"):
    return {"series": f'{metric}{{upstream_cluster="{cluster}", instance="{instance}"}}', "values": values}


def _expected(rule: str, cluster: str, severity: str) -> dict:
    prom = {r["alert"]: r for g in yaml.safe_load(PROM_RULES.read_text())["groups"] for r in g["rules"]}
    annotations = {k: v.replace("{{ $labels.upstream_cluster }}", cluster)
                   for k, v in prom[rule]["annotations"].items()}
    return {"exp_labels": {"severity": severity, "upstream_cluster": cluster}, "exp_annotations": annotations}


def test_prometheus_rules_fire_like_the_engine(tmp_path):
    """promtool test rules: a burst of 30 5xx on a quiet cluster fires; a steady 5xx rate, a burst below
    threshold_cur and a cluster younger than the reference window do not; two workers' counts add up;
    the alert resolves once the burst leaves the window."""
    tests = {
        "rule_files": [str(PROM_RULES)],
        "evaluation_interval": "10s",
        "tests": [{
            "interval": "10s",
            "input_series": [
                _series("catalog", "0x12 30x12"),  # quiet for 2 min, then a burst of 30 5xx
                _series("webapp", "0+5x25"),  # 30 a minute, every minute: no spike
                _series("tiny", "0x12 6x12"),  # a burst below threshold_cur (10)
                _series("split", "0x12 6x12", instance="a"),  # two index workers: 6 + 6 ≥ 10
                _series("split", "0x12 6x12", instance="b"),
                _series("young", "_x11 0 30x12"),  # born at 1m50s: no whole reference window yet
                _series("inventory", "0x12 20x12", metric="meshscope_requests_retried_total"),
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "upstream-5xx-spike", "exp_alerts": []},
                {"eval_time": "2m30s", "alertname": "upstream-5xx-spike",
                 "exp_alerts": [_expected("upstream-5xx-spike", "catalog", "critical"),
                                _expected("upstream-5xx-spike", "split", "critical")]},
                {"eval_time": "2m30s", "alertname": "upstream-retry-spike",
                 "exp_alerts": [_expected("upstream-retry-spike", "inventory", "warning")]},
                {"eval_time": "3m50s", "alertname": "upstream-5xx-spike", "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
