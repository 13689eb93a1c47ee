"""Loss accounting: what each proxy says it logged versus what reached the collector.

Envoy counts an entry in ``access_logs.grpc_access_log.logs_written`` when it enters the logger's
buffer, not when it is delivered, and a collector that is down loses entries without
``logs_dropped`` moving (only the access-log cluster's ``upstream_cx_connect_fail`` shows it). So the
gap per proxy is ``written - dropped - arrived``, reported with the connect failures beside it.

Envoy's counters start at 0 when it restarts. The account remembers each proxy's last counters and
its start time (admin /server_info uptime): after a restart it keeps counting the earlier run's
entries, and when the store holds more than the proxy's counters can explain (a restart it did not
see) it says so in ``error`` instead of reporting the gap as zero. Given a ``memory`` file (the API
keeps one in its data directory) the remembered runs outlive the process, so a restarted
``meshscope up`` or API still carries what the proxy's earlier runs counted.

What a run logged after the account's last read of it is gone with its counters when the proxy dies:
neither Envoy nor anything else counts it. The account says so instead of guessing low: every run
that ended between two reads leaves an unseen window (its last read → the next run's start), and
``unseen_at_most`` bounds what it can have held: the run's peak logging rate × the window. Reading
often while the proxy logs (``watch_interval``) keeps those windows short; one read is a single
filtered ``/stats`` call (the node id is asked once per run).

While a proxy logs, ``gap`` also holds what is merely in flight (Envoy's buffer flush, the collector,
the pipeline's batch). ``gap_settled`` is the gap among the entries written at least ``settle_s``
before: the counters of a read that old against what has arrived since. That is the figure that says
a proxy is losing entries; it is None until the account has a read that old.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import httpx
from meshscope.proxy.admin import access_log_counts, cluster_stat, parse_stats
from meshscope.proxy.telemetry import ALS_CLUSTER


@dataclass(slots=True)
class ProxyLoss:
    """One proxy's account. ``gap`` > 0: entries Envoy buffered that never arrived (nor were counted
    as dropped); it is only meaningful once Envoy has flushed (its buffer flush interval). With unseen
    windows the loss lies between written - dropped - arrived (what arrived of those windows is in
    ``arrived`` but not in ``written``) and that plus ``unseen_at_most``."""

    admin: str
    node_id: str | None
    reachable: bool
    written: int = 0
    dropped: int = 0
    connect_failures: int = 0
    arrived: int = 0
    gap: int = 0
    error: str | None = None
    started_at: float | None = None  # when this run of the proxy started (its counters' zero)
    restarts: int = 0  # restarts this process saw (their counts are carried into written/dropped)
    read_at: float | None = None  # the last successful read of the counters (epoch seconds)
    unseen_since: list[float] = field(default_factory=list)  # last read before each run ended unseen
    unseen_seconds: float = 0.0  # summed unseen windows (a down proxy's current one included)
    unseen_at_most: int = 0  # entries those windows can have held: peak rate x window, rounded up
    gap_settled: int | None = None  # the gap among entries written >= settle_s ago (None: no read so old)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Run:
    """What the account last saw of one proxy: its start, its counters, and earlier runs' totals."""

    started_at: float
    written: int
    dropped: int
    carried_written: int = 0
    carried_dropped: int = 0
    restarts: int = 0
    read_at: float = 0.0  # wall time of the last read
    uptime: float = 0.0  # server.uptime at the last read
    peak_rate: float = 0.0  # the most entries/s this run was seen writing between two reads
    moving: bool = False  # written moved between the last two reads (the watch then reads more often)
    node_id: str | None = None
    unseen: list = field(default_factory=list)  # [last read, window s, at most] per run ended unseen
    down_at: float | None = None  # the first read that found the proxy unreachable (it ended before)
    samples: list = field(default_factory=list)  # [read at, written, dropped] (runs' totals): recent reads

    def settled(self, now: float, settle_s: float) -> list | None:
        """The newest sample at least ``settle_s`` old (None: no read so old); older ones are dropped."""
        old = [i for i, (at, _, _) in enumerate(self.samples) if at <= now - settle_s]
        if not old:
            return None
        del self.samples[: old[-1]]
        return self.samples[0]

    def unseen_window(self, until: float) -> tuple[float, int]:
        """Seconds since the last read until ``until``, and what this run can have written in them."""
        seconds = max(until - self.read_at, 0.0)
        return seconds, math.ceil(self.peak_rate * seconds)


_RECALLED: set[str] = set()  # admins whose run came from the memory file: their watcher died since
_START_SLACK_S = 8.0  # a stats flush interval (5 s) and some: how far a stale uptime moves the start
_RUNS: dict[str, _Run] = {}  # admin address -> last seen run
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())  # per event loop: gone with it (tests run many loops)
# Envoy's buffer flush (1 s by default), the collector and the pipeline's batch to the store take a few
# seconds on a loaded machine: entries written more recently may still be on their way
SETTLE_S = 10.0
log = logging.getLogger(__name__)


