"""Bound beyond loopback, every endpoint but health needs the bearer token; no token, no start."""

from __future__ import annotations

import pytest

from meshscope.api import create_app
from meshscope.api.security import is_loopback
from meshscope.errors import UserError
from tests.api.conftest import serve, settings_for

TOKEN = "s3cret-token-for-tests"
PATHS = [
    "/api/records",
    "/api/alerts",
    "/api/proxies",
    "/api/pcaps",
    "/api/v2/services",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/api/traces/abc",
    "/api/pcaps/" + "0" * 32,
    "/ui",
]


def test_loopback_detection():
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "localhost", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com"]))


def test_refuses_to_start_beyond_loopback_without_token(data_dir):
    with pytest.raises(UserError, match="api_token"):
        create_app(settings_for(data_dir, host="0.0.0.0"))


def test_token_required_beyond_loopback(data_dir):
    # the app believes it is exposed (settings.host); the test still serves it on loopback only
    running = serve(settings_for(data_dir, host="0.0.0.0", api_token=TOKEN))
    try:
        with running.client() as c:
            assert c.get("/healthz").json()["status"] == "ok"
            for path in PATHS:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                    r = c.get(path, headers=headers)
                    assert r.status_code == 401, (path, headers, r.status_code)
                    assert r.json() == {"detail": "missing or wrong bearer token"}
            assert c.post("/api/pcaps", content=b"\xd4\xc3\xb2\xa1" * 10).status_code == 401
            assert not any((data_dir / "pcaps").iterdir())  # nothing stored for an unauthenticated upload
            ok = {"Authorization": f"Bearer {TOKEN}"}
            assert c.get("/api/records", headers=ok).status_code == 200
            assert c.get("/metrics", headers=ok).status_code == 200
            # the page's shell (code, no data) loads without the token, so a browser can ask for it
            assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
            assert c.get("/static/nope.js").status_code == 404
    finally:
        running.stop()
