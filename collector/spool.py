"""The collector's disk spool: append-only segment files holding records the bus could not take yet.

A segment is lines of ``topic<TAB>record-json``; each appended batch is fsync'ed before the caller
is told it is safe. Replay reads the oldest segment from a persisted position, so records come back
in the order they were spooled; a torn last line (a crash mid-write) is ignored, never half-read.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
from meshscope.pipelines.bus import RECORD_OF

from meshscope.model import Record

SEGMENT_BYTES = 16 * 1024 * 1024
log = logging.getLogger(__name__)


class SpoolFull(Exception):
    """The spool holds its maximum size: the caller must push back on its sender."""


@dataclass(slots=True)
class SpooledBatch:
    """Records read back from the spool, all of one topic, with where the read ended."""

    topic: str
    records: list[Record]
    segment: Path
    end: int  # byte offset just past the last line read


class Spool:
    """Segment files under one directory; bounded by ``max_bytes`` of not-yet-replayed data."""

    def __init__(self, directory: Path, max_bytes: int = 1024**3, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._writer = None
        self._writer_path: Path | None = None
        self._pending = sum(self._remaining(p) for p in self.segments())
        self.skipped = 0  # unreadable lines stepped over during replay

    # ---- bookkeeping -------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        """Segment files oldest first (names carry a zero-padded sequence number)."""
        return sorted(self.dir.glob("seg-*.log"))

    @staticmethod
    def _pos_file(segment: Path) -> Path:
        return segment.with_suffix(".pos")

    def _position(self, segment: Path) -> int:
        try:
            return int(self._pos_file(segment).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _remaining(self, segment: Path) -> int:
        return max(segment.stat().st_size - self._position(segment), 0)

    @property
    def pending_bytes(self) -> int:
        """Bytes written and not yet replayed."""
        return self._pending

    def __bool__(self) -> bool:
        return self._pending > 0

    # ---- writing -----------------------------------------------------------------------------
    def append(self, topic: str, records: list[Record]) -> int:
        """Append one batch and fsync it; SpoolFull when it would pass ``max_bytes``."""
        prefix = topic.encode() + b"\t"
        data = b"".join(prefix + orjson.dumps(r) + b"\n" for r in records)
        if self._pending and self._pending + len(data) > self.max_bytes:  # one batch alone always fits
            raise SpoolFull(f"spool full: {self._pending} bytes pending of {self.max_bytes}")
        writer = self._open_writer()
        good = writer.tell()
        try:
            writer.write(data)
            writer.flush()
            os.fsync(writer.fileno())
        except OSError:
            self._cut(good)
            raise
        self._pending += len(data)
        if writer.tell() >= self.segment_bytes:
            self._close_writer()
        return len(data)

    def _open_writer(self):
        if self._writer is None:
            existing = self.segments()
            seq = int(existing[-1].stem.split("-")[1]) + 1 if existing else 1
            self._writer_path = self.dir / f"seg-{seq:012d}.log"
            self._writer = open(self._writer_path, "ab")  # noqa: SIM115 - kept open across appends
        return self._writer

    def _cut(self, good: int) -> None:
        """After a failed write (ENOSPC): cut the segment back to its last whole batch and close it, so a
        torn line can never be joined to the next record; the next append starts a new segment."""
        path, writer = self._writer_path, self._writer
        with contextlib.suppress(OSError):
            writer.truncate(good)
        with contextlib.suppress(OSError):
            writer.close()  # may try to flush what did not fit; the truncate below removes it again
        with contextlib.suppress(OSError):
            os.truncate(path, good)
        self._writer = self._writer_path = None
        if good == 0 and path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._close_writer()

    # ---- replay ------------------------------------------------------------------------------
    def read(self, max_records: int = 1000) -> SpooledBatch | None:
        """The next records of the oldest segment, stopping where the topic changes; None if empty."""
        for segment in self.segments():
            start = self._position(segment)
            with open(segment, "rb") as f:
                f.seek(start)
                topic: str | None = None
                records: list[Record] = []
                end = start
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # torn tail: never replay half a line
                    t, _, body = line.partition(b"\t")
                    line_topic = t.decode(errors="replace")
                    if topic is not None and line_topic != topic:
                        break
                    try:
                        record = RECORD_OF[line_topic].from_json(body)
                    except (KeyError, ValueError, TypeError) as exc:
                        # a damaged line cannot be replayed; skipping it keeps the rest flowing
                        log.error("spool %s offset %d: unreadable line skipped: %r", segment.name, end, exc)
                        self.skipped += 1
                        end += len(line)
                        continue
                    topic = line_topic
                    records.append(record)
                    end += len(line)
                    if len(records) >= max_records:
                        break
            if records:
                return SpooledBatch(topic, records, segment, end)  # type: ignore[arg-type]
            if end > start:  # only unreadable lines: step over them
                self.commit(SpooledBatch("", [], segment, end))
                return self.read(max_records)
            if segment != self._writer_path:
                self._drop(segment)  # fully replayed (or only a torn tail) and no longer written
        return None

    def commit(self, batch: SpooledBatch) -> None:
        """Mark a replayed batch done: persist the position, delete finished segments."""
        self._pos_file(batch.segment).write_text(str(batch.end))
        if batch.end >= batch.segment.stat().st_size:
            if batch.segment == self._writer_path:
                self._close_writer()  # the next append starts a fresh segment
            self._drop(batch.segment)
        self._pending = sum(self._remaining(p) for p in self.segments())

    def _drop(self, segment: Path) -> None:
        """Delete a segment (replayed, or only a torn tail left) and stop counting its bytes."""
        self._pending = max(self._pending - self._remaining(segment), 0)
        segment.unlink(missing_ok=True)
        self._pos_file(segment).unlink(missing_ok=True)
