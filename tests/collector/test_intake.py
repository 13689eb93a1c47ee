"""Record sanity at intake: times outside the window, request ids the lookup cannot find, oversized
fields and messages; and a stored value no reader can crash on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from envoy.service.accesslog.v3 import als_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.collector.access_entries import LogSource, message_records
from meshscope.collector.intake import IntakeCheck, IntakeLimits
from meshscope.collector.zipkin_spans import spans_from_json

from meshscope.model import AccessRecord
from tests.collector.als_messages import http_message

SOURCE = LogSource("node-a", "gw", "meshscope")
ROOT = Path(__file__).resolve().parents[2]
NOW = 2_000_000_000.0


def _record(t: float = NOW, **changes) -> AccessRecord:
    r = message_records(http_message(1), SOURCE)[0]
    r.start_time = t
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def _check(**limits) -> tuple[IntakeCheck, list]:
    counted: list = []
    return IntakeCheck(IntakeLimits(**limits), count=lambda p, a, n: counted.append((p, a, n)),
                       clock=lambda: NOW), counted


def test_times_outside_the_window_are_clamped_with_a_note_and_counted():
    check, counted = _check()
    ahead, behind, fine = _record(NOW + 10 * 365 * 86400), _record(NOW - 31 * 86400), _record(NOW - 60)
    kept = check.apply([ahead, behind, fine], "http")
    assert kept == [ahead, behind, fine]
    assert ahead.start_time == NOW + 3600 and behind.start_time == NOW - 30 * 86400
    assert "outside the intake window" in ahead.notes[0] and str(NOW + 10 * 365 * 86400) in ahead.notes[0]
    assert fine.start_time == NOW - 60 and fine.notes == []
    assert counted == [("http", "time_ahead_clamped", 1), ("http", "time_behind_clamped", 1)]


def test_reject_policy_drops_them_and_a_nan_time_is_outside_too():
    check, counted = _check(time_policy="reject", max_ahead=60)
    kept = check.apply([_record(NOW + 61), _record(float("nan")), _record(NOW)], "http")
    assert [r.start_time for r in kept] == [NOW]
    assert [c[1] for c in counted] == ["time_ahead", "time_behind"]
    with pytest.raises(ValueError, match="clamp"):
        IntakeLimits(time_policy="drop")


@pytest.mark.parametrize("rid", ["a/b", "x" * 201])
def test_request_ids_the_lookup_cannot_find_become_a_note(rid):
    check, counted = _check()
    [r] = check.apply([_record(request_id=rid)], "http")
    assert r.request_id is None and "request id not kept" in r.notes[0]
    assert counted == [("http", "request_id", 1)]
    assert check.apply([_record(request_id="x" * 200)], "http")[0].request_id == "x" * 200


def test_oversized_fields_are_cut_and_oversized_entries_rejected():
    check, counted = _check(max_field=1000, max_entry=2500)
    [cut] = check.apply([_record(path="/" + "p" * 5000)], "http")
    assert len(cut.path) == 1000 and "path cut from 5001 to 1000" in cut.notes[0]
    big = _record(path="/" + "p" * 999, user_agent="u" * 999, x_forwarded_for="f" * 999)
    assert check.apply([big], "http") == []
    assert ("http", "entry_too_large", 1) in counted


_TIMES = st.sampled_from([NOW, NOW - 60, NOW + 3600, NOW + 3601, NOW - 30 * 86400 - 1, float("nan"),
                          float("inf"), float("-inf"), 0.0])
_RIDS = st.sampled_from([None, "", " ", "a/b", "x" * 200, "x" * 201, "a8a0f1d2-1234-4567-8abc-1234567890ab"])
_TEXTS = st.sampled_from([None, "", "/p", "p" * 66, "p" * 67, "p" * 1000, "p" * 1001])


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(st.tuples(_TIMES, _RIDS, _TEXTS, _TEXTS), min_size=1, max_size=6),
       history=st.booleans(), policy=st.sampled_from(["clamp", "reject"]))
def test_the_whole_batch_test_agrees_with_the_look_at_each_record(batch, history, policy):
    """apply() passes a batch untouched after a few whole-batch tests, and looks at each record only
    when one may need it: what it keeps, fixes, notes and counts is what the look at each gives."""
    results = []
    for each in (False, True):
        check, counted = _check(max_field=1000, max_entry=2500, time_policy=policy)
        records = [_record(t, request_id=rid, path=path, user_agent=agent) for t, rid, path, agent in batch]
        if each:
            low = float("-inf") if history else NOW - 30 * 86400
            kept = check.apply_each(records, "http", low, NOW + 3600)
        else:
            kept = check.apply(records, "http", history=history)
        results.append(([orjson.dumps(r) for r in kept], counted))
    assert results[0] == results[1]


def test_spans_get_the_same_rules():
    check, counted = _check(max_field=100)
    body = (f'[{{"traceId": "{1:016x}", "id": "{1:016x}", "timestamp": {int((NOW + 86400) * 1e6)}, '
            f'"tags": {{"guid:x-request-id": "a/b", "http.url": "{"u" * 500}"}}}}]').encode()
    [span] = check.apply(spans_from_json(body), "zipkin_json")
    assert span.timestamp == int((NOW + 3600) * 1e6)
    assert "guid:x-request-id" not in span.tags and len(span.tags["http.url"]) == 100
    note = span.tags["meshscope.intake"]
    assert "clamped" in note and "request id not kept" in note
    assert {c[1] for c in counted} == {"time_ahead_clamped", "request_id", "field_cut"}


async def test_the_running_collector_clamps_and_counts(running, access_reader):
    collector, _ = running
    m = http_message(2, start=7)
    m.http_logs.log_entry[0].common_properties.start_time.seconds = int(time.time()) + 10 * 365 * 86400
    m.http_logs.log_entry[1].common_properties.start_time.seconds = int(time.time())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.als_port}") as channel:
        await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter([m]), timeout=10)
    records = await access_reader.wait_for(2)
    assert max(r.start_time for r in records) <= time.time() + 3600
    assert any("outside the intake window" in n for r in records for n in r.notes)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{collector.zipkin_port}/metrics")).text
    assert 'meshscope_collector_intake_total{action="time_ahead_clamped",protocol="http"} 1.0' in metrics


async def _stream_with_a_big_message(collector, path_bytes: int) -> grpc.RpcError:
    """Three entries, then one message carrying a path of ``path_bytes``: the error the stream ends with."""
    big = http_message(1, first=False, start=50)
    big.http_logs.log_entry[0].request.path = "/" + "x" * path_bytes
    async with grpc.aio.insecure_channel(f"127.0.0.1:{collector.als_port}",
                                         options=[("grpc.max_send_message_length", -1)]) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter([http_message(3), big]),
                                                                              timeout=10)
    return failed.value


async def test_a_message_past_the_limit_fails_its_stream(running, access_reader):
    """The default limit is 4 MiB (Envoy flushes at 16 KiB): a bigger message is refused by gRPC
    before it is held, and the stream's earlier messages still count."""
    collector, _ = running
    failed = await _stream_with_a_big_message(collector, 5 * 1024 * 1024)
    assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds the collector's limit" in failed.details()
    assert len(await access_reader.wait_for(3)) == 3
    await asyncio.sleep(0.2)
    assert len(access_reader.records) == 3
    # counted, and named per proxy in the health body (the loss notice)
    assert collector.health()["access_messages_too_large"] == {"node-a": 1}
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{collector.zipkin_port}/metrics")).text
    assert 'meshscope_collector_rejected_total{protocol="als",reason="too_large"} 1.0' in metrics


