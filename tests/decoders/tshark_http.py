"""tshark's reading of the HTTP requests in a capture, for comparisons: (4-tuple, method, URI,
status) of each request, the 4-tuple from the innermost IP layer when tunnels stack several."""

from __future__ import annotations

import subprocess
from pathlib import Path

FIELDS = ("frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
          "tcp.dstport", "http.request.method", "http.request.uri", "http.response.code", "http.request_in")


def tshark_requests(path: Path, *options: str) -> list[tuple]:
    """Sorted (src, sport, dst, dport), method, URI, status; ``options`` go to tshark (-d, -o).
    With occurrence=l each address field is its innermost value; which of ip/ipv6 is innermost
    is the last one before tcp in frame.protocols. Responses pair by tshark's own request link."""
    argv = ["tshark", "-r", str(path), *options, "-Y", "http", "-T", "fields", "-E", "separator=|",
            "-E", "occurrence=l"]
    for f in FIELDS:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    requests, codes = {}, {}
    for line in out.splitlines():
        num, protos, s4, d4, s6, d6, sport, dport, method, uri, code, req_in = line.split("|")
        stack = protos.split(":")
        inner = [p for p in stack[:stack.index("tcp")] if p in ("ip", "ipv6")][-1]
        src, dst = (s4, d4) if inner == "ip" else (s6, d6)
        if method:
            requests[num] = ((src, int(sport), dst, int(dport)), method, uri)
        if code:
            codes[req_in] = int(code)
    return sorted((*req, codes.get(num)) for num, req in requests.items())
