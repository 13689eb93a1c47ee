"""The analysis worker: one spawned process that runs upload analyses (upload_store.run_analysis), started
and stopped with the server, never outliving it — not even a server killed outright — because it
writes to the store and the upload folders on its own."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from meshscope.api.upload_store import StoredAnalysis, run_analysis
from meshscope.settings import Settings

log = logging.getLogger("meshscope.api.uploads")

PR_SET_PDEATHSIG = 1  # prctl(2)


class WorkerDied(RuntimeError):
    """The worker process died under an analysis (killed, out of memory); a new one was started."""


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


class AnalysisWorker:
    """One worker process, analyses run on it one at a time; replaced when it dies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        # spawn, not fork: the server process runs threads (SQLite, uvicorn) that fork would copy mid-work
        spawn = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=init_worker)

    def stop(self) -> None:
        """Shut the worker down, ending an analysis under way: the worker writes to the store and the
        upload's folder itself, so it must not outlive the server (the upload, still "analysing",
        resumes at the next start; its records are written again without duplicates)."""
        pool, self._pool = self._pool, None
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

    async def analyse(self, paths: list[str], folder: str, keylog: str | None = None) -> StoredAnalysis:
        """Run one upload's analysis on the worker; WorkerDied when the process died under it (the next
        analysis gets a new worker)."""
        if self._pool is None:
            raise RuntimeError("the analysis worker is not running")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, run_analysis, self.settings, paths, folder, keylog
            )
        except BrokenProcessPool:
            log.error("the analysis worker died on %s", folder)
            self.stop()
            self.start()
            raise WorkerDied("the analysis process died (out of memory or killed)") from None
