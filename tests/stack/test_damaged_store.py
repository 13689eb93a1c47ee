"""A damaged SQLite store: `meshscope up` stops with one line naming the file and what to do, never a
traceback; `--repair` keeps the damaged file aside and starts with what was readable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from meshscope.pipelines.store.sqlite import SqliteStore

from meshscope.model import AccessRecord
from meshscope.settings import Settings
from tests.conftest import free_port

pytestmark = [pytest.mark.slow]
MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _store_with_records(data: Path, n: int = 3000) -> Path:
    async def write() -> None:
        store = SqliteStore(Settings(data_dir=data))
        await store.start()
        now = time.time()
        await store.write([AccessRecord(start_time=now - i, request_id=f"r-{i}", path="/" + "p" * 200,
                                        node_id="n") for i in range(n)])
        await store.stop()

    asyncio.run(write())
    for suffix in ("-wal", "-shm"):  # checkpointed at stop: the file alone holds everything
        (data / f"meshscope.db{suffix}").unlink(missing_ok=True)
    return data / "meshscope.db"


def _up(tmp_path: Path, data: Path, *extra: str, wait: float = 60) -> tuple[subprocess.Popen, str, dict]:
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(data)}))
    proc = subprocess.Popen([*MESHSCOPE, "--config", str(config), "up", "--no-proxy", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc, str(config), ports


@pytest.mark.parametrize("damage", ["header", "pages"])
def test_damaged_store_is_one_line_then_repair_starts(tmp_path, damage):
    data = tmp_path / "data"
    db = _store_with_records(data)
    with open(db, "r+b") as f:
        if damage == "header":
            f.write(b"this is not sqlite" * 4)
        else:  # pages in the middle of the file
            f.seek(db.stat().st_size // 2)
            f.write(os.urandom(16384))
    proc, _, _ = _up(tmp_path, data)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("meshscope: ") and str(db) in last and "--repair" in last

    proc, _, ports = _up(tmp_path, data, "--repair")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{ports['api_port']}/api/records", params={"limit": 1000},
                                 timeout=5)
                if page.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.3)
        kept = len(page.json()["items"])
        if damage == "pages":
            assert kept > 0  # what was readable came along
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "repaired" in out or "nothing was readable" in out
    assert list(data.glob("meshscope.db.damaged-*"))
