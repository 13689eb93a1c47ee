"""The public entry point: captures in, Exchanges + stitched Flows + per-capture reports out.

``analyze(paths)`` streams each capture through a decoder backend, parks the exchanges on disk
(decoders.spool) and stitches their facts, so memory holds what stitching needs and not every
exchange. ``stitch(exchanges)`` does the stitching alone, on exchanges from anywhere (a test).
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson
from meshscope.decoders.backends import DEFAULT_BACKEND, CaptureReport, get_backend
from meshscope.decoders.dns_flows import lookups_before
from meshscope.decoders.flows import build_flows
from meshscope.decoders.legs import fold_copies, place_loopback
from meshscope.decoders.nat_hops import build_legs, match_nat
from meshscope.decoders.proxy_hops import match_proxy
from meshscope.decoders.spool import ExchangeFacts, ExchangeSpool, slim
from meshscope.decoders.tls_termination import inferred_tls_links

from meshscope.errors import CaptureError
from meshscope.model import Exchange, Flow

Progress = Callable[[int, int], None]  # (bytes done over all captures, total bytes)
Batch = tuple[bytes, list[ExchangeFacts]]  # exchanges as JSON lines, and their facts in the same order
PARALLEL_MIN_BYTES = 32 << 20  # below this one process is quicker than starting more
MAX_WORKERS = 2  # each worker reads the whole file: beyond two, the reading outweighs the split

@dataclass(slots=True)
class Analysis:
    """What a set of captures showed: exchanges (copies folded), flows, and one report per capture.

    ``exchanges`` iterates as Exchange records (a list, or the on-disk spool of analyze());
    ``by_id()`` gives what the renderers read for each kept exchange. ``write_json`` writes the one
    document of an analysis — ``{captures, duplicates, flows, exchanges}`` — that both
    ``meshscope pcap analyze --json`` prints and ``GET /api/pcaps/{id}/flows`` serves."""

    exchanges: Sequence[Exchange] | ExchangeSpool
    flows: list[Flow]
    reports: list[CaptureReport] = field(default_factory=list)
    duplicates: int = 0  # exchange copies folded away (same connection on another interface/capture)
    folded: set[str] = field(default_factory=set)  # their ids
    stitched: list = field(default_factory=list)  # the kept exchanges (or their facts), copies folded

    def by_id(self) -> dict[str, Exchange | ExchangeFacts]:
        return {ex.id: ex for ex in self.stitched}

    def _exchange_pieces(self) -> Iterator[bytes]:
        """The exchanges' JSON, comma-separated, in pieces."""
        if isinstance(self.exchanges, ExchangeSpool):
            yield from self.exchanges.joined(b",")
        else:
            for i, ex in enumerate(self.exchanges):
                yield b"," + orjson.dumps(ex) if i else orjson.dumps(ex)

    def _head(self, lead: Mapping[str, object] | None) -> bytes:
        """The document's opening fields, without its closing brace; ``lead`` fields come first."""
        head = {**(lead or {}), "captures": [dataclasses.asdict(r) for r in self.reports],
                "duplicates": self.duplicates}
        return orjson.dumps(head)[:-1]

    def to_dict(self, lead: Mapping[str, object] | None = None) -> dict:
        return orjson.loads(self.to_json(lead))

    def to_json(self, lead: Mapping[str, object] | None = None) -> bytes:
        return (self._head(lead) + b',"flows":' + orjson.dumps(self.flows) + b',"exchanges":['
                + b"".join(self._exchange_pieces()) + b"]}")

    def write_json(self, out: BinaryIO, lead: Mapping[str, object] | None = None) -> None:
        """The same document as to_json(), written piece by piece: never the whole text in memory.
        ``lead``: fields put before the analysis's own (an upload's ``id``)."""
        out.write(self._head(lead) + b',"flows":[')
        for i, flow in enumerate(self.flows):
            out.write(b"," + orjson.dumps(flow) if i else orjson.dumps(flow))
        out.write(b'],"exchanges":[')
        for piece in self._exchange_pieces():
            out.write(piece)
        out.write(b"]}")


def stitch(exchanges: Iterable[Exchange | ExchangeFacts]) -> Analysis:
    """Fold copies, match NAT hops, match proxy hops and build flows."""
    sightings = fold_copies(exchanges)  # type: ignore[arg-type]
    legs = build_legs(sightings, match_nat(sightings))
    place_loopback(legs)
    links = match_proxy(legs)
    flows = build_flows(legs, links + inferred_tls_links(legs, links), lookups_before(legs))
    kept = sorted((ex for s in sightings for ex in s.exchanges),
                  key=lambda e: (e.conn.capture, e.request_time or 0))
    folded = {i for s in sightings for i in s.duplicates}
    if folded:  # an id both kept and folded (one capture given twice) must still be written once
        folded.difference_update(ex.id for ex in kept)
    return Analysis(exchanges=kept, flows=flows, stitched=kept, folded=folded,
                    duplicates=sum(len(s.duplicates) for s in sightings))


