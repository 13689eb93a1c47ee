"""Where an upload stands: its state machine (queued → analysing → done | failed), what it holds, its
counts and damage reports once analysed, and the analysis progress while it runs.

The status lives in the upload's folder as ``status.json`` (written whole, atomically, by the server);
progress is written apart, as ``progress.json``, by the worker process that reads the captures, and
joins the status while the upload is analysing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.json"


class UploadState(StrEnum):
    QUEUED = "queued"
    ANALYSING = "analysing"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (UploadState.DONE, UploadState.FAILED)


# analysing → analysing: an analysis the server's stop interrupted starts again at the next start
NEXT_STATES = {
    UploadState.QUEUED: {UploadState.ANALYSING},
    UploadState.ANALYSING: {UploadState.ANALYSING, UploadState.DONE, UploadState.FAILED},
    UploadState.DONE: set(),
    UploadState.FAILED: set(),
}


class BadTransition(RuntimeError):
    """A state change the machine does not allow (a bug, not bad input)."""


@dataclass(slots=True, frozen=True)
class Progress:
    """How far the worker has read the upload's captures: bytes done out of the total."""

    done: int
    total: int

    @property
    def fraction(self) -> float | None:
        return round(self.done / self.total, 3) if self.total else None

    @classmethod
    def read(cls, folder: Path) -> Progress | None:
        """The worker's last report, or None before its first (or when unreadable)."""
        try:
            p = orjson.loads((folder / PROGRESS_FILE).read_bytes())
            return cls(int(p["done"]), int(p["total"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


class ProgressFile:
    """Written by the worker process as it reads the captures: bytes done and total, at most every 0.5 s."""

    INTERVAL = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.INTERVAL:
            return
        self.last = now
        write_atomically(self.path, orjson.dumps({"done": done, "total": total}))


@dataclass(slots=True, kw_only=True)
class UploadStatus:
    """One upload's status; ``to_dict()`` is the body of ``GET /api/pcaps/{id}`` (schemas.UploadStatus)."""

    id: str
    state: UploadState
    created: float
    finished: float | None = None
    files: list[dict[str, Any]] = field(default_factory=list)  # {name, stored, size, format}
    bytes: int = 0
    error: str | None = None
    counts: dict[str, int] | None = None
    captures: list[dict[str, Any]] = field(default_factory=list)  # each capture's report and client name
    progress: Progress | None = None  # while analysing (not stored in status.json)
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know, kept

    @classmethod
    def queued(cls, upload_id: str, files: list[dict[str, Any]], size: int) -> UploadStatus:
        return cls(id=upload_id, state=UploadState.QUEUED, created=time.time(), files=files, bytes=size)

    # -- the state machine ---------------------------------------------------------------------------
    def _move(self, state: UploadState) -> None:
        if state not in NEXT_STATES[self.state]:
            raise BadTransition(f"upload {self.id}: {self.state} cannot become {state}")
        self.state = state

    def start(self) -> None:
        self._move(UploadState.ANALYSING)

    def finish(self, counts: dict[str, int], captures: list[dict[str, Any]]) -> None:
        self._move(UploadState.DONE)
        self.counts, self.captures, self.finished = counts, captures, time.time()

    def fail(self, error: str) -> None:
        self._move(UploadState.FAILED)
        self.error, self.finished = error, time.time()

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id, "state": str(self.state), "created": self.created, "finished": self.finished,
            "files": self.files, "bytes": self.bytes, "error": self.error, "counts": self.counts,
            "captures": self.captures, **self.extra,
        }
        if self.progress is not None:
            out["progress"] = self.progress.fraction
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadStatus:
        """ValueError (or KeyError, TypeError) when ``data`` is not a status."""
        known = {"id", "state", "created", "finished", "files", "bytes", "error", "counts", "captures",
                 "progress"}
        return cls(
            id=str(data["id"]),
            state=UploadState(data["state"]),
            created=float(data["created"]),
            finished=data.get("finished"),
            files=list(data.get("files") or []),
            bytes=int(data.get("bytes") or 0),
            error=data.get("error"),
            counts=data.get("counts"),
            captures=list(data.get("captures") or []),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def read(cls, folder: Path) -> UploadStatus | None:
        """The folder's status, with the worker's progress while analysing; None when there is none
        or it cannot be read."""
        try:
            status = cls.from_dict(orjson.loads((folder / STATUS_FILE).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if status.state is UploadState.ANALYSING:
            status.progress = Progress.read(folder)
        return status

    def save(self, folder: Path) -> None:
        data = self.to_dict()
        data.pop("progress", None)  # the worker's, kept in its own file
        write_atomically(folder / STATUS_FILE, orjson.dumps(data))


def write_atomically(path: Path, data: bytes) -> None:
    """Write under a temporary name, then rename: a reader sees the old file or the new one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
