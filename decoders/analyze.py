"""The public entry point: captures in, Exchanges + stitched Flows + per-capture reports out.

``analyze(paths)`` streams each capture through a decoder backend and keeps only what stitching
needs (one record per exchange, copies folded away); ``stitch(exchanges)`` does the stitching
alone, for exchanges from anywhere (an upload, a test).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from decoders.backends import DEFAULT_BACKEND, CaptureReport, get_backend
from decoders.flows import build_flows
from decoders.legs import fold_copies
from decoders.nat_hops import build_legs, match_nat
from decoders.proxy_hops import match_proxy
from meshscope.errors import CaptureError
from meshscope.model import Exchange, Flow

Progress = Callable[[int, int], None]  # (bytes done over all captures, total bytes)


@dataclass(slots=True)
class Analysis:
    """What a set of captures showed: exchanges (copies folded), flows, and one report per capture."""

    exchanges: list[Exchange]
    flows: list[Flow]
    reports: list[CaptureReport] = field(default_factory=list)
    duplicates: int = 0  # exchange copies folded away (same connection on another interface/capture)

    def by_id(self) -> dict[str, Exchange]:
        return {ex.id: ex for ex in self.exchanges}

    def to_dict(self) -> dict:
        return {
            "captures": [dataclasses.asdict(r) for r in self.reports],
            "flows": [f.to_dict() for f in self.flows],
            "exchanges": [e.to_dict() for e in self.exchanges],
            "duplicates": self.duplicates,
        }

    def to_json(self) -> bytes:
        return orjson.dumps({
            "captures": [dataclasses.asdict(r) for r in self.reports],
            "flows": self.flows, "exchanges": self.exchanges, "duplicates": self.duplicates,
        })


def stitch(exchanges: Iterable[Exchange]) -> Analysis:
    """Fold copies, match NAT hops, match proxy hops and build flows."""
    sightings = fold_copies(exchanges)
    legs = build_legs(sightings, match_nat(sightings))
    flows = build_flows(legs, match_proxy(legs))
    kept = sorted((ex for s in sightings for ex in s.exchanges),
                  key=lambda e: (e.conn.capture, e.request_time or 0))
    return Analysis(exchanges=kept, flows=flows, duplicates=sum(len(s.duplicates) for s in sightings))


def capture_names(paths: Sequence[Path]) -> list[str]:
    """File names, or the whole paths where two captures share a file name."""
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def analyze(paths: Sequence[str | Path], backend: str = DEFAULT_BACKEND,
            progress: Progress | None = None) -> Analysis:
    """Decode the captures (analysed together: a NAT's two sides may be in two files) and stitch them.
    Raises CaptureError (a UserError) when a file cannot be read at all."""
    files = [Path(p) for p in paths]
    if not files:
        raise CaptureError("no capture given")
    for f in files:
        if not f.is_file():
            raise CaptureError(f"{f}: no such capture file")
    get_backend(backend)  # an unknown backend fails here, before any work
    reports: list[CaptureReport] = []
    analysis = stitch(_decode_all(files, backend, progress, reports))
    analysis.reports = reports
    return analysis


def _decode_all(files: list[Path], backend: str, progress: Progress | None,
                reports: list[CaptureReport]) -> Iterator[Exchange]:
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    done = 0
    for f, size, name in zip(files, sizes, capture_names(files), strict=True):
        decoder = get_backend(backend)
        tick = None
        if progress is not None:
            base = done
            def tick(offset: int, base: int = base) -> None:
                progress(base + offset, total)
        yield from decoder.decode(f, capture=name, progress=tick)
        done += size
        if progress is not None:
            progress(done, total)
        reports.append(decoder.report or CaptureReport(capture=name))