def capture_names(paths: Sequence[Path]) -> list[str]:
    """File names, or the whole paths where two captures share a file name."""
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def analyze(paths: Sequence[str | Path], backend: str = DEFAULT_BACKEND,
            progress: Progress | None = None, workers: int | None = None, keylog=None,
            names=None) -> Analysis:
    """Decode the captures (analysed together: a NAT's two sides may be in two files) and stitch them.
    ``workers``: decode processes per capture (default: one per core for a dpkt capture of at
    least PARALLEL_MIN_BYTES, else 1). ``keylog`` (decoders.tls_keylog.KeyLog) decrypts TLS;
    pcapng Decryption Secrets Blocks are read either way. ``names`` (decoders.pod_labels.K8sNames)
    labels connections with pod and service names by IP (ptcpdump's packet comments label them
    either way). A capture that cannot be read (missing, a directory, garbage, a decoder failing
    on it) gets a report with its ``error`` and the others are still analysed; CaptureError (a
    UserError) only when none could be read."""
    files = [Path(p) for p in paths]
    if not files:
        raise CaptureError("no capture given")
    get_backend(backend)  # an unknown backend fails here, before any work
    reports: list[CaptureReport] = []
    spool = ExchangeSpool()
    # the facts of a big capture are a large heap without cycles: the cyclic GC would walk it again
    # and again for nothing (a third of this process's time on a million packets)
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        analysis = stitch(spool.park_batches(_decode_all(files, backend, progress, reports, workers, keylog,
                                                         names)))
    finally:
        if gc_was_on:
            gc.enable()
    if all(r.error for r in reports):
        spool.close()
        raise CaptureError("; ".join(r.error for r in reports if r.error))
    spool.skip = analysis.folded  # the copies stitching folded away
    analysis.exchanges = spool
    analysis.reports = reports
    return analysis


def _workers(backend: str, size: int, workers: int | None) -> int:
    from meshscope.decoders.parallel import can_start_workers

    if backend != "dpkt" or not can_start_workers():
        return 1
    if workers is not None:
        return max(1, workers)
    if size < PARALLEL_MIN_BYTES:
        return 1  # starting processes costs more than a small capture takes
    return min(os.cpu_count() or 1, MAX_WORKERS)


def _batches(exchanges: Iterable[Exchange], size: int = 1000) -> Iterator[Batch]:
    """(JSON lines, facts) batches of exchanges decoded in this process."""
    lines: list[bytes] = []
    facts: list[ExchangeFacts] = []
    for ex in exchanges:
        slim(ex)
        lines.append(orjson.dumps(ex))
        facts.append(ExchangeFacts.of(ex))
        if len(lines) >= size:
            yield b"\n".join(lines) + b"\n", facts
            lines, facts = [], []
    if lines:
        yield b"\n".join(lines) + b"\n", facts


def _decode_all(files: list[Path], backend: str, progress: Progress | None,
                reports: list[CaptureReport], workers: int | None, keylog=None,
                names=None) -> Iterator[Batch]:
    sizes = [_size(f) for f in files]
    total = sum(sizes)
    done = 0
    for f, size, name in zip(files, sizes, capture_names(files), strict=True):
        try:
            yield from _decode_one(f, size, name, backend, progress, reports, workers, keylog, names, done,
                                   total)
        except Exception as exc:  # one bad capture is reported; the others are still analysed
            why = str(exc) if isinstance(exc, CaptureError) else \
                f"{f}: cannot decode: {type(exc).__name__}: {exc}"
            why = why.replace(str(f), name)  # the capture's name, as in its report (not a server's path)
            if not reports or reports[-1].capture != name:
                reports.append(CaptureReport(capture=name))
            reports[-1].error = why
        done += size
        if progress is not None:
            progress(done, total)


def _size(f: Path) -> int:
    try:
        return f.stat().st_size if f.is_file() else 0
    except OSError:
        return 0


def _decode_one(f: Path, size: int, name: str, backend: str, progress: Progress | None,
                reports: list[CaptureReport], workers: int | None, keylog, names, done: int,
                total: int) -> Iterator[Batch]:
    tick = None
    if progress is not None:
        def tick(offset: int, base: int = done) -> None:
            progress(base + offset, total)
    n = _workers(backend, size, workers)
    if n > 1:
        from meshscope.decoders.parallel import decode_sharded

        yield from decode_sharded(f, name, n, reports, tick, keylog=keylog, names=names)
        return
    decoder = get_backend(backend)
    decoder.keylog = keylog
    decoder.names = names
    try:
        yield from _batches(decoder.decode(f, capture=name, progress=tick))
    finally:  # a decoder failing mid-file still has a report of what it read
        reports.append(decoder.report or CaptureReport(capture=name))