def _recall(memory: Path, admins: list[str]) -> None:
    """Load the remembered runs of ``admins`` this process has not seen yet (a restarted API)."""
    if all(a in _RUNS for a in admins) or not memory.is_file():
        return
    try:
        saved = json.loads(memory.read_text())
        names = {f.name for f in fields(_Run)}
        for admin, run in saved.items():
            if admin in admins and admin not in _RUNS:
                _RUNS[admin] = _Run(**{k: v for k, v in run.items() if k in names})
                _RECALLED.add(admin)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("proxy loss memory %s unreadable, starting afresh: %s", memory, exc)


def _remember(memory: Path) -> None:
    try:
        memory.parent.mkdir(parents=True, exist_ok=True)
        tmp = memory.with_name(memory.name + ".tmp")
        tmp.write_text(json.dumps({admin: asdict(run) for admin, run in _RUNS.items()}))
        os.replace(tmp, memory)
    except OSError as exc:  # a full disk must not break the account itself
        log.warning("cannot write the proxy loss memory %s: %s", memory, exc)


def _restarted(prev: _Run, uptime: float, written: int, dropped: int, now: float) -> bool:
    """Whether these counters come from a new run of the proxy. ``uptime`` is Envoy's ``server.uptime``
    gauge, which moves only at each stats flush (every 5 s by default), hence the slack on the start
    time; a falling uptime or counter is a restart at once."""
    return (abs(now - uptime - prev.started_at) > _START_SLACK_S or uptime < prev.uptime
            or written < prev.written or dropped < prev.dropped)


def _follow(prev: _Run | None, run: _Run, restarted: bool, died_by: float | None = None) -> _Run:
    """The proxy's new state: earlier runs' counts carried over a restart, with the window after the
    ended run's last read (nothing counted what it logged then; it ended at the latest at ``died_by``,
    the first failed read, or the new run's start); within a run, its peak rate."""
    if prev is None:
        return run
    run.carried_written, run.carried_dropped = prev.carried_written, prev.carried_dropped
    run.restarts, run.unseen, run.samples = prev.restarts, list(prev.unseen), prev.samples
    if restarted:
        run.carried_written += prev.written
        run.carried_dropped += prev.dropped
        run.restarts += 1
        # the old run ended at the latest when this one started (whole seconds: 1 s of slack)
        ends = [run.read_at, run.started_at + 1.0, *(t for t in (prev.down_at, died_by) if t is not None)]
        seconds, at_most = prev.unseen_window(min(ends))
        run.unseen.append([prev.read_at, round(seconds, 3), at_most])
        log.info("proxy run ended (restart %d): its counters %d written, %d dropped carried; unseen for "
                 "%.2f s after its last read, at most %d entries", run.restarts, prev.written, prev.dropped,
                 seconds, at_most)
    else:
        run.node_id, run.started_at = run.node_id or prev.node_id, prev.started_at
        elapsed = run.read_at - prev.read_at
        rate = (run.written - prev.written) / elapsed if elapsed > 0 else 0.0
        run.peak_rate, run.moving = max(prev.peak_rate, rate), run.written != prev.written
    return run


# one filtered /stats read: the access loggers' counters, the collector cluster's connect failures and
# the uptime (a restart's tell); Envoy filters by regex, so the answer stays a few lines long
_STATS_FILTER = (rf"^(access_logs\.grpc_access_log\.|cluster\.{ALS_CLUSTER}\.upstream_cx_connect_fail$"
                 r"|server\.uptime$)")


def _base(admin: str) -> str:
    return admin if "://" in admin else f"http://{admin}"


async def _proxy_stats(http: httpx.AsyncClient, admin: str) -> dict[str, int | float]:
    response = await http.get(f"{_base(admin)}/stats", params={"format": "json", "filter": _STATS_FILTER})
    return parse_stats(response.raise_for_status().json())


async def _server_info(http: httpx.AsyncClient, admin: str) -> tuple[str | None, float | None]:
    """The proxy's node id and exact start time (admin /server_info): asked once per run."""
    info = (await http.get(f"{_base(admin)}/server_info")).raise_for_status().json()
    node_id = (info.get("node") or {}).get("id") or info.get("command_line_options", {}).get("service_node")
    try:
        started_at = time.time() - int(str(info.get("uptime_current_epoch", "")).rstrip("s"))
    except ValueError:
        started_at = None
    return node_id, started_at


def _unseen(run: _Run | None, now: float | None) -> dict:
    """The unseen windows of ended runs, and (``now`` given: the proxy is unreachable) the current one."""
    windows = list(run.unseen) if run else []
    if run is not None and now is not None:
        seconds, at_most = run.unseen_window(min(now, run.down_at or now))
        windows.append([run.read_at, round(seconds, 3), at_most])
    return {"unseen_since": [w[0] for w in windows], "unseen_seconds": round(sum(w[1] for w in windows), 3),
            "unseen_at_most": sum(w[2] for w in windows)}


