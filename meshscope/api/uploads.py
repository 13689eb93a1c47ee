"""Uploaded captures: the folders under ``data_dir/pcaps/<id>/`` and what happens to them. An upload is
received (upload_stream) under a count limit, queued, and analysed on the worker process
(upload_worker), which writes the records to the store and the results to the folder itself
(upload_store); its status moves queued → analysing → done | failed (upload_status).

Each upload folder holds the capture files (named from the generated id, never from the request),
``status.json``, ``progress.json`` while analysing and, once analysed, ``flows.json`` (the analysis
document as the API serves it) and ``graph.svg``. A restart resumes every upload that was still
queued or being analysed."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from meshscope.api.upload_status import STATUS_FILE, UploadStatus
from meshscope.api.upload_store import FLOWS_FILE, GRAPH_FILE
from meshscope.api.upload_stream import KEYLOG_FILE, CaptureFiles, UploadRejected, receive_body
from meshscope.api.upload_worker import AnalysisWorker, WorkerDied
from meshscope.errors import UserError
from meshscope.pipelines import StoreWriter
from meshscope.settings import Settings

log = logging.getLogger("meshscope.api.uploads")

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
STORED_NAME = re.compile(r"^([0-9a-f]{12})-\d+\.cap$")
LEGACY_ANALYSIS = "analysis.json"  # the whole analysis, as versions before flows.json wrote it


def capture_sources(root: Path, captures: Sequence[str]) -> dict[str, dict[str, str]]:
    """For stored capture names (``<id prefix>-<n>.cap``), the upload they came from and the file name
    they were uploaded as; names of captures from elsewhere are left out."""
    out: dict[str, dict[str, str]] = {}
    for capture in dict.fromkeys(captures):
        m = STORED_NAME.match(capture)
        if not m:
            continue
        for folder in root.glob(m.group(1) + "*"):
            status = UploadStatus.read(folder)
            for f in status.files if status else []:
                if f.get("stored") == capture:
                    out[capture] = {"upload": status.id, "name": f["name"]}
    return out


def capture_summary(report: Any, files: list[dict[str, Any]]) -> dict[str, Any]:
    """A capture's report (decoders.CaptureReport) with the client's file name beside the stored one."""
    names = {f["stored"]: f["name"] for f in files}
    return {
        "name": names.get(report.capture, report.capture),
        "capture": report.capture,
        "format": report.format,
        "link_types": list(report.link_types),
        "packets": report.packets,
        "bytes": report.bytes,
        "connections": report.connections,
        "exchanges": report.exchanges,
        "damage": list(report.damage),
        "truncated": report.truncated,
        # compressed captures, damage beyond the examples, snaplen cuts, a capture that could not be read
        **{k: getattr(report, k, None) for k in ("compression", "damage_count", "snaplen", "cut_by_snaplen",
                                                 "error")},
        "not_decoded": dict(report.not_decoded),
    }


class Uploads:
    """The upload folders under ``data_dir/pcaps`` and the worker that analyses them.

    ``writer`` is the app's store. The worker cannot share it across processes: it opens a store of
    the same settings (``pipelines.make_store``) and writes there."""

    def __init__(self, settings: Settings, writer: StoreWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.root = Path(settings.data_dir) / "pcaps"
        self.worker = AnalysisWorker(settings)
        self._tasks: set[asyncio.Task] = set()
        self.counters = {"uploads": 0, "rejected": 0, "analysed": 0, "failed": 0}

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker.start()
        for folder in sorted(self.root.iterdir()):
            if UPLOAD_ID.match(folder.name) and folder.is_dir() and not (folder / STATUS_FILE).exists():
                # an upload cut off mid-transfer (the process was killed): never listed, never finished
                log.info("removing the partial upload %s left by an earlier run", folder.name)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            status = self.status(folder.name)
            if status and not status.state.finished:
                log.info("resuming analysis of upload %s", folder.name)
                self._schedule(folder.name)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.worker.stop()

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no analysis is running (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    # -- folders and what they hold ----------------------------------------------------------------
    def folder(self, upload_id: str) -> Path | None:
        if not UPLOAD_ID.match(upload_id):
            return None
        folder = self.root / upload_id
        return folder if folder.is_dir() else None

    def status(self, upload_id: str) -> UploadStatus | None:
        folder = self.folder(upload_id)
        return UploadStatus.read(folder) if folder is not None else None

    def list(self, limit: int = 50) -> list[UploadStatus]:
        statuses = [self.status(f.name) for f in self.root.iterdir() if UPLOAD_ID.match(f.name)]
        return sorted((s for s in statuses if s), key=lambda s: s.created, reverse=True)[:limit]

    def _result(self, upload_id: str, name: str) -> Path | None:
        folder = self.folder(upload_id)
        return folder / name if folder is not None and (folder / name).is_file() else None

    def flows_file(self, upload_id: str) -> Path | None:
        """The file holding the upload's analysis document as GET /api/pcaps/{id}/flows answers it
        (served as it is, never loaded whole), or None."""
        return self._result(upload_id, FLOWS_FILE)

    def analysis(self, upload_id: str) -> dict[str, Any] | None:
        """The analysis document of an upload analysed before flows.json existed (loaded whole, led by
        the upload's id like flows.json), or None."""
        path = self._result(upload_id, LEGACY_ANALYSIS)
        return {"id": upload_id, **orjson.loads(path.read_bytes())} if path is not None else None

    def graph(self, upload_id: str) -> str | None:
        path = self._result(upload_id, GRAPH_FILE)
        return path.read_text() if path is not None else None

    def delete(self, upload_id: str) -> bool:
        """Remove an upload's folder (its capture files and results); the records it wrote stay in the
        store. False when there is no such upload; UploadRejected(409) while it is being analysed."""
        folder = self.folder(upload_id)
        if folder is None:
            return False
        status = self.status(upload_id)
        if status is not None and not status.state.finished:
            raise UploadRejected(409, f"upload {upload_id} is {status.state}; delete it once analysed")
        shutil.rmtree(folder)
        return True

    # -- receiving ---------------------------------------------------------------------------------
    async def receive(
        self, content_type: str, content_length: str | None, body: AsyncIterator[bytes]
    ) -> UploadStatus:
        """Stream one upload to disk and queue its analysis; the status is returned at once."""
        limit = self.settings.upload_max_bytes
        try:
            if content_length is not None and int(content_length) > limit + 64 * 1024:
                raise UploadRejected(413, f"upload larger than the limit of {limit} bytes")
        except ValueError:
            raise UploadRejected(400, "bad Content-Length") from None
        # an upload counts against the limit only once data arrives, and gives up when it stalls:
        # idle connections cannot take every slot
        body = _stall_guarded(body, float(self.settings.http_body_timeout_s))
        try:
            first = await anext(body)
        except StopAsyncIteration:
            raise UploadRejected(400, "no capture in the request (send a pcap/pcapng body or a file part)") \
                from None
        body = _prepend(first, body)
        stored = sum(1 for f in self.root.iterdir() if UPLOAD_ID.match(f.name))
        if stored >= self.settings.upload_max_count:
            raise UploadRejected(
                429, f"{stored} captures stored, the limit is {self.settings.upload_max_count}"
            )
        upload_id = uuid.uuid4().hex
        folder = self.root / upload_id
        folder.mkdir()
        files = CaptureFiles(folder, upload_id, limit)
        try:
            await receive_body(content_type, body, files)
            if not files.files:
                raise UploadRejected(
                    400, "no capture in the request (send a pcap/pcapng body or a file part)"
                )
        except BaseException as exc:
            files.abort()
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, UploadRejected):
                self.counters["rejected"] += 1
            raise
        status = UploadStatus.queued(upload_id, files.files, files.total)
        status.extra["keylog"] = files.keylog_bytes is not None  # whether one came, never what it held
        status.save(folder)
        self.counters["uploads"] += 1
        self._schedule(upload_id)
        return status

    # -- analysis ----------------------------------------------------------------------------------
    def _schedule(self, upload_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._analyse(upload_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _analyse(self, upload_id: str) -> None:
        status = self.status(upload_id)
        if status is None or not self.worker.running:
            return
        folder = self.root / upload_id
        status.start()
        status.save(folder)
        keylog = folder / KEYLOG_FILE
        try:
            result = await self.worker.analyse([str(folder / f["stored"]) for f in status.files], str(folder),
                                               str(keylog) if keylog.exists() else None)
        except asyncio.CancelledError:
            raise
        except (WorkerDied, UserError) as exc:  # WorkerDied: the next uploads get a new worker
            return self._fail(status, str(exc))
        except Exception as exc:  # the decoders or the store failed: reported, never a crash
            log.exception("analysis of upload %s failed", upload_id)
            return self._fail(status, f"analysis failed: {exc}")
        finally:
            keylog.unlink(missing_ok=True)  # a key log is a secret: it lives only as long as its analysis
        status.finish(result.counts, [capture_summary(r, status.files) for r in result.reports])
        status.save(folder)
        self.counters["analysed"] += 1

    def _fail(self, status: UploadStatus, error: str) -> None:
        self.counters["failed"] += 1
        status.fail(error)
        status.save(self.root / status.id)


async def _stall_guarded(body: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    """The body's chunks; UploadRejected(408) when none arrives for ``timeout`` seconds."""
    chunks = aiter(body)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadRejected(408, f"upload stalled: no data for {timeout:g} s") from None
        yield chunk


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
