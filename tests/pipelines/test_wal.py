"""The in-process bus's write-ahead log on disk: one line per published batch, logs of earlier versions
(one record per line) still read, a damaged line costing only its own records, tidied after commits."""

from __future__ import annotations

import asyncio

import orjson
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.pipelines.bus.wal import TIDY_SECONDS

from meshscope.model import AccessRecord, Span
from tests.pipelines.traffic import access


def _records(start: int, n: int) -> list[AccessRecord]:
    return [access(i, t=1_700_000_000 + i, tag="r") for i in range(start, start + n)]


def _rid(i: int) -> str:
    return f"r-{i:08d}"


async def _all(bus: MemoryBus, group: str = "g") -> list[AccessRecord]:
    consumer = bus.consume("access", group)
    seen: list[AccessRecord] = []
    try:
        while True:
            try:
                batch = await asyncio.wait_for(anext(consumer), 0.3)
            except TimeoutError:
                return seen
            seen += batch.records
    finally:
        await consumer.aclose()


async def test_a_published_batch_is_one_line_read_back_in_order(tmp_path):
    bus = MemoryBus(wal_dir=tmp_path)
    await bus.publish("access", _records(0, 3))
    await bus.publish("access", _records(3, 2))
    await bus.stop()
    lines = b"".join(p.read_bytes() for p in sorted((tmp_path / "access").glob("*.log"))).splitlines()
    assert [line.split(b" ", 1)[0] for line in lines] == [b"3", b"2"]
    again = MemoryBus(wal_dir=tmp_path)
    assert await _all(again) == _records(0, 5)
    await again.stop()


async def test_spans_with_their_tags_and_endpoints_come_back_equal(tmp_path):
    spans = [Span(trace_id=f"{i:032x}", span_id=f"{i:016x}", name="ingress",
                  timestamp=1_700_000_000_000_000 + i,
                  local_endpoint={"serviceName": "gw", "ipv4": "10.0.0.1"},
                  annotations=[{"timestamp": 1, "value": "cs"}],
                  tags={"guid:x-request-id": f"r-{i}", "http.status_code": "200"}) for i in range(3)]
    bus = MemoryBus(wal_dir=tmp_path)
    await bus.publish("spans", spans)
    await bus.stop()
    again = MemoryBus(wal_dir=tmp_path)
    consumer = again.consume("spans", "g")
    assert (await anext(consumer)).records == spans
    await consumer.aclose()
    await again.stop()


async def test_lines_of_record_objects_and_of_one_record_each_are_still_read(tmp_path):
    """What earlier versions wrote: a bus upgraded over an unconsumed log loses nothing."""
    (tmp_path / "access").mkdir()
    old = _records(0, 3)
    (tmp_path / "access" / f"{0:020d}.log").write_bytes(b"".join(r.to_json() + b"\n" for r in old)
                                                         + b"2 " + orjson.dumps(_records(3, 2)) + b"\n")
    bus = MemoryBus(wal_dir=tmp_path)
    await bus.publish("access", _records(5, 2))  # new lines follow in a segment of their own
    assert await _all(bus) == _records(0, 7)
    await bus.stop()


async def test_a_damaged_line_costs_its_own_records_and_keeps_the_offsets(tmp_path):
    (tmp_path / "access").mkdir()
    good = [orjson.dumps(_records(0, 2)), orjson.dumps(_records(5, 1))]
    bad_record = orjson.dumps([{"start_time": 1.0, "node_id": "n"}, {"no": "start time"}])
    (tmp_path / "access" / f"{0:020d}.log").write_bytes(
        b"2 " + good[0] + b"\n"
        + b"2 [{\"id\": \"cut short\n"  # a line whose JSON is damaged: its two records are skipped
        + b"2 " + bad_record + b"\n"  # one record of the line does not build: that one alone
        + b"1 " + good[1] + b"\n")
    bus = MemoryBus(wal_dir=tmp_path)
    got = await _all(bus)
    assert [r.request_id for r in got] == [_rid(0), _rid(1), None, _rid(5)]
    assert bus.wal.skipped == 3
    assert bus._topics["access"].end == 7  # every line's count kept: later offsets stay where they were
    await bus.stop()


