"""HTTP/2 + gRPC decoder speed: `meshscope pcap analyze --json` against `tshark -T fields` extracting the
same facts (5-tuple, stream id, :method, :path, :authority, x-request-id, :status, grpc-status) from
one capture of >= 1 M packets (benchmarks.make_h2_capture: many connections, interleaved streams,
HPACK dynamic-table hits), measured in the same run (the median of --repeat alternating runs of each),
with the peak memory of all processes of each side.

    .venv/bin/python benchmarks/bench_h2.py [--packets 1000000] [--repeat 3]

tshark is told the gRPC port is HTTP/2 (`-d`; it finds the preface itself only on HTTP ports), and
reads x-request-id and grpc-status from the header name and value lists (its custom-header fields need
a profile). The capture is generated once and cached in benchmarks/out/."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_decoders import MESHSCOPE, run  # noqa: E402
from benchmarks.make_h2_capture import GRPC_PORT, H2_PORT, write_h2_grpc  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
TSHARK_FIELDS = [
    "ip.src",
    "tcp.srcport",
    "ip.dst",
    "tcp.dstport",
    "http2.streamid",
    "http2.headers.method",
    "http2.headers.path",
    "http2.headers.authority",
    "http2.headers.status",
    "http2.header.name",  # x-request-id and grpc-status are read from these two lists
    "http2.header.value",
]
AGGREGATOR = "\x1f"  # between a field's occurrences in one packet (header values hold commas)


def tshark_cmd(capture: Path) -> list[str]:
    cmd = [shutil.which("tshark") or "tshark", "-r", str(capture), "-d", f"tcp.port=={GRPC_PORT},http2",
           "-d", f"tcp.port=={H2_PORT},http2", "-Y", "http2.type == 1", "-T", "fields",
           "-E", "occurrence=a", "-E", f"aggregator={AGGREGATOR}"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    return cmd


def tshark_streams(capture: Path) -> dict[tuple, dict]:
    """Per stream, keyed (client, client port, server, server port, stream id): what tshark's HEADERS
    frames say. Each packet of the generated captures carries frames of one stream."""
    out = subprocess.run(tshark_cmd(capture), capture_output=True, text=True, check=True).stdout
    streams: dict[tuple, dict] = {}
    for line in out.splitlines():
        src, sport, dst, dport, sid, method, path, authority, status, names, values = line.split("\t")
        sid = sid.split(AGGREGATOR)[0]
        headers = dict(zip(names.split(AGGREGATOR), values.split(AGGREGATOR), strict=True))
        if method:  # a request: the client sent it
            key = (src, int(sport), dst, int(dport), int(sid))
            facts = streams.setdefault(key, {})
            facts.update(method=method, path=path, authority=authority,
                         request_id=headers.get("x-request-id"))
        else:
            key = (dst, int(dport), src, int(sport), int(sid))
            facts = streams.setdefault(key, {})
            if status:
                facts["status"] = int(status)
            if "grpc-status" in headers:
                facts["grpc_status"] = int(headers["grpc-status"])
    return streams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of ours and of tshark, alternating; the median run of each is compared")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    capture = OUT / f"h2_grpc_{a.packets}.pcap"
    if not capture.exists():
        t = time.perf_counter()
        streams = write_h2_grpc(capture, a.packets)
        print(f"generated {capture} ({len(streams)} streams) in {time.perf_counter() - t:.1f} s")
    print(f"capture: {capture.name}, {a.packets} packets, {capture.stat().st_size / 1e6:.0f} MB", flush=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")

    ours_name, tshark_name = "meshscope pcap analyze --json", "tshark -T fields"
    commands = {ours_name: [MESHSCOPE, "pcap", "analyze", "--json", str(capture)],
                tshark_name: tshark_cmd(capture)}
    results: dict[str, dict] = {}
    for _ in range(a.repeat):  # alternating, so a burst of load elsewhere does not land on one side only
        for name, cmd in commands.items():
            wall, cpu, rss, rss_bound, procs = run(cmd)
            r = results.setdefault(name, {"runs": []})
            r["runs"].append({"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": rss,
                              "sum_of_process_peaks_mb": rss_bound, "processes": procs})
            print(f"  {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MB", flush=True)
    print(f"\n{'what':32} {'wall s':>7} {'CPU s':>7} {'peak MB':>8} {'procs':>5}  runs (wall s)")
    for name, r in results.items():
        runs = sorted(r["runs"], key=lambda x: x["seconds"])
        r.update(runs[(len(runs) - 1) // 2])
        r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
        r["sum_of_process_peaks_mb"] = max(x["sum_of_process_peaks_mb"] for x in runs)
        walls = ", ".join(f"{x['seconds']:.2f}" for x in r["runs"])
        print(f"{name:32} {r['seconds']:7.2f} {r['cpu_seconds']:7.2f} {r['peak_rss_mb']:8.0f} "
              f"{r['processes']:5d}  {walls}")
    t, o = results[tshark_name], results[ours_name]
    wall_ratio, cpu_ratio = t["seconds"] / o["seconds"], t["cpu_seconds"] / o["cpu_seconds"]
    print(f"\n{ours_name} vs {tshark_name}: {wall_ratio:.2f}x faster by wall time, {cpu_ratio:.2f}x by CPU "
          f"time "
          f"(goal >= 3x); peak memory {o['peak_rss_mb']:.0f} MB, all {o['processes']} processes together "
          f"(goal < 300 MB; sum of each process's own peak: {o['sum_of_process_peaks_mb']:.0f} MB); "
          f"tshark {t['peak_rss_mb']:.0f} MB")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results["ratios_tshark_over_ours"] = {"wall": wall_ratio, "cpu": cpu_ratio}
    (OUT / "bench_h2.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
