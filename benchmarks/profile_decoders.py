"""Where `meshscope pcap analyze --json` spends its CPU on the 1 M-packet benchmark capture, worker and
main process apart, by stage: what to measure before changing the decoders for speed.

    .venv/bin/python benchmarks/profile_decoders.py [--packets 1000000] [--repeat 3] [--cprofile DIR]

Worker (shard 0 of 2, in this process, CPU seconds, the least of --repeat runs): reading alone (the
capture reader and the struct-level cut), + the connection table and analyzers (Exchanges made),
+ what a worker sends (slim, JSON lines, fact tuples, pickling: decoders.parallel._worker itself).
Main process: the whole analyze() with its two workers (its own CPU and theirs), each stitching stage,
and writing the JSON. CPU time, not wall: on a shared machine wall time says more about the
neighbours. ``--cprofile DIR`` also writes worker.prof and main.prof (cProfile's per-call overhead
inflates small functions: read it for the call graph, not for shares)."""

from __future__ import annotations

import argparse
import cProfile
import gc
import multiprocessing
import os
import resource
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meshscope.decoders import analysis, parallel  # noqa: E402
from meshscope.decoders.backends.dpkt_backend import DpktBackend  # noqa: E402
from meshscope.decoders.capture_file import ReadStats  # noqa: E402

from benchmarks.make_capture import write_http_tls  # noqa: E402

STITCH_STAGES = ("build_legs", "match_nat", "place_loopback", "match_proxy", "inferred_tls_links",
                 "build_flows", "lookups_before")


def _shard_backend() -> DpktBackend:
    b = DpktBackend()
    b.shard = (0, 2)
    return b


def read_only(path: Path) -> None:
    for _ in _shard_backend().segments(path, ReadStats(), None):
        pass


def table(path: Path) -> None:
    for _ in _shard_backend().decode(path, capture=path.name):
        pass


def worker(path: Path) -> None:
    """decoders.parallel._worker as the CLI runs it, its pipe drained by a thread."""
    recv, send = multiprocessing.Pipe(duplex=False)

    def drain() -> None:
        try:
            while True:
                recv.recv_bytes()
        except EOFError:
            pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    parallel._worker(str(path), path.name, 0, 2, send)
    t.join()


def cpu_of(fn, path: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.disable()  # as in the workers
        start = time.process_time()
        fn(path)
        best = min(best, time.process_time() - start)
        gc.enable()
    return best


def main_process(path: Path) -> dict[str, float]:
    """CPU of analyze() (this process and its workers), per stitching stage, and of writing."""
    spent: dict[str, float] = {}

    def timed(name: str, fn):
        def run(*a, **k):
            start = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - start
        return run

    saved = {name: getattr(analysis, name) for name in STITCH_STAGES}
    for name, fn in saved.items():
        setattr(analysis, name, timed(name, fn))
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.process_time()
        result = analysis.analyze([path])
        spent["main: analyze() in all"] = time.process_time() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent["workers: both together"] = ((after.ru_utime + after.ru_stime)
                                           - (before.ru_utime + before.ru_stime))
        start = time.process_time()
        with open(os.devnull, "wb") as out:
            result.write_json(out)
        spent["main: write_json"] = time.process_time() - start
    finally:
        for name, fn in saved.items():
            setattr(analysis, name, fn)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cprofile", type=Path, help="also write worker.prof and main.prof here")
    a = ap.parse_args()
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    capture = out / f"http_tls_{a.packets}.pcap"
    if not capture.exists():
        write_http_tls(capture, a.packets)
    print(f"{capture.name}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    stages = [("read (capture reader + cut)", read_only), ("+ table and analyzers", table),
              ("+ what a worker sends", worker)]
    prev = 0.0
    for name, fn in stages:
        cpu = cpu_of(fn, capture, a.repeat)
        print(f"worker 0 of 2  {name:34} {cpu:6.2f} s CPU  (this stage {cpu - prev:+.2f})")
        prev = cpu
    for name, cpu in main_process(capture).items():
        print(f"{'stitch: ' + name if name in STITCH_STAGES else name:48} {cpu:6.2f} s CPU")
    if a.cprofile:
        a.cprofile.mkdir(parents=True, exist_ok=True)
        cProfile.runctx("worker(capture)", globals(), {"capture": capture}, str(a.cprofile / "worker.prof"))
        # the workers fork with the profiler on and are slowed by it; main.prof is this process only
        cProfile.runctx("analysis.analyze([capture]).write_json(open(os.devnull, 'wb'))", globals(),
                        {"capture": capture}, str(a.cprofile / "main.prof"))
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
