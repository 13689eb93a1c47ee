"""TLS decryption speed: `meshscope pcap analyze --json --keylog K` against `tshark -o tls.keylog_file:K`
extracting the same facts (5-tuple, SNI, and from the decrypted HTTP/1 and HTTP/2 requests method, path,
authority, x-request-id) from one capture of ≥200,000 packets of real TLS 1.3 and 1.2, HTTP/1.1 and h2
traffic through the bundled Envoy (benchmarks.make_tls_capture), measured in the same run, alternating;
peak memory of all processes of each.

    .venv/bin/python benchmarks/bench_tls_decrypt.py [--packets 200000] [--repeat 3]   # needs root

The capture and its key log are made once and cached in benchmarks/out/."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_decoders import run  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
MESHSCOPE = str(Path(sys.executable).parent / "meshscope")
TSHARK_FIELDS = ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "tls.handshake.extensions_server_name",
                 "http.request.method", "http.request.uri", "http.host", "http.request.line",
                 "http2.headers.method", "http2.headers.path", "http2.headers.authority",
                 "http2.header.value"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    capture = OUT / f"tls-{args.packets}.pcap"
    keys = capture.with_suffix(".keys")
    if not capture.exists() or not keys.exists():
        subprocess.run([sys.executable, "-m", "benchmarks.make_tls_capture", str(capture), "--packets",
                        str(args.packets)], check=True, cwd=ROOT)
    tshark = shutil.which("tshark")
    ours_cmd = [MESHSCOPE, "pcap", "analyze", "--json", "--keylog", str(keys), str(capture)]
    tshark_cmd = [tshark or "tshark", "-r", str(capture), "-o", f"tls.keylog_file:{keys}",
                  "-Y", "http.request or http2.headers.method or tls.handshake.type == 1", "-T", "fields"]
    for f in TSHARK_FIELDS:
        tshark_cmd += ["-e", f]
    samples: dict[str, list[tuple]] = {"ours": [], "tshark": []}
    for _ in range(args.repeat):
        samples["ours"].append(run(ours_cmd))
        if tshark:
            samples["tshark"].append(run(tshark_cmd))
    results = {}
    for name, rows in samples.items():
        if not rows:
            continue
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        mem = max(r[2] for r in rows)
        results[name] = {"seconds": wall, "cpu_seconds": cpu, "peak_mb": mem, "processes": rows[0][4]}
        print(f"{name:7s} {wall:7.2f} s wall  {cpu:7.2f} s CPU  {mem:6.0f} MB peak (all processes)")
    if "tshark" in results:
        o, t = results["ours"], results["tshark"]
        results["ratio_tshark_over_ours"] = {"wall": t["seconds"] / o["seconds"],
                                             "cpu": t["cpu_seconds"] / o["cpu_seconds"]}
        print(f"meshscope vs tshark with the same key log: {t['seconds'] / o['seconds']:.2f}x faster by wall "
              f"time, {t['cpu_seconds'] / o['cpu_seconds']:.2f}x by CPU ({os.cpu_count()} cores here)")
    (OUT / "bench_tls_decrypt.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
