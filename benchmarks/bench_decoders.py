"""Decoder speed: `meshscope pcap analyze --json` against `tshark -T fields` extracting the same facts
(5-tuple, method, URI, host, x-forwarded-for, x-request-id, SNI) from one capture of ≥1 M packets of
HTTP and TLS, measured in the same run (the median of --repeat alternating runs of each); peak
memory of ours (all its processes); and the scapy and pyshark backends on a slice of the same file,
extrapolated per packet.

    .venv/bin/python benchmarks/bench_decoders.py [--packets 1000000] [--slice 20000] [--repeat 3]

The capture is generated once (struct templates, seconds) and cached in benchmarks/out/."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meshscope.decoders.capture_file import read_capture  # noqa: E402

from benchmarks.make_capture import write_http_tls  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
PY = sys.executable
MESHSCOPE = str(Path(PY).parent / "meshscope")
TSHARK_FIELDS = [
    "ip.src",
    "tcp.srcport",
    "ip.dst",
    "tcp.dstport",
    "http.request.method",
    "http.request.uri",
    "http.host",
    "http.x_forwarded_for",
    "http.request.line",
    "tls.handshake.extensions_server_name",
]
DECODE_ONLY = """
import sys, orjson
from meshscope.decoders.read import read_exchanges
stream, report = read_exchanges(sys.argv[1], sys.argv[2])
out = sys.stdout.buffer
for e in stream:
    out.write(orjson.dumps(e) + b"\\n")
print(report, file=sys.stderr)
"""


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc/PID/task/TID/children (cheap: the sampling loop
    must not take CPU from what it measures)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # gone meanwhile
    return out


def _rss_kb(pid: int) -> tuple[int, int]:
    """A process's resident memory now (VmRSS) and its peak so far (VmHWM), in KB; 0 once it is gone."""
    now = peak = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    now = int(line.split()[1])
    except OSError:
        pass
    return now, peak


