"""The analysis → store job, run in the worker process: decode and stitch an upload's captures, write
its exchanges and flows to the store in batches, and its results into the upload's folder —
``flows.json`` (the analysis document, ``Analysis.write_json``, led by the upload's id) and
``graph.svg``. Only counts and capture reports go back to the server, so the server never holds an
analysis, however large the capture."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from meshscope.api.upload_status import PROGRESS_FILE, ProgressFile
from meshscope.api.upload_stream import NAMES_FILE
from meshscope.pipelines import StoreWriter
from meshscope.settings import Settings

WRITE_BATCH = 2000
FLOWS_FILE = "flows.json"
GRAPH_FILE = "graph.svg"


@dataclass(slots=True)
class StoredAnalysis:
    """What the worker hands back: record counts, and one report per capture (decoders.CaptureReport)."""

    counts: dict[str, int]
    reports: list[Any]


def run_analysis(settings: Settings, paths: list[str], folder: str,
                 keylog: str | None = None) -> StoredAnalysis:
    """In the worker process: the whole job for one upload (see the module's docstring); ``keylog``:
    a TLS key log to decrypt with."""
    return asyncio.run(_analyse_into_store(settings, paths, Path(folder), keylog))


async def _analyse_into_store(settings: Settings, paths: list[str], folder: Path,
                              keylog_path: str | None = None) -> StoredAnalysis:
    from meshscope.decoders import K8sNames, KeyLog, analyze, render_svg
    from meshscope.pipelines import make_store

    for stale in folder.glob("*.tmp"):  # left by a worker ended mid-write (the server stopped)
        stale.unlink(missing_ok=True)
    keylog = KeyLog.from_files([Path(keylog_path)]) if keylog_path else None
    names_file = folder / NAMES_FILE  # pod and service names by IP, if the upload came with them
    names = K8sNames.from_file(names_file) if names_file.exists() else None
    analysis = analyze(paths, progress=ProgressFile(folder / PROGRESS_FILE), keylog=keylog, names=names)
    try:
        # a store of the configured kind, opened here: SQLite's WAL takes a second writing process
        async with make_store(settings) as store:
            # flows.json appears (renamed into place) only once every record is in the store
            with result_file(folder / FLOWS_FILE) as out:
                analysis.write_json(out, lead={"id": folder.name})  # the body of GET /api/pcaps/{id}/flows
                exchanges = await write_in_batches(store, analysis.exchanges)
                flows = await write_in_batches(store, analysis.flows)
        with result_file(folder / GRAPH_FILE) as out:
            out.write(render_svg(analysis.flows, analysis.by_id()).encode())
    finally:
        close = getattr(analysis.exchanges, "close", None)  # the on-disk spool of exchanges
        if close is not None:
            close()
    counts = {
        "exchanges": exchanges,
        "flows": flows,
        "packets": sum(r.packets for r in analysis.reports),
        "duplicates": analysis.duplicates,
    }
    return StoredAnalysis(counts, list(analysis.reports))


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
