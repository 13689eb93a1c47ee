"""Schemathesis (v4 CLI) against the live API's OpenAPI schema: no 5xx, responses conform to the schema.

Two checks are left out, each for a stated reason: ``positive_data_acceptance`` (the schema cannot say
"the bytes must start with pcap magic", so schema-valid uploads are rightly refused with 415) and
``allow_header_conformance`` (Starlette's 405 names only the first route of a path in ``Allow``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, lab_records, serve, settings_for, wait_done, write_records

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_errors(data_dir, tmp_path):
    st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    settings = settings_for(data_dir, upload_max_bytes=100_000, upload_max_count=100)
    write_records(settings, lab_records())
    api = serve(settings)
    try:
        node, pod = lab_captures(tmp_path, RID, NOW)
        with httpx.Client(base_url=api.url) as c:
            up = c.post(
                "/api/pcaps",
                files=[("file", ("n.pcap", node.read_bytes())), ("file", ("p.pcap", pod.read_bytes()))],
            ).json()
            wait_done(c, up["id"])
        schema = httpx.get(api.url + "/openapi.json").json()
        for path, item in schema["paths"].items():  # every operation declares a 200 response model
            for method, op in item.items():
                assert {"200", "202", "204"} & set(op["responses"]), (method, path)
        run = subprocess.run(
            [
                st,
                "run",
                api.url + "/openapi.json",
                "--max-examples",
                "25",
                "--seed",
                "7",
                "--request-timeout",
                "20",
                "--exclude-checks",
                "positive_data_acceptance,allow_header_conformance",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,  # schemathesis keeps its example database in the working directory
        )
        assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
        assert "19 selected" in run.stdout or "Operations:" in run.stdout
        with httpx.Client(base_url=api.url) as c:  # and the server is still serving
            assert c.get("/healthz").json()["status"] == "ok"
            assert c.get(f"/api/traces/{RID}").status_code == 200
    finally:
        api.stop()
