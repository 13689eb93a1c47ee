"""Uploaded captures: received (upload_stream.py) into ``data_dir/pcaps/<id>/`` under a count limit,
analysed in a worker process that writes the results to the store and the upload's folder itself,
in batches, and hands back only counts and damage reports: the server's memory does not grow with a
capture.

Each upload folder holds the capture files (named from the generated id, never from the request),
``status.json`` (state, sizes, counts, damage report) and, once analysed, ``flows.json`` (the flows
and exchanges as the API serves them) and ``graph.svg``. A restart resumes every upload that was still
queued or being analysed."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from python_multipart.multipart import parse_options_header

from meshscope.api.upload_stream import KEYLOG_FILE, CaptureFiles, MultipartCaptures, UploadRejected
from meshscope.errors import UserError
from meshscope.pipelines import StoreWriter
from meshscope.settings import Settings

log = logging.getLogger("meshscope.api.uploads")

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
WRITE_BATCH = 2000
UNFINISHED = ("queued", "analysing")
FLOWS_FILE = "flows.json"
PR_SET_PDEATHSIG = 1  # prctl(2)


STORED_NAME = re.compile(r"^([0-9a-f]{12})-\d+\.cap$")


def capture_sources(root: Path, captures: Sequence[str]) -> dict[str, dict[str, str]]:
    """For stored capture names (``<id prefix>-<n>.cap``), the upload they came from and the file name
    they were uploaded as; names of captures from elsewhere are left out."""
    out: dict[str, dict[str, str]] = {}
    for capture in dict.fromkeys(captures):
        m = STORED_NAME.match(capture)
        if not m:
            continue
        for folder in root.glob(m.group(1) + "*"):
            try:
                status = orjson.loads((folder / "status.json").read_bytes())
            except (OSError, ValueError):
                continue
            for f in status.get("files", []):
                if f.get("stored") == capture:
                    out[capture] = {"upload": status["id"], "name": f["name"]}
    return out


class ProgressFile:
    """Written by the worker process as it reads the captures: the fraction done, at most every 0.5 s."""

    INTERVAL = 0.5

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.INTERVAL:
            return
        self.last = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"done": done, "total": total}))
        os.replace(tmp, self.path)


def run_analysis(settings: Settings, paths: list[str], folder: str,
                 keylog: str | None = None) -> dict[str, Any]:
    """In the worker process: decode and stitch the captures, write their exchanges and flows to the
    store in batches and the results into the upload's folder; only counts and reports go back, so the
    server never holds an analysis, however large the capture."""
    return asyncio.run(_analyse_into_store(settings, paths, Path(folder), keylog))


def init_worker() -> None:
    """In a new worker process: end with the server, even one killed outright (Linux: a SIGTERM when
    the parent dies), since the worker writes to the store and the upload folders on its own."""
    signal.signal(signal.SIGTERM, _end_worker)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the worker ends when stop() terminates it
        pass
    if os.getppid() == 1:  # the server died before prctl took effect
        _end_worker(signal.SIGTERM, None)


def _end_worker(signum: int, _frame: Any) -> None:
    """SIGTERM in the worker (the server is stopping): end the decoders' own processes with it, then
    exit at once. An open store transaction is rolled back by the store; the upload is analysed again
    at the next start."""
    for child in multiprocessing.active_children():
        child.terminate()
    os._exit(128 + signum)


async def _analyse_into_store(settings: Settings, paths: list[str], folder: Path,
                              keylog_path: str | None = None) -> dict[str, Any]:
    from meshscope.decoders import KeyLog, analyze
    from meshscope.pipelines import make_store

    for stale in folder.glob("*.tmp"):  # left by a worker ended mid-write (the server stopped)
        stale.unlink(missing_ok=True)
    keylog = KeyLog.from_files([Path(keylog_path)]) if keylog_path else None
    analysis = analyze(paths, progress=ProgressFile(folder / "progress.json"), keylog=keylog)
    try:
        # a store of the configured kind, opened here: SQLite's WAL takes a second writing process
        async with make_store(settings) as store:
            with result_file(folder / FLOWS_FILE) as out:
                # the body of GET /api/pcaps/{id}/flows, written as the exchanges go to the store
                out.write(b'{"id":' + orjson.dumps(folder.name) + b',"flows":[')
                write_json_items(out, analysis.flows)
                out.write(b'],"exchanges":[')
                exchanges = await write_in_batches(store, json_items_tee(out, analysis.exchanges))
                out.write(b"]}")
            flows = await write_in_batches(store, analysis.flows)
        svg = render_svg(analysis)
        if svg is not None:
            with result_file(folder / "graph.svg") as out:
                out.write(svg.encode())
    finally:
        close = getattr(analysis.exchanges, "close", None)  # the on-disk spool of exchanges
        if close is not None:
            close()
    return {
        "counts": {
            "exchanges": exchanges,
            "flows": flows,
            "packets": sum(r.packets for r in analysis.reports),
            "duplicates": analysis.duplicates,
        },
        "reports": list(analysis.reports),
    }


async def write_in_batches(writer: StoreWriter, records: Iterable[Any]) -> int:
    """Write records WRITE_BATCH at a time, the next batch read while the previous one is written (at
    most two batches in memory); returns how many were written."""
    pending: asyncio.Task | None = None
    count = 0
    try:
        for batch in batched(records, WRITE_BATCH):
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(writer.write(batch))
            await asyncio.sleep(0)  # let the write start (SQLite: on its thread) while the next is read
            count += len(batch)
        if pending is not None:
            await pending
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
    return count


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of at most ``size`` consecutive items."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def write_json_items(out: BinaryIO, items: Iterable[Any]) -> None:
    """The items as the inside of a JSON array, one at a time."""
    for _ in json_items_tee(out, items):
        pass


def json_items_tee(out: BinaryIO, items: Iterable[Any]) -> Iterator[Any]:
    """Pass the items on, writing each as the next element of a JSON array (commas between)."""
    for i, item in enumerate(items):
        out.write(b"," + orjson.dumps(item) if i else orjson.dumps(item))
        yield item


@contextmanager
def result_file(path: Path) -> Iterator[BinaryIO]:
    """A result file written under a temporary name and renamed when complete: readers never see half
    of one, and a failed analysis leaves none."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            yield out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def render_svg(analysis: Any) -> str | None:
    """The flow graph of an analysis as SVG (the decoders' sequence-diagram renderer)."""
    from meshscope.decoders import render_svg as draw

    return draw(analysis.flows, analysis.by_id())


