"""The command line reads the same store: `meshscope trace`, `records`, `alerts`, and `api` refusing to
listen beyond loopback without a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from meshscope.reading import parse_time
from tests.api.conftest import NOW, RID, RID_GW, RID_SC, lab_records, settings_for, write_records


@pytest.fixture
def env(data_dir):
    write_records(settings_for(data_dir), lab_records())
    return os.environ | {"MESHSCOPE_DATA_DIR": str(data_dir)}


def meshscope(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meshscope.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_trace_text_json_and_svg(env, tmp_path):
    text = meshscope(env, "trace", RID_SC)
    assert text.returncode == 0, text.stderr
    assert f"request {RID}" in text.stdout and "hops (2)" in text.stdout and "spans (2)" in text.stdout
    assert "gateway" in text.stdout and "sidecar" in text.stdout
    out = tmp_path / "trace.svg"
    js = meshscope(env, "trace", RID_GW, "--json", "--svg", str(out))
    body = json.loads(js.stdout)
    assert [h["role"] for h in body["hops"]] == ["gateway", "sidecar"] and len(body["spans"]) == 2
    assert out.read_text().startswith("<svg")
    missing = meshscope(env, "trace", "nope")
    assert missing.returncode == 1 and "nothing known" in missing.stderr


def test_records_and_alerts(env):
    r = meshscope(
        env, "records", "--json", "--status-class", "2", "--authority", "shop.local", "--limit", "1"
    )
    body = json.loads(r.stdout)
    assert [x["request_id"] for x in body["items"]] == [RID_SC] and body["next_cursor"]
    nxt = json.loads(
        meshscope(
            env, "records", "--json", "--limit", "1", "--status-class", "2", "--cursor", body["next_cursor"]
        ).stdout
    )
    assert [x["request_id"] for x in nxt["items"]] == [RID_GW] and nxt["next_cursor"] is None
    text = meshscope(env, "records", "--start", "1h")
    assert text.returncode == 0 and text.stdout.count("shop.local/catalog") == 2
    assert meshscope(env, "records", "--start", "yesterday-ish").returncode == 2
    alerts = meshscope(env, "alerts", "--state", "firing")
    assert (
        "5xx-spike" in alerts.stdout and "upstream_cluster=catalog" in alerts.stdout and RID in alerts.stdout
    )
    assert json.loads(meshscope(env, "alerts", "--json", "--rule", "other").stdout) == {"items": []}


def test_api_refuses_exposed_bind_without_token(env):
    r = meshscope(env, "api", "--host", "0.0.0.0", "--port", "1")
    assert r.returncode == 2 and "api_token" in r.stderr and "Traceback" not in r.stderr


def test_parse_time():
    assert parse_time("1700000000.5") == 1700000000.5
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000
    assert parse_time("15m", now=NOW) == NOW - 900
