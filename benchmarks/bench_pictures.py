"""A capture's picture: `meshscope pcap analyze FILE --svg OUT` (text and SVG; a capture this big gets the
overview of hosts and conversations) against Wireshark's own text pictures of the same file,
`tshark -q -z flow,tcp,network` (its Flow Graph) and `tshark -q -z conv,tcp` (its Conversations), in the
same run, alternating; and what drawing adds to `meshscope pcap analyze --json` (decoding alone).

    .venv/bin/python benchmarks/bench_pictures.py [--packets 200000] [--repeat 3]

The capture (HTTP and TLS, benchmarks/make_capture.py) is generated once and cached in benchmarks/out/."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.make_capture import write_http_tls  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
MESHSCOPE = str(Path(sys.executable).parent / "meshscope")


def timed(cmd: list[str]) -> float:
    """Wall seconds of one run (output to a file: a terminal or pipe would be measured too)."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode})")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each; medians compared")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    capture = OUT / f"http_tls_{a.packets}.pcap"
    if not capture.exists():
        write_http_tls(capture, a.packets)
    svg = OUT / f"picture_{a.packets}.svg"
    print(f"capture: {capture.name}, {a.packets} packets, {capture.stat().st_size / 1e6:.0f} MB; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    tshark = shutil.which("tshark")
    commands = {
        "meshscope pcap analyze --svg (text + SVG picture)": [MESHSCOPE, "pcap", "analyze", str(capture),
                                                               "--svg", str(svg)],
        "meshscope pcap analyze --json (decoding, no picture)": [MESHSCOPE, "pcap", "analyze", "--json",
                                                                 str(capture)],
    }
    if tshark:
        commands["tshark -z flow,tcp,network (Flow Graph)"] = [tshark, "-r", str(capture), "-q", "-z",
                                                               "flow,tcp,network"]
        commands["tshark -z conv,tcp (Conversations)"] = [tshark, "-r", str(capture), "-q", "-z", "conv,tcp"]
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(a.repeat):  # alternating: a burst of load elsewhere does not land on one side only
        for name, cmd in commands.items():
            runs[name].append(timed(cmd))
    med = {name: statistics.median(r) for name, r in runs.items()}
    for name, r in runs.items():
        print(f"{name:<55} {med[name]:7.2f} s   (runs {', '.join(f'{x:.2f}' for x in r)})")
    ours = med["meshscope pcap analyze --svg (text + SVG picture)"]
    decode = med["meshscope pcap analyze --json (decoding, no picture)"]
    print(f"picture's share: {ours / decode:.2f}× the time of decoding alone; SVG {svg.stat().st_size} bytes")
    for name in ("tshark -z flow,tcp,network (Flow Graph)", "tshark -z conv,tcp (Conversations)"):
        if name in med:
            print(f"ratio {name} / ours: {med[name] / ours:.2f}×")


if __name__ == "__main__":
    main()
