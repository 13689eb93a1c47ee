"""The in-process bus's write-ahead log: a publish is acknowledged only once its records are on disk.

One folder per topic holding segment files named by the offset of their first record, one line per
published batch: its record count, a space, and the batch as one JSON document, ``{"columns": [field
names], "rows": [[values], …]}`` (values by position: no key repeated per record, so less than half
the bytes and of orjson's time than an object per record; lines of one JSON record each, as earlier
versions wrote them, are still read). Appends are group-committed: batches that arrive while an
fsync runs share the next one, so durability costs one fsync per burst, not per batch. A failed
write (ENOSPC) is cut back to the last whole line and the segment is closed, so a torn line can never
swallow the next record; recovery drops a torn tail the same way. Segments every consumer group has
committed are deleted; the groups' committed offsets are kept beside them (not fsync'ed: losing them
only redelivers). A lock file keeps a second process off the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from meshscope.model import Record
from meshscope.model.rows import row_shape

log = logging.getLogger(__name__)

SEGMENT_BYTES = 16 * 1024 * 1024
TIDY_SECONDS = 0.1  # committed offsets are written, and consumed segments deleted, this long after


class WalLocked(Exception):
    """Another process holds the write-ahead log folder."""


class WalWriteFailed(OSError):
    """Records could not be made durable (disk full, I/O error): the caller must not acknowledge them."""


@dataclass(slots=True)
class Recovered:
    """What a topic's log held at open: records from offset ``base`` on, and each group's offset."""

    base: int
    records: list[Record | None]  # None: a damaged line (its offset is kept, the record is skipped)
    committed: dict[str, int]


@dataclass(slots=True)
class _Segment:
    start: int
    path: Path


@dataclass(slots=True)
class _TopicFiles:
    dir: Path
    segments: list[_Segment] = field(default_factory=list)
    end: int = 0  # offset after the last durable record
    writer: object = None  # open unbuffered file (FileIO) of the last segment, or None (next append rolls)
    pending: list[tuple[tuple[bytes, bytes], Sequence[Record], Callable, asyncio.Future]] = field(
        default_factory=list)
    flusher: asyncio.Task | None = None
    offsets: dict[str, int] | None = None  # groups' offsets committed since the last tidy-up
    latest: dict[str, int] | None = None  # the groups' last committed offsets (written at close)
    unlinking: list[Path] = field(default_factory=list)  # consumed segments handed to a tidy-up
    tidier: asyncio.Task | None = None


class WriteAheadLog:
    """Durable per-topic logs under ``directory``; ``append`` returns once the records are fsync'ed."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lock = open(self.dir / "LOCK", "a+b")  # noqa: SIM115 - held for the log's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise WalLocked(f"{self.dir} is in use by another meshscope process (the in-process bus's "
                            "write-ahead log); stop it or use another data directory") from exc
        self._topics: dict[str, _TopicFiles] = {}
        self.failure: str | None = None  # why the last append failed, until one succeeds
        self.skipped = 0  # damaged lines found at recovery
        # one tidy-up at a time: close() waits for one running in a thread, and none runs after it
        self._tidying = threading.Lock()
        self._closed = False

    # ---- open / recover ----------------------------------------------------------------------
    def recover(self, topic: str, record_type: type[Record]) -> Recovered:
        """Read a topic's surviving records (a torn tail is cut off) and its groups' offsets."""
        files = self._files(topic)
        committed = self._read_offsets(files.dir)
        records: list[Record | None] = []
        base = files.segments[0].start if files.segments else 0
        offset = base
        for seg in files.segments:
            if seg.start != offset:  # a gap or overlap cannot be trusted for offsets: renumber
                log.warning("write-ahead log %s starts at %d, expected %d", seg.path, seg.start, offset)
            data = seg.path.read_bytes()
            whole = data.rfind(b"\n") + 1
            if whole < len(data):
                log.warning("write-ahead log %s: torn tail of %d bytes dropped (never acknowledged)",
                            seg.path, len(data) - whole)
                with open(seg.path, "r+b") as f:
                    f.truncate(whole)
            for line in data[:whole].splitlines():
                got = _read_line(line, record_type)
                if isinstance(got, _Damaged):
                    log.error("write-ahead log %s offset %d: damaged line of %d records skipped: %s",
                              seg.path, offset, got.count, got.why)
                    got = [None] * got.count
                elif None in got:
                    log.error("write-ahead log %s offset %d: %d damaged records skipped", seg.path, offset,
                              got.count(None))
                self.skipped += got.count(None)
                records.extend(got)
                offset += len(got)
        files.end = offset
        start = min((v for v in committed.values() if base <= v <= offset), default=base)
        return Recovered(start, records[start - base:], {g: v for g, v in committed.items()
                                                         if base <= v <= offset})

    def _files(self, topic: str) -> _TopicFiles:
        files = self._topics.get(topic)
        if files is None:
            d = self.dir / topic
            d.mkdir(parents=True, exist_ok=True)
            segments = sorted((_Segment(int(p.stem), p) for p in d.glob("*.log") if p.stem.isdigit()),
                              key=lambda s: s.start)
            files = self._topics[topic] = _TopicFiles(d, segments)
        return files

    @staticmethod
    def _read_offsets(d: Path) -> dict[str, int]:
        try:
            data = orjson.loads((d / "offsets.json").read_bytes())
            return {str(k): int(v) for k, v in data.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    # ---- append (group commit) ---------------------------------------------------------------
    async def append(self, topic: str, records: Sequence[Record],
                     then: Callable[[Sequence[Record]], object] = lambda _: None) -> None:
        """Return once ``records`` are fsync'ed; WalWriteFailed if not. ``then(records)`` runs right
        after the fsync, in the order appends were called (the bus extends its memory copy there)."""
        files = self._files(topic)
        data = _encode(records)
        done = asyncio.get_running_loop().create_future()
        files.pending.append((data, records, then, done))
        if files.flusher is None or files.flusher.done():
            files.flusher = asyncio.create_task(self._flush(files), name=f"wal-flush-{topic}")
        await done

    async def _flush(self, files: _TopicFiles) -> None:
        while files.pending:
            group, files.pending = files.pending, []
            try:
                await asyncio.to_thread(self._write, files, [c for g in group for c in g[0]],
                                        sum(len(g[1]) for g in group))
            except OSError as exc:
                self.failure = f"cannot write the bus's write-ahead log in {self.dir}: {exc.strerror or exc}"
                for _, _, _, fut in group:
                    if not fut.done():
                        fut.set_exception(WalWriteFailed(exc.errno, self.failure))
                continue
            self.failure = None
            for _, records, then, fut in group:
                then(records)
                if not fut.done():
                    fut.set_result(None)

    def _write(self, files: _TopicFiles, chunks: list[bytes], count: int) -> None:
        """Write and fsync one group; on failure cut the segment back to its last whole line and close
        it, so the next append starts a clean segment."""
        if files.writer is None:
            seg = _Segment(files.end, files.dir / f"{files.end:020d}.log")
            files.writer = open(seg.path, "ab", buffering=0)  # noqa: SIM115 - kept open across appends
            files.segments.append(seg)
        f = files.writer
        good = f.tell()
        try:
            _write_all(f.fileno(), chunks)
            os.fsync(f.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                f.truncate(good)
            with contextlib.suppress(OSError):
                f.close()  # a close that fails to flush buffered bytes must not leave them behind
            with contextlib.suppress(OSError):
                os.truncate(files.segments[-1].path, good)
            files.writer = None
            if good == 0:
                with contextlib.suppress(OSError):
                    files.segments.pop().path.unlink()
            raise
        files.end += count
        if f.tell() >= self.segment_bytes:
            f.close()
            files.writer = None

    # ---- trimming ----------------------------------------------------------------------------
    def committed(self, topic: str, offsets: dict[str, int]) -> None:
        """Note the groups' offsets: within ``TIDY_SECONDS`` they are written beside the log and the
        segments below every one of them deleted, in one thread hop off the event loop (a rename or
        an unlink waits on the file system's journal while an fsync runs; a consumer that keeps up
        commits many times a second)."""
        files = self._files(topic)
        files.offsets = files.latest = dict(offsets)
        if files.tidier is None or files.tidier.done():
            files.tidier = asyncio.get_running_loop().create_task(self._tidy_soon(files),
                                                                  name=f"wal-tidy-{topic}")

    async def _tidy_soon(self, files: _TopicFiles) -> None:
        while files.offsets is not None:
            await asyncio.sleep(TIDY_SECONDS)
            offsets, files.offsets = files.offsets, None
            gone = self._consumed(files, offsets)
            files.unlinking.extend(gone)
            await asyncio.to_thread(self._tidy, files, offsets, gone)

    def _tidy(self, files: _TopicFiles, offsets: dict[str, int], gone: list[Path]) -> None:
        with self._tidying:
            if not self._closed:  # else close() did it, with the latest offsets
                _tidy(files.dir, offsets, gone)
                del files.unlinking[: len(gone)]

    @staticmethod
    def _consumed(files: _TopicFiles, offsets: dict[str, int]) -> list[Path]:
        """Take the segments below every group's offset off the log (their files to delete)."""
        floor = min(offsets.values(), default=0)
        segs, gone = files.segments, []
        while segs:
            last = len(segs) == 1
            if (files.end if last else segs[1].start) > floor:
                break
            if last:
                if files.flusher is not None and not files.flusher.done():
                    break  # a write may be under way into it
                if files.writer is not None:
                    files.writer.close()  # everything in it is consumed: the next append starts afresh
                    files.writer = None
            gone.append(segs.pop(0).path)
        return gone

    def close(self) -> None:
        """Let the log go: the groups' last offsets written and consumed segments deleted here,
        after a tidy-up running in a thread ends (none runs after this)."""
        with self._tidying:
            self._closed = True
            for files in self._topics.values():
                if files.tidier is not None:
                    files.tidier.cancel()
                if files.latest is not None:
                    _tidy(files.dir, files.latest, files.unlinking + self._consumed(files, files.latest))
                    files.offsets, files.unlinking = None, []
                if files.writer is not None:
                    with contextlib.suppress(OSError):
                        files.writer.close()
                    files.writer = None
        self._lock.close()


def _tidy(directory: Path, offsets: dict[str, int], consumed: list[Path]) -> None:
    """Write the groups' offsets (best effort: a lost offsets file only redelivers) and delete the
    consumed segments."""
    with contextlib.suppress(OSError):
        tmp = directory / "offsets.json.tmp"
        tmp.write_bytes(orjson.dumps(offsets))
        os.replace(tmp, directory / "offsets.json")
    for path in consumed:
        path.unlink(missing_ok=True)


@dataclass(slots=True)
class _Damaged:
    count: int  # records the line held (1 when even its count cannot be read)
    why: str


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Every chunk written in order with writev (a group's batches are not first joined into one
    copy: a burst's lines are megabytes, and copying them cost the collector cache misses)."""
    while chunks:
        done = os.writev(fd, chunks[:_IOV_MAX])
        i = 0
        while i < len(chunks) and done >= len(chunks[i]):
            done -= len(chunks[i])
            i += 1
        if i == 0 and done == 0:  # nothing written, no error: never loop on it
            raise OSError(errno.EIO, "writev wrote nothing")
        chunks = chunks[i:]
        if done:  # a short write ended inside a chunk
            chunks[0] = memoryview(chunks[0])[done:]


def _encode(records: Sequence[Record]) -> tuple[bytes, bytes]:
    """A batch as one log line, ``COUNT {"columns": […], "rows": […]}`` and a newline (records of other
    types mixed in, or a record of a single field: ``COUNT [{record}, …]``), as its head and body
    (written together by ``_write_all``, not copied into one bytes)."""
    shape = row_shape(type(records[0]))
    try:  # rows() refuses a record of another type
        rows = shape.rows(records) if len(shape.names) > 1 else None
    except TypeError:
        rows = None
    body = orjson.dumps(list(records) if rows is None else {"columns": shape.names, "rows": rows},
                        option=orjson.OPT_APPEND_NEWLINE)
    return b"%d " % len(records), body


def _read_line(line: bytes, record_type: type[Record]) -> list[Record | None] | _Damaged:
    """The records of one log line (``COUNT {columns, rows}``, ``COUNT [records]``, or one record
    object as older logs have it); a record of the line that does not build is None (skipped, its
    offset kept)."""
    if line[:1] == b"{":
        try:
            return [record_type.from_json(line)]
        except (ValueError, TypeError) as exc:
            return _Damaged(1, repr(exc))
    head, _, body = line.partition(b" ")
    try:
        count = int(head)
    except ValueError:
        return _Damaged(1, f"no record count at the start of the line: {line[:40]!r}")
    try:
        docs = orjson.loads(body)
    except ValueError as exc:
        return _Damaged(count, repr(exc))
    if isinstance(docs, dict):
        columns, docs = docs.get("columns"), docs.get("rows")
        if not isinstance(columns, list) or not isinstance(docs, list):
            return _Damaged(count, "no columns or rows")
        docs = [dict(zip(columns, row, strict=True)) if isinstance(row, list) and len(row) == len(columns)
                else None for row in docs]
    if not isinstance(docs, list) or len(docs) != count:
        return _Damaged(count, f"not {count} records")
    out: list[Record | None] = []
    for doc in docs:
        try:
            out.append(record_type.from_dict(doc))
        except (ValueError, TypeError, AttributeError):
            out.append(None)
    return out