def run(cmd: list[str]) -> tuple[float, float, float, float, int]:
    """Wall seconds, CPU seconds (user + system, children included), peak memory (MB) and how many
    processes one command ran, output discarded. Peak memory is the largest sum of the resident
    memory (VmRSS) of all its processes at one moment, sampled every 20 ms; also returned is the sum
    of each process's own peak (VmHWM), an upper bound since they need not peak at once. CPU time
    is the fairer comparison on a shared, busy machine; both are printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # stderr into a file, not a pipe: a tool that warns a lot (tshark's dissector warnings) would
    # fill the pipe and block, since it is read only at the end
    err_file = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, cwd=ROOT)
    peaks: dict[int, int] = {}
    peak_sum = 0
    while p.poll() is None:
        total = 0
        for pid in _tree(p.pid):
            now, peak = _rss_kb(pid)
            total += now
            peaks[pid] = max(peaks.get(pid, 0), peak)
        peak_sum = max(peak_sum, total)
        time.sleep(0.02)
    wall = time.perf_counter() - start
    err_file.seek(0)
    err = err_file.read()[-4000:].decode(errors="replace")
    err_file.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # grandchildren count once their parent waited
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, peak_sum / 1024, sum(peaks.values()) / 1024, len(peaks)


def write_slice(src: Path, dst: Path, packets: int) -> None:
    """The first ``packets`` packets of a pcap, as a pcap."""
    with open(dst, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i, rec in enumerate(read_capture(src)):
            if i == packets:
                break
            sec = int(rec.ts)
            usec = round((rec.ts - sec) * 1e6)
            f.write(struct.pack("<IIII", sec, usec, len(rec.data), rec.orig_len) + rec.data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--slice", type=int, default=20_000, help="packets for the scapy and pyshark runs")
    ap.add_argument("--skip-slow", action="store_true", help="skip the scapy and pyshark backends")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of ours and of tshark, alternating; the median run of each is compared")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    capture = OUT / f"http_tls_{a.packets}.pcap"
    if not capture.exists():
        t = time.perf_counter()
        write_http_tls(capture, a.packets)
        print(f"generated {capture} in {time.perf_counter() - t:.1f} s")
    size_mb = capture.stat().st_size / 1e6
    print(f"capture: {capture.name}, {a.packets} packets, {size_mb:.0f} MB")

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")

    results: dict[str, dict] = {}
    cli_ok = subprocess.run([MESHSCOPE, "pcap", "analyze", "--help"], capture_output=True).returncode == 0
    ours_cmd = (
        [MESHSCOPE, "pcap", "analyze", "--json", str(capture)]
        if cli_ok
        else [PY, "-c", DECODE_ONLY, str(capture), "dpkt"]
    )
    ours_name = "meshscope pcap analyze --json" if cli_ok else "dpkt backend (CLI missing)"

    def record(name: str, cmd: list[str]) -> None:
        """One more run of cmd; the row shows the median run (by wall time) and the spread."""
        wall, cpu, rss, rss_bound, procs = run(cmd)
        runs = results.setdefault(name, {"runs": []})["runs"]
        runs.append({"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": rss,
                     "sum_of_process_peaks_mb": rss_bound, "processes": procs})
        ordered = sorted(runs, key=lambda r: r["seconds"])
        results[name].update(ordered[(len(ordered) - 1) // 2])
        results[name]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        results[name]["sum_of_process_peaks_mb"] = max(r["sum_of_process_peaks_mb"] for r in runs)

    tshark = shutil.which("tshark")
    tshark_cmd = [tshark or "tshark", "-r", str(capture), "-Y", "http.request or tls.handshake.type == 1",
                  "-T", "fields"]
    for f in TSHARK_FIELDS:
        tshark_cmd += ["-e", f]
    # ours and tshark alternate, so that a burst of load elsewhere does not land on one side only
    for _ in range(a.repeat):
        record(ours_name, ours_cmd)
        if tshark:
            record("tshark -T fields", tshark_cmd)
    record("decoder only: dpkt backend, 1 process -> JSON lines",
           [PY, "-c", DECODE_ONLY, str(capture), "dpkt"])

    if not a.skip_slow:
        # per-packet cost from two slices, so interpreter start-up and tshark's own start are not counted
        tiny = 200
        part, small = OUT / f"http_tls_slice_{a.slice}.pcap", OUT / f"http_tls_slice_{tiny}.pcap"
        write_slice(capture, part, a.slice)
        write_slice(capture, small, tiny)
        for backend in ("dpkt", "scapy", "pyshark"):
            wall, cpu, rss, _, _ = run([PY, "-c", DECODE_ONLY, str(part), backend])
            wall0, _, _, _, _ = run([PY, "-c", DECODE_ONLY, str(small), backend])
            per_packet = max(wall - wall0, 0.0) / (a.slice - tiny)
            results[f"{backend} backend, {a.slice}-packet slice"] = {
                "seconds": wall,
                "cpu_seconds": cpu,
                "peak_rss_mb": rss,
                "us_per_packet": per_packet * 1e6,
                "extrapolated_seconds_full": wall0 + per_packet * a.packets,
            }

    print(f"\n{'what':52} {'wall s':>7} {'CPU s':>7} {'peak MB':>8} {'procs':>5}  note")
    for name, r in results.items():
        note = (
            f"{r['us_per_packet']:.0f} us/packet: ~{r['extrapolated_seconds_full']:.0f} s for {a.packets}"
            if "us_per_packet" in r
            else ""
        )
        if len(r.get("runs", ())) > 1:
            walls = ", ".join(f"{x['seconds']:.2f}" for x in r["runs"])
            note = f"median of {walls} s; peak MB: the largest"
        print(f"{name:52} {r['seconds']:7.2f} {r['cpu_seconds']:7.2f} {r['peak_rss_mb']:8.0f} "
              f"{r.get('processes', 1):5d}  {note}")
    if "tshark -T fields" in results:
        t, o = results["tshark -T fields"], results[ours_name]
        wall_ratio, cpu_ratio = t["seconds"] / o["seconds"], t["cpu_seconds"] / o["cpu_seconds"]
        print(
            f"\n{ours_name} vs tshark -T fields: {wall_ratio:.2f}x faster by wall time, "
            f"{cpu_ratio:.2f}x by CPU "
            f"time (goal >= 4x); peak memory {o['peak_rss_mb']:.0f} MB, all {o['processes']} processes "
            f"together (goal < 300 MB; sum of each process's own peak: {o['sum_of_process_peaks_mb']:.0f} MB)"
        )
        if o["processes"] > 1:
            print(f"  ours used {o['processes']} processes (decoding split across cores, "
                  f"{os.cpu_count()} here); tshark -T fields runs on one core")
        results["ratios_tshark_over_ours"] = {"wall": wall_ratio, "cpu": cpu_ratio}
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    (OUT / "bench_decoders.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
