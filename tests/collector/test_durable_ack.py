"""An acknowledgement means the records are on disk: the in-process bus's write-ahead log, torn writes on a
full disk, backpressure and readiness, and the real processes killed after acknowledging."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from envoy.service.accesslog.v3 import als_pb2_grpc
from meshscope.collector.access_entries import LogSource, message_records
from meshscope.collector.spool import Spool
from meshscope.pipelines.bus.base import BusUnavailable
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.pipelines.bus.wal import WalLocked

from tests.collector.als_messages import http_message
from tests.collector.small_disk import fill, small_tmpfs
from tests.conftest import free_port

SOURCE = LogSource("node-a", "gw", "meshscope")
MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _batch(start: int, n: int = 10):
    return message_records(http_message(n, start=start), SOURCE)


async def _drain(bus: MemoryBus, topic: str, group: str, commit: int | None = None, timeout: float = 1.0):
    """Request ids of every record the group gets (committing the first ``commit`` batches)."""
    seen: list[str] = []
    consumer = bus.consume(topic, group)
    try:
        n = 0
        while True:
            try:
                batch = await asyncio.wait_for(anext(consumer), timeout)
            except TimeoutError:
                return seen
            seen += [r.request_id for r in batch.records]
            if commit is None or n < commit:
                await batch.commit()
            n += 1
    finally:
        await consumer.aclose()


async def test_acknowledged_records_survive_a_new_bus_and_committed_ones_are_trimmed(tmp_path):
    bus = MemoryBus(wal_dir=tmp_path / "bus")
    for start in (0, 10, 20):
        await bus.publish("access", _batch(start))
    consumer = bus.consume("access", "indexer", max_batch=10)
    first = await anext(consumer)
    await first.commit()  # 10 stored; 20 acknowledged but not yet stored
    await consumer.aclose()
    await bus.stop()  # or a crash: nothing more is written at stop

    again = MemoryBus(wal_dir=tmp_path / "bus")
    seen = await _drain(again, "access", "indexer")
    assert seen == [f"req-{i}" for i in range(10, 30)]  # redelivered from disk, in order, none twice
    assert not list((tmp_path / "bus" / "access").glob("*.log"))  # all committed: segments deleted
    await again.stop()


async def test_a_second_process_cannot_share_the_log(tmp_path):
    bus = MemoryBus(wal_dir=tmp_path / "bus")
    try:
        code = ("from meshscope.pipelines.bus.memory import MemoryBus\n"
                f"MemoryBus(wal_dir={str(tmp_path / 'bus')!r})")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "in use by another meshscope process" in out.stderr
    finally:
        await bus.stop()
    MemoryBus(wal_dir=tmp_path / "bus").wal.close()  # free again once the holder closed it
    with pytest.raises(WalLocked):
        holder = MemoryBus(wal_dir=tmp_path / "bus")
        try:
            MemoryBus(wal_dir=tmp_path / "bus")
        finally:
            holder.wal.close()


@pytest.mark.root
async def test_log_on_a_full_disk_refuses_then_loses_no_later_record(tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        bus = MemoryBus(wal_dir=disk / "bus")
        await bus.publish("access", _batch(0))
        filler = fill(disk, leave=2000)  # room for part of a batch only: the write tears
        with pytest.raises(BusUnavailable, match="No space left"):
            await bus.publish("access", _batch(10, 40))
        assert bus.failure and "No space left" in bus.failure
        filler.unlink()
        await bus.publish("access", _batch(100))
        assert bus.failure is None
        await bus.stop()
        again = MemoryBus(wal_dir=disk / "bus")
        seen = await _drain(again, "access", "g")
        await again.stop()
    assert seen == [f"req-{i}" for i in (*range(10), *range(100, 110))]


@pytest.mark.root
def test_spool_on_a_full_disk_cuts_the_torn_line(tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        spool = Spool(disk / "spool")
        spool.append("access", _batch(0))
        filler = fill(disk, leave=2000)
        with pytest.raises(OSError):
            spool.append("access", _batch(10, 40))
        filler.unlink()
        spool.append("access", _batch(100))
        spool.close()
        reread = Spool(disk / "spool")
        seen = []
        while (batch := reread.read()) is not None:
            seen += [r.request_id for r in batch.records]
            reread.commit(batch)
    assert seen == [f"req-{i}" for i in (*range(10), *range(100, 110))]
    assert reread.skipped == 0  # no line was glued to a torn one


# ---- the real processes -------------------------------------------------------------------------
def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _send_access(port: int, start: int, n: int, per_message: int = 50) -> None:
    messages = [http_message(min(per_message, n - i), first=(i == 0), start=start + i)
                for i in range(0, n, per_message)]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter(messages), timeout=20)


def _spans(n: int, start: int = 0) -> bytes:
    return ("[" + ",".join(f'{{"traceId": "{i + 1:016x}", "id": "{i + 1:016x}", "name": "get", '
                           f'"timestamp": {int(time.time() * 1e6)}, "kind": "SERVER"}}'
                           for i in range(start, start + n)) + "]").encode()


def _config(tmp_path: Path, data_dir: Path) -> tuple[Path, dict]:
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    config = tmp_path / f"meshscope-{len(list(tmp_path.glob('meshscope-*.yaml')))}.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(data_dir)}))
    return config, ports


def _start(config: Path, *args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*MESHSCOPE, "--config", str(config), *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            cwd=ROOT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _stored(api: int) -> set[str]:
    """Request ids of the stored access records (every page)."""
    ids: set[str] = set()
    cursor = None
    while True:
        page = httpx.get(f"http://127.0.0.1:{api}/api/records", timeout=10,
                         params={"limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
        ids |= {item["request_id"] for item in page["items"]}
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


@pytest.mark.slow
@pytest.mark.parametrize("first", ["up", "collector"])
def test_acknowledged_then_killed_is_stored_by_the_next_up(tmp_path, first):
    """What `up` or a lone `collector` (in-process bus) acknowledged, then SIGKILL: the next `up` on the
    same data directory stores every record."""
    data = tmp_path / "data"
    config, ports = _config(tmp_path, data)
    args = ["up", "--no-proxy"] if first == "up" else ["collector"]
    proc = _start(config, *args, log=tmp_path / "first.log")
    try:
        _wait(lambda: httpx.get(f"http://127.0.0.1:{ports['zipkin_port']}/healthz", timeout=1)
              .status_code == 200, 60, "the collector")
        _send_access(ports["als_port"], 0, 600)
        assert httpx.post(f"http://127.0.0.1:{ports['zipkin_port']}/api/v2/spans", content=_spans(50),
                          timeout=10).status_code == 202
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        _stop(proc)
    config2, ports2 = _config(tmp_path, data)
    again = _start(config2, "up", "--no-proxy", log=tmp_path / "again.log")
    try:
        expected = {f"req-{i}" for i in range(600)}
        _wait(lambda: _stored(ports2["api_port"]) >= expected, 60,
              f"the {len(expected)} acknowledged access records in the store")
        spans = _wait(lambda: httpx.get(f"http://127.0.0.1:{ports2['api_port']}/api/v2/traces",
                                        params={"limit": 100}, timeout=10).json(), 30, "the spans")
        assert sum(len(t) for t in spans) == 50
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0
    finally:
        _stop(again)


@pytest.mark.root
@pytest.mark.slow
def test_full_disk_is_backpressure_and_not_ready_then_recovers(tmp_path):
    """`meshscope collector` on a full data disk: the gRPC stream fails, Zipkin answers 503, /readyz
    says why; once space is freed everything is accepted again and nothing refused was acknowledged."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        config, ports = _config(tmp_path, disk / "data")
        proc = _start(config, "collector", log=tmp_path / "collector.log")
        zipkin = f"http://127.0.0.1:{ports['zipkin_port']}"
        try:
            _wait(lambda: httpx.get(f"{zipkin}/readyz", timeout=1).status_code == 200, 60, "the collector")
            _send_access(ports["als_port"], 0, 100)
            filler = fill(disk)
            with pytest.raises(grpc.RpcError) as failed:
                _send_access(ports["als_port"], 1000, 500)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "No space left" in failed.value.details()
            refused = httpx.post(f"{zipkin}/api/v2/spans", content=_spans(20), timeout=10)
            assert refused.status_code == 503 and "No space left" in refused.text
            ready = httpx.get(f"{zipkin}/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["status"] == "not ready" and "No space left" in ready.json()["reason"]
            filler.unlink()
            _send_access(ports["als_port"], 2000, 100)
            assert httpx.post(f"{zipkin}/api/v2/spans", content=_spans(20), timeout=10).status_code == 202
            metrics = httpx.get(f"{zipkin}/metrics", timeout=5).text
            assert 'meshscope_collector_rejected_total{protocol="http",reason="disk"}' in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            _stop(proc)
        bus = MemoryBus(wal_dir=disk / "data" / "bus")
        seen = asyncio.run(_drain(bus, "access", "check"))
        bus.wal.close()
    acknowledged = {f"req-{i}" for i in (*range(100), *range(2000, 2100))}
    assert acknowledged <= set(seen)  # every acknowledged entry is on disk
    assert len(seen) == len(set(seen))


@pytest.mark.root
@pytest.mark.slow
def test_up_on_a_full_disk_says_not_ready_on_the_api(tmp_path):
    """Under `meshscope up` the API's probes carry the embedded collector's state: /readyz is 503 with
    the reason while records are refused for a full disk, and 200 again once space is freed."""
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        config, ports = _config(tmp_path, disk / "data")
        proc = _start(config, "up", "--no-proxy", log=tmp_path / "up.log")
        api = f"http://127.0.0.1:{ports['api_port']}"
        try:
            _wait(lambda: httpx.get(f"{api}/readyz", timeout=1).status_code == 200, 60, "the stack")
            assert httpx.get(f"{api}/healthz", timeout=5).json()["status"] == "ok"
            _send_access(ports["als_port"], 0, 100)
            filler = fill(disk)
            with pytest.raises(grpc.RpcError):
                _send_access(ports["als_port"], 1000, 500)
            ready = httpx.get(f"{api}/readyz", timeout=5)
            assert ready.status_code == 503, ready.text
            assert ready.json()["status"] == "not ready" and "No space left" in ready.json()["reason"]
            health = httpx.get(f"{api}/healthz", timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "not ready"
            filler.unlink()
            _send_access(ports["als_port"], 2000, 100)
            assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            _stop(proc)