def _lock(admin: str) -> asyncio.Lock:
    """One read of a proxy at a time (the API's watch and /api/proxies both read): two reads finishing
    out of order would look like counters falling, a restart that never happened."""
    return _LOCKS.setdefault(asyncio.get_running_loop(), {}).setdefault(admin, asyncio.Lock())


async def account_one(admin: str, arrived: Mapping[str, int], timeout: float = 2.0,
                      dies_with_watcher_s: tuple[float, float] | None = None,
                      http: httpx.AsyncClient | None = None, settle_s: float = SETTLE_S) -> ProxyLoss:
    """The account of one proxy reached through its admin address ("host:port"). ``dies_with_watcher_s``:
    the proxy dies with the process that reads it (``meshscope up``'s own Envoy: parent-death signal),
    which read it at least this often (while its counters move, otherwise); a run recalled from the
    memory of a watcher that died since ended then within that long of its last read."""
    async with _lock(admin), contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        return await _account_one(http, admin, arrived, dies_with_watcher_s, settle_s)


async def _account_one(http: httpx.AsyncClient, admin: str, arrived: Mapping[str, int],
                       dies_with_watcher_s: tuple[float, float] | None, settle_s: float) -> ProxyLoss:
    try:
        counters = await _proxy_stats(http, admin)
        now = time.time()
        counts = access_log_counts(counters)
        uptime = float(counters.get("server.uptime", 0))
        prev = _RUNS.get(admin)
        restarted = prev is not None and _restarted(prev, uptime, counts["logs_written"],
                                                    counts["logs_dropped"], now)
        run = _Run(now - uptime, counts["logs_written"], counts["logs_dropped"], read_at=now, uptime=uptime)
        if prev is None or restarted or prev.node_id is None:
            run.node_id, exact = await _server_info(http, admin)
            run.started_at = exact or run.started_at
        died_by = None
        if prev is not None and admin in _RECALLED and dies_with_watcher_s is not None:
            busy_s, idle_s = dies_with_watcher_s
            died_by = prev.read_at + (busy_s if prev.moving else idle_s)
        run = _RUNS[admin] = _follow(prev, run, restarted, died_by)
        _RECALLED.discard(admin)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        prev = _RUNS.get(admin)
        if prev is not None and prev.down_at is None:
            prev.down_at = time.time()
        return ProxyLoss(admin=admin, node_id=prev.node_id if prev else None, reachable=False,
                         error=f"admin unreachable: {exc}", read_at=prev.read_at if prev else None,
                         **_unseen(prev, time.time()))
    node_id, started_at = run.node_id, run.started_at
    written, dropped = run.carried_written + run.written, run.carried_dropped + run.dropped
    run.samples.append([now, written, dropped])
    got = arrived.get(node_id or "", 0)
    settled = run.settled(now, settle_s)
    unseen = _unseen(run, None)
    error = None
    if got > written - dropped + unseen["unseen_at_most"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started_at)) if started_at else "?"
        error = (f"counters reset: the proxy (re)started at {when} UTC and counts only since then, "
                 f"but {got} records arrived in all; entries lost before the restart cannot be counted")
    return ProxyLoss(
        admin=admin, node_id=node_id, reachable=True, written=written, dropped=dropped,
        connect_failures=cluster_stat(counters, ALS_CLUSTER, "upstream_cx_connect_fail"),
        arrived=got, gap=max(written - dropped - got, 0), error=error, started_at=started_at,
        restarts=run.restarts, read_at=now, **unseen,
        gap_settled=None if settled is None else max(settled[1] - settled[2] - got, 0),
    )


async def account(proxy_admins: list[str], arrived: Mapping[str, int],
                  timeout: float = 2.0, memory: Path | None = None,
                  bundled: Mapping[str, tuple[float, float]] | None = None,
                  http: httpx.AsyncClient | None = None, settle_s: float = SETTLE_S) -> list[ProxyLoss]:
    """Per-proxy loss for every admin address. ``arrived`` maps node id → access records stored for it
    (``StoreReader.node_ids()``: the one definition of "arrived"). Unreachable proxies are reported,
    never raised. ``memory``: a file that keeps the proxies' runs across restarts of this process.
    ``bundled``: admin → the longest gaps between this process's reads of a proxy that dies with it
    (while its counters move, and otherwise).
    ``http``: a client to reuse (a new one costs ~30 ms of CPU: its TLS context), else one per call.
    ``settle_s``: how old a read must be for ``gap_settled`` (entries younger may still be in flight)."""
    if memory is not None:
        _recall(memory, proxy_admins)
    bundled = bundled or {}
    losses = list(await asyncio.gather(*(account_one(a, arrived, timeout, bundled.get(a), http, settle_s)
                                         for a in proxy_admins)))
    if memory is not None:
        _remember(memory)
    return losses