async def test_a_message_past_the_grpc_ceiling_fails_its_stream_before_it_is_held(running, access_reader):
    """Past twice the limit gRPC itself refuses the message before the collector holds it (the memory
    bound): the handler only sees the stream end, so the cut is counted from gRPC's own call counters
    (channelz), on /metrics and in the health body; the stream's earlier messages still count."""
    collector, _ = running
    assert collector.streams_cut_by_grpc() == 0
    failed = await _stream_with_a_big_message(collector, 9 * 1024 * 1024)
    assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(await access_reader.wait_for(3)) == 3
    assert collector.health()["access_messages_too_large"] == {}  # the handler never saw the message
    await _failed_calls(collector, 1)
    assert collector.health()["access_streams_cut_by_grpc"] == 1
    # a refusal the handler makes itself is counted once, not again as a cut
    await _stream_with_a_big_message(collector, 5 * 1024 * 1024)
    await _failed_calls(collector, 2)
    assert collector.health()["access_messages_too_large"] == {"node-a": 1}
    assert collector.health()["access_streams_cut_by_grpc"] == 1


async def _failed_calls(collector, n: int) -> None:
    """Until /metrics shows ``n`` failed access-log calls (the gRPC core counts a call as it is torn down)."""
    line = f'meshscope_collector_grpc_calls_total{{outcome="failed",server="als"}} {float(n)}'
    async with httpx.AsyncClient() as client:
        for _ in range(50):
            metrics = (await client.get(f"http://127.0.0.1:{collector.zipkin_port}/metrics")).text
            if line in metrics:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"no {line!r} in /metrics: {[m for m in metrics.splitlines() if 'grpc_calls' in m]}")


def test_records_command_survives_a_year_287168_entry(tmp_path):
    """A value stored before intake checked times (or written by another tool) must not crash a reader."""
    from meshscope.pipelines.store.sqlite import SqliteStore

    from meshscope.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")

    async def write() -> None:
        store = SqliteStore(settings)
        await store.start()
        await store.write([_record(9_000_000_000_000.0, request_id="far-future"), _record(time.time())])
        await store.stop()

    asyncio.run(write())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHSCOPE_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "meshscope.cli", "records"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "far-future" in out.stdout and "out of range" in out.stdout
    assert "Traceback" not in out.stderr


def test_a_batch_mixing_kinds_is_looked_at_record_by_record():
    """The whole-batch test takes only batches of exactly AccessRecords (RowShape.widest refuses any
    other type): a Span among them still gets its own rules."""
    check, counted = _check()
    body = f'[{{"traceId": "{1:016x}", "id": "{1:016x}", "timestamp": {int((NOW + 86400) * 1e6)}}}]'.encode()
    [span] = spans_from_json(body)
    kept = check.apply([_record(NOW), span], "mixed")
    assert kept[1].timestamp == int((NOW + 3600) * 1e6) and counted == [("mixed", "time_ahead_clamped", 1)]
