"""dashboards/: every file parses, every Prometheus metric a Grafana query names is exported by a running
API's /metrics, and every Elasticsearch field the Grafana and Kibana objects name is mapped by the
access-record index template (and is an AccessRecord field or one the store adds)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import httpx

from meshscope.model import AccessRecord
from tests.api.conftest import lab_records, write_records

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


def test_prometheus_metrics_exist(api):
    write_records(api.settings, lab_records())
    dash = json.loads((DASHBOARDS / "grafana-prometheus.json").read_text())
    exprs = list(walk(dash["panels"], "expr")) + [
        v["definition"] for v in dash["templating"]["list"] if "definition" in v
    ]
    wanted = {m for e in exprs for m in METRIC.findall(e)}
    assert {
        "meshscope_requests_total",
        "meshscope_responses_5xx_total",
        "meshscope_requests_retried_total",
    } <= wanted
    scraped = httpx.get(api.url + "/metrics").text
    exported = {line.split("{")[0].split(" ")[0] for line in scraped.splitlines() if line and line[0] != "#"}
    assert wanted <= exported, wanted - exported
    assert 'cluster="outbound|8080||webapp"' in scraped  # the label the dashboards group by


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