class Uploads:
    """The upload folders under ``data_dir/pcaps`` and the worker process that analyses them.

    ``writer`` is the app's store. The worker cannot share it across processes: it opens a store of
    the same settings (``pipelines.wiring.make_store``) and writes there."""

    def __init__(self, settings: Settings, writer: StoreWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.root = Path(settings.data_dir) / "pcaps"
        self._pool: ProcessPoolExecutor | None = None
        self._tasks: set[asyncio.Task] = set()
        self.counters = {"uploads": 0, "rejected": 0, "analysed": 0, "failed": 0}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool = self._new_pool()
        for folder in sorted(self.root.iterdir()):
            status = self.status(folder.name)
            if status and status["state"] in UNFINISHED:
                log.info("resuming analysis of upload %s", folder.name)
                self._schedule(folder.name)

    @staticmethod
    def _new_pool() -> ProcessPoolExecutor:
        # spawn, not fork: the server process runs threads (SQLite, uvicorn) that fork would copy mid-work
        spawn = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(1, mp_context=spawn, initializer=init_worker)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._stop_pool()
        self._pool = None

    def _stop_pool(self) -> None:
        """Shut the worker down, ending an analysis under way: the worker writes to the store and the
        upload's folder itself, so it must not outlive the server (the upload, still "analysing",
        resumes at the next start; its records are written again without duplicates)."""
        pool = self._pool
        if pool is None:
            return
        terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
            return
        # before 3.14, by hand; shutdown() forgets the processes, so they are taken first
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()

    # -- folders and status --------------------------------------------------------------------
    def folder(self, upload_id: str) -> Path | None:
        if not UPLOAD_ID.match(upload_id):
            return None
        folder = self.root / upload_id
        return folder if folder.is_dir() else None

    def status(self, upload_id: str) -> dict[str, Any] | None:
        folder = self.folder(upload_id)
        if folder is None:
            return None
        status = self._stored_status(folder)
        if status is not None and status.get("state") == "analysing":
            try:
                p = orjson.loads((folder / "progress.json").read_bytes())
                status["progress"] = round(p["done"] / p["total"], 3) if p["total"] else None
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return status

    @staticmethod
    def _stored_status(folder: Path) -> dict[str, Any] | None:
        try:
            return orjson.loads((folder / "status.json").read_bytes())
        except (OSError, ValueError):
            return None

    def _save_status(self, upload_id: str, status: dict[str, Any]) -> None:
        path = self.root / upload_id / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(status))
        os.replace(tmp, path)

    def _update(self, upload_id: str, **changes: Any) -> dict[str, Any]:
        status = self._stored_status(self.root / upload_id) or {}
        status.update(changes)
        self._save_status(upload_id, status)
        return status

    def flows_file(self, upload_id: str) -> Path | None:
        """The file holding the upload's flows and exchanges as GET /api/pcaps/{id}/flows answers them
        (served as it is, never loaded whole), or None."""
        folder = self.folder(upload_id)
        if folder is None or not (folder / FLOWS_FILE).is_file():
            return None
        return folder / FLOWS_FILE

    def analysis(self, upload_id: str) -> dict[str, Any] | None:
        """The whole analysis of an upload analysed before flows.json existed (loaded whole), or None."""
        folder = self.folder(upload_id)
        if folder is None or not (folder / "analysis.json").is_file():
            return None
        return orjson.loads((folder / "analysis.json").read_bytes())

    def graph(self, upload_id: str) -> str | None:
        folder = self.folder(upload_id)
        if folder is None or not (folder / "graph.svg").is_file():
            return None
        return (folder / "graph.svg").read_text()

    def delete(self, upload_id: str) -> bool:
        """Remove an upload's folder (its capture files and results); the records it wrote stay in the
        store. False when there is no such upload; UploadRejected(409) while it is being analysed."""
        folder = self.folder(upload_id)
        if folder is None:
            return False
        status = self.status(upload_id) or {}
        if status.get("state") in UNFINISHED:
            raise UploadRejected(409, f"upload {upload_id} is {status['state']}; delete it once analysed")
        shutil.rmtree(folder)
        return True

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        statuses = [self.status(f.name) for f in self.root.iterdir() if UPLOAD_ID.match(f.name)]
        done = [s for s in statuses if s]
        return sorted(done, key=lambda s: s.get("created", 0), reverse=True)[:limit]

    # -- receiving -----------------------------------------------------------------------------
    async def receive(
        self, content_type: str, content_length: str | None, body: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Stream one upload to disk and queue its analysis; the status is returned at once."""
        limit = self.settings.upload_max_bytes
        try:
            if content_length is not None and int(content_length) > limit + 64 * 1024:
                raise UploadRejected(413, f"upload larger than the limit of {limit} bytes")
        except ValueError:
            raise UploadRejected(400, "bad Content-Length") from None
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
            await self._stream(content_type, body, files)
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
        status = {
            "id": upload_id,
            "state": "queued",
            "created": time.time(),
            "finished": None,
            "files": files.files,
            "bytes": files.total,
            "error": None,
            "counts": None,
            "captures": [],
            "keylog": files.keylog_bytes is not None,  # whether one came (never what it held)
        }
        self._save_status(upload_id, status)
        self.counters["uploads"] += 1
        self._schedule(upload_id)
        return status

    async def _stream(self, content_type: str, body: AsyncIterator[bytes], files: CaptureFiles) -> None:
        ctype, params = parse_options_header(content_type or "")
        if ctype == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise UploadRejected(400, "multipart body without a boundary")
            multipart = MultipartCaptures(boundary, files)
            async for chunk in body:
                multipart.feed(chunk)
            try:
                multipart.finish()
            except UploadRejected:
                raise
            except Exception as exc:
                raise UploadRejected(400, f"malformed multipart body: {exc}") from exc
            files.close()
            return
        files.open(None)
        async for chunk in body:
            files.write(chunk)
        files.close()

    # -- analysis --------------------------------------------------------------------------------
    def _schedule(self, upload_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._analyse(upload_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _analyse(self, upload_id: str) -> None:
        status = self.status(upload_id)
        if status is None or self._pool is None:
            return
        folder = self.root / upload_id
        paths = [str(folder / f["stored"]) for f in status["files"]]
        keylog = folder / KEYLOG_FILE
        self._update(upload_id, state="analysing")
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._pool, run_analysis, self.settings, paths, str(folder),
                str(keylog) if keylog.exists() else None,
            )
        except asyncio.CancelledError:
            raise
        except BrokenProcessPool:
            # the worker died (killed, out of memory): this upload fails, the next ones get a new worker
            log.error("the analysis worker died on upload %s", upload_id)
            self._stop_pool()
            self._pool = self._new_pool()
            self._fail(upload_id, "the analysis process died (out of memory or killed)")
            return
        except UserError as exc:
            self._fail(upload_id, str(exc))
            return
        except Exception as exc:  # the decoders or the store failed: reported, never a crash
            log.exception("analysis of upload %s failed", upload_id)
            self._fail(upload_id, f"analysis failed: {exc}")
            return
        finally:
            keylog.unlink(missing_ok=True)  # a key log is a secret: it lives only as long as its analysis
        captures = [self._capture_summary(r, status["files"]) for r in result["reports"]]
        self.counters["analysed"] += 1
        self._update(
            upload_id, state="done", finished=time.time(), captures=captures, counts=result["counts"]
        )

    def _fail(self, upload_id: str, error: str) -> None:
        self.counters["failed"] += 1
        self._update(upload_id, state="failed", error=error, finished=time.time())

    @staticmethod
    def _capture_summary(report: Any, files: list[dict[str, Any]]) -> dict[str, Any]:
        """A capture's report with the client's file name beside the stored one."""
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
        }

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no analysis is running (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)