async def test_commits_are_written_and_consumed_segments_deleted_soon_after(tmp_path):
    bus = MemoryBus(wal_dir=tmp_path)
    await bus.publish("access", _records(0, 4))
    consumer = bus.consume("access", "indexer", max_batch=3)
    first = await anext(consumer)
    await first.commit()
    await asyncio.sleep(TIDY_SECONDS * 3)
    assert orjson.loads((tmp_path / "access" / "offsets.json").read_bytes()) == {"indexer": 3}
    assert list((tmp_path / "access").glob("*.log"))  # one record not consumed yet: the segment stays
    rest = await anext(consumer)
    await rest.commit()
    await consumer.aclose()
    await asyncio.sleep(TIDY_SECONDS * 3)
    assert orjson.loads((tmp_path / "access" / "offsets.json").read_bytes()) == {"indexer": 4}
    assert not list((tmp_path / "access").glob("*.log"))
    await bus.stop()


async def test_stop_writes_the_offsets_of_commits_not_yet_tidied(tmp_path):
    bus = MemoryBus(wal_dir=tmp_path)
    await bus.publish("access", _records(0, 4))
    consumer = bus.consume("access", "indexer", max_batch=2)
    await (await anext(consumer)).commit()
    await consumer.aclose()
    await bus.stop()  # at once, inside the tidy-up delay
    again = MemoryBus(wal_dir=tmp_path)
    assert [r.request_id for r in await _all(again, "indexer")] == [_rid(2), _rid(3)]
    await again.stop()


async def test_no_tidy_up_runs_after_stop(tmp_path):
    """A tidy-up handed to a thread before stop() but run after it (a thread is not cancelled) writes
    nothing: stop() wrote the latest offsets and deleted the consumed segments itself."""
    bus = MemoryBus(wal_dir=tmp_path)
    await bus.publish("access", _records(0, 4))
    consumer = bus.consume("access", "indexer", max_batch=4)
    await (await anext(consumer)).commit()
    await consumer.aclose()
    wal = bus.wal
    files = wal._files("access")
    late = wal._consumed(files, {"indexer": 4})  # handed to a thread, as _tidy_soon does
    files.unlinking.extend(late)
    await bus.stop()
    offsets = tmp_path / "access" / "offsets.json"
    assert orjson.loads(offsets.read_bytes()) == {"indexer": 4}
    assert not list((tmp_path / "access").glob("*.log"))
    offsets.unlink()
    wal._tidy(files, {"indexer": 0}, late)  # what that thread would run now
    assert not offsets.exists() and not list((tmp_path / "access").glob("*.tmp"))


def test_a_batch_of_one_type_is_columns_and_rows_a_mixed_one_a_list():
    """The line's two forms: columns + rows for records of one type (read back through the record
    type), a list of record objects when another type is mixed in (RowShape.rows refuses it)."""
    from meshscope.pipelines.bus.wal import _encode, _read_line

    records = _records(0, 3)
    count, _, body = b"".join(_encode(records)).rstrip(b"\n").partition(b" ")
    assert count == b"3" and set(orjson.loads(body)) == {"columns", "rows"}
    assert _read_line(b"".join(_encode(records)).rstrip(b"\n"), AccessRecord) == records
    span = Span(trace_id="0" * 32, span_id="0" * 16, name="x")
    count, _, body = b"".join(_encode([records[0], span])).rstrip(b"\n").partition(b" ")
    assert count == b"2" and isinstance(orjson.loads(body), list) and len(orjson.loads(body)) == 2


def test_a_group_is_written_whole_through_short_writes_and_more_chunks_than_one_writev_takes(
        tmp_path, monkeypatch):
    """``_write_all`` writes a group's chunks without joining them: more chunks than one writev call
    takes (IOV_MAX), and a kernel that writes fewer bytes than asked (a short write ending inside a
    chunk, as a signal or a nearly full disk gives) still leave exactly the chunks' bytes, in order."""
    import os

    from meshscope.pipelines.bus import wal

    chunks = [b"%d " % i + bytes([65 + i % 26]) * (i % 300) + b"\n" for i in range(wal._IOV_MAX * 2 + 7)]
    path = tmp_path / "seg"
    with open(path, "wb", buffering=0) as f:
        wal._write_all(f.fileno(), list(chunks))
    assert path.read_bytes() == b"".join(chunks)
    real, calls = os.writev, []

    def short_writev(fd, buffers):  # the real call, asked for at most 1,000 bytes at a time
        calls.append(len(buffers))
        out, left = [], 1000
        for b in buffers:
            if left <= 0:
                break
            out.append(memoryview(b)[:left])
            left -= len(out[-1])
        return real(fd, out)

    monkeypatch.setattr(wal.os, "writev", short_writev)
    with open(path, "wb", buffering=0) as f:
        wal._write_all(f.fileno(), list(chunks))
    assert path.read_bytes() == b"".join(chunks) and len(calls) > len(b"".join(chunks)) // 1000
