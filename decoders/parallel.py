"""One big capture decoded by several processes at once, each taking its share of the connections.

Every worker reads the whole file (reading and the struct-level prefilter are cheap) but
dissects and parses only the connections of its shard (DpktBackend.shard: the XOR of the two
ports' low bytes, the same both ways). A worker sends its exchanges in batches, each already
serialised (JSON lines for the spool) together with their facts as plain tuples (each connection
sent once, then named by a number), and a report at the end. Batches are taken from the workers
in turn, so the result does not depend on timing.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import multiprocessing
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from meshscope.decoders.backends.base import CaptureReport
from meshscope.decoders.spool import ExchangeFacts, slim

from meshscope.errors import CaptureError
from meshscope.model import Connection

BATCH = 500  # exchanges per message: pickling and pipe calls amortised, little memory held
PIPE_BYTES = 1 << 20
MAX_KEYS = 4096  # connections a worker remembers having sent (a connection's exchanges come close together)
_END, _ERROR = "end", "error"
Batch = tuple[bytes, list[ExchangeFacts]]


def _worker(path: str, capture: str, shard: int, count: int, conn, keylog=None, names=None) -> None:
    """Decode one shard of the capture and send (lines, fact tuples, new connections, offset)
    batches, then the report."""
    from meshscope.decoders.backends.dpkt_backend import DpktBackend

    offset = [0]

    def progress(off: int) -> None:
        offset[0] = off

    gc.disable()  # closed connections are freed by reference counting (ConnectionTable._close)
    try:
        backend = DpktBackend()
        backend.shard = (shard, count)
        backend.keylog = keylog
        backend.names = names
        lines: list[bytes] = []
        facts: list[tuple] = []
        keys: dict[tuple, int] = {}  # each connection is sent once, then named by its key
        next_key = 0
        new_conns: list[tuple] = []
        dumps, facts_of, conn_tuple = orjson.dumps, ExchangeFacts.tuple_of, ExchangeFacts.conn_tuple
        for ex in backend.decode(Path(path), capture=capture, progress=progress):
            slim(ex)
            lines.append(dumps(ex))
            ct = conn_tuple(ex.conn)
            key = keys.get(ct)
            if key is None:
                if len(keys) >= MAX_KEYS:  # forget the oldest; one still open is just sent again
                    keys.clear()
                key = keys[ct] = next_key
                next_key += 1
                new_conns.append(ct)
            facts.append(facts_of(ex, key))
            if len(lines) >= BATCH:
                conn.send_bytes(pickle.dumps((b"\n".join(lines) + b"\n", facts, new_conns, offset[0]), 5))
                lines, facts, new_conns = [], [], []
        if lines:
            conn.send_bytes(pickle.dumps((b"\n".join(lines) + b"\n", facts, new_conns, offset[0]), 5))
        conn.send_bytes(pickle.dumps((_END, backend.report), 5))
    except Exception as exc:  # the parent turns it into one line for the user
        conn.send_bytes(pickle.dumps((_ERROR, f"{type(exc).__name__}: {exc}"), 5))
    finally:
        conn.close()


def _widen(conn) -> None:
    """A pipe holding a few batches (not the default 64 KB, less than one): a worker runs ahead
    instead of waiting while the main process reads the other worker's batch."""
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):  # not Linux, or above /proc/sys/fs/pipe-max-size: keep the default
        pass


def can_start_workers() -> bool:
    """A daemonic process (a multiprocessing.Pool worker, say) may not have children."""
    return not multiprocessing.current_process().daemon


def decode_sharded(path: Path, capture: str, workers: int, reports: list[CaptureReport],
                   progress: Callable[[int], None] | None = None, keylog=None, names=None) -> Iterator[Batch]:
    """Batches of (JSON lines, facts) from ``workers`` processes; appends the merged report once done."""
    # fork is quick and safe from a single-threaded process (the CLI); spawn otherwise
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    procs, pipes = [], []
    for i in range(workers):
        recv, send = ctx.Pipe(duplex=False)
        _widen(send)
        p = ctx.Process(target=_worker, args=(str(path), capture, i, workers, send, keylog, names),
                        daemon=True)
        p.start()
        send.close()
        procs.append(p)
        pipes.append(recv)
    conns: list[list[Connection]] = [[] for _ in range(workers)]  # each worker's, by key
    done: list[CaptureReport] = []
    try:
        live = list(range(workers))
        while live:
            for i in list(live):
                try:
                    msg = pickle.loads(pipes[i].recv_bytes())
                except EOFError:
                    raise CaptureError(f"{path}: decoder worker {i} died") from None
                if msg[0] == _END:
                    done.append(msg[1])
                    live.remove(i)
                elif msg[0] == _ERROR:
                    raise CaptureError(f"{path}: {msg[1]}")
                else:
                    lines, facts, new_conns, offset = msg
                    if progress is not None and i == 0:
                        progress(offset)
                    known = conns[i]
                    known.extend(ExchangeFacts.conn_of(ct) for ct in new_conns)
                    yield lines, [ExchangeFacts.from_tuple(t, known) for t in facts]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
        for r in pipes:
            r.close()
    reports.append(merge_reports(done))


def merge_reports(parts: list[CaptureReport]) -> CaptureReport:
    """One report from the shards': they read the same packets, and split connections and exchanges."""
    first = parts[0]
    damage: dict[str, None] = {}
    for r in parts:
        damage.update(dict.fromkeys(r.damage))  # reading damage is seen by every shard: once
    unlisted = sum(max(0, r.damage_count - len(r.damage)) for r in parts)
    return dataclasses.replace(first, connections=sum(r.connections for r in parts),
                               cut_by_snaplen=sum(r.cut_by_snaplen for r in parts),
                               exchanges=sum(r.exchanges for r in parts), damage=list(damage),
                               damage_count=len(damage) + unlisted,  # not_decoded: the first's
                               datagrams=sum(r.datagrams for r in parts),  # UDP is split among the shards
                               quic_connections=sum(r.quic_connections for r in parts),
                               dns_lookups=sum(r.dns_lookups for r in parts))
