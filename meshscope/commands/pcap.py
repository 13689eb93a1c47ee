"""`meshscope pcap analyze FILE [FILE…]`: stitched flows from tcpdump captures (text, JSON, SVG, Mermaid).

Captures may be compressed (gzip, zstd, lz4, bzip2, xz: sniffed, not guessed from the name). Each
capture gets its own report; one that cannot be read is reported and the others are still analysed,
and the exit status is then 1 (2 when none could be read)."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

from meshscope.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pcap_command", metavar="ACTION", required=True)
    a = sub.add_parser("analyze", help="decode captures and print the end-to-end flows",
                       description="Decode captures (analysed together: the two sides of a NAT may be in "
                                   "two files) and print the end-to-end flows.")
    a.add_argument("files", nargs="+", metavar="FILE",
                   help="pcap or pcapng capture, plain or compressed (gzip, zstd, lz4, bzip2, xz)")
    a.add_argument("--json", action="store_true", help="print captures, flows and exchanges as JSON")
    a.add_argument("--svg", metavar="OUT", help="write the flow graph (SVG sequence diagram) to OUT")
    a.add_argument("--mermaid", action="store_true", help="print the flow graph as a Mermaid sequenceDiagram")
    a.add_argument("--backend", default="dpkt", choices=("dpkt", "scapy", "pyshark"),
                   help="decoder backend (default: dpkt, the fastest)")
    a.add_argument("--max-flows", type=int, default=20, metavar="N",
                   help="flows drawn in --svg/--mermaid (default 20)")
    a.add_argument("--max-exchanges", type=int, default=100, metavar="N",
                   help="with no flow stitched, exchanges drawn one by one up to N (default 100); above, an "
                        "overview of hosts and their exchanges with counts and error rates")
    f = a.add_argument_group("filters", "narrow what is drawn and listed (every one given must match)")
    f.add_argument("--host", metavar="H", help="an IP at either end, an address block (10.0.0.0/24), or a "
                                               "Host, SNI or DNS name")
    f.add_argument("--port", metavar="P", help="a port at either end")
    f.add_argument("--protocol", metavar="NAME", help="http (HTTP/1), h2 (HTTP/2, gRPC included), grpc, tls, "
                                                      "quic or dns")
    f.add_argument("--status", metavar="S", help="5xx, 404, a gRPC status or DNS rcode (UNAVAILABLE, "
                                                 "NXDOMAIN); several with commas")
    f.add_argument("--request-id", metavar="ID", help="x-request-id, or its beginning")
    a.add_argument("--keylog", action="append", default=[], metavar="FILE",
                   help="NSS key log (SSLKEYLOGFILE, Envoy key_log) to decrypt TLS with; repeatable. "
                        "Keys inside a pcapng (Decryption Secrets Block) are used without it")
    a.add_argument("--k8s-names", metavar="FILE",
                   help="`kubectl get pods,svc -A -o json` output: connections are labelled with the pod and "
                        "service names of their IPs, and the graphs' columns named after them "
                        "(ptcpdump's packet comments do the same without it)")


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream=sys.stderr, width: int = 30) -> None:
        self.stream, self.width, self.last = stream, width, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * self.width)
        self.stream.write(f"\rdecoding [{bar:<{self.width}}] {frac:6.1%} {done / 1e6:8.1f} MB")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * (self.width + 40) + "\r")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    # the cyclic GC stays off until the output is written: after analyze() it would only walk the heap
    # of decoded facts again (~0.1 s on a million packets); the decoders leave no cycles behind
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _analyze_and_emit(args)
    finally:
        if gc_was_on:
            gc.enable()


def _analyze_and_emit(args: argparse.Namespace) -> int:
    from meshscope.decoders import ExchangeFilter, K8sNames, KeyLog, analyze

    # a bad filter fails before any decoding
    args.filter = ExchangeFilter.parse(args.host, args.port, args.protocol, args.status, args.request_id)
    if args.max_exchanges < 0 or args.max_flows < 0:
        raise UserError("--max-flows and --max-exchanges take a number of 0 or more")

    keylog = None
    if args.keylog:
        keylog = KeyLog.from_files([Path(f) for f in args.keylog])  # UserError for an unreadable file
        for problem in keylog.problems[:10]:  # line numbers and reasons only: never the line
            print(f"meshscope: key log {problem}", file=sys.stderr)
    names = K8sNames.from_file(args.k8s_names) if args.k8s_names else None  # UserError for a bad file
    bar = ProgressBar() if sys.stderr.isatty() else None
    try:
        result = analyze([Path(f) for f in args.files], backend=args.backend, progress=bar, keylog=keylog,
                         names=names)
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot analyse {' '.join(args.files)}: {exc}") from None
    except Exception as exc:  # never a traceback for a bad capture: one line, non-zero exit
        raise UserError(f"cannot analyse {' '.join(args.files)}: {type(exc).__name__}: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    return _emit(result, args)


def _emit(result, args: argparse.Namespace) -> int:
    from meshscope.decoders import (
        capture_diagram,
        counted,
        diagram_mermaid,
        diagram_svg,
        diagram_text,
        examples,
        render_text,
    )

    flt = args.filter
    exchanges = result.by_id() if args.svg or not args.json or flt else {}  # --json alone needs no lookup
    diagram = None
    if args.svg or args.mermaid or not args.json:
        diagram = capture_diagram(result.flows, exchanges, flt, args.max_flows, args.max_exchanges)
    if args.svg:
        try:
            Path(args.svg).write_text(diagram_svg(diagram))
        except OSError as exc:
            raise UserError(f"cannot write {args.svg}: {exc.strerror or exc}") from None
    out = sys.stdout
    failed = [r for r in result.reports if r.error]
    for r in failed:  # first, so that a long output does not hide them
        print(f"meshscope: {r.error}", file=sys.stderr)
    if args.json:
        if flt:
            _filtered(result, exchanges, flt)
        result.write_json(out.buffer, lead={"filter": flt.describe()} if flt else None)
        out.buffer.write(b"\n")
    elif args.mermaid:
        out.write(diagram_mermaid(diagram))
    else:
        flows = flt.flows(result.flows, exchanges)
        if flows:  # stitched flows: each hop with its evidence
            if diagram.caption:
                out.write(diagram.caption + "\n")
            out.write(render_text(flows, exchanges))
        else:  # the exchanges, as the pictures draw them
            out.write(diagram_text(diagram))
        out.write(_summary(result))
    for r in result.reports:
        if r.damage_count:
            print(f"meshscope: {r.capture}: {counted(r.damage_count, 'damaged place')}:", file=sys.stderr)
            for line in examples(r.damage, r.damage_count):
                print(f"meshscope: {r.capture}:   {line}", file=sys.stderr)
        if r.not_decoded:
            print(f"meshscope: {r.capture}: not decoded: {_not_decoded(r.not_decoded)}", file=sys.stderr)
    return 1 if failed else 0


def _not_decoded(counts: dict[str, int]) -> str:
    """"PPP LCP 3 frames, ARP 1 frame": what the decoders could not read, most frequent first."""
    return ", ".join(f"{what} {n} frame{'' if n == 1 else 's'}" for what, n in counts.items())


def _filtered(result, exchanges, flt) -> None:
    """Narrow an analysis to what the filter matches, for --json: the flows carrying a match, the
    matching exchanges and those of the kept flows."""
    result.flows = flt.flows(result.flows, exchanges)
    keep = {x for f in result.flows for x in f.exchange_ids}
    keep.update(i for i, ex in exchanges.items() if flt.matches(ex))
    result.exchanges = [ex for ex in result.exchanges if ex.id in keep]


def _summary(result) -> str:
    from meshscope.decoders import capture_line, counted

    kept = {e.id for e in result.exchanges}
    in_flows = len(kept.intersection(i for f in result.flows for i in f.exchange_ids))
    copies = (f", {counted(result.duplicates, 'copy', 'copies')} (other interface or capture) folded"
              if result.duplicates else "")
    alone = len(kept) - in_flows
    caps = "".join(f"  {capture_line(r)}\n" for r in result.reports)
    return (f"{counted(len(result.flows), 'flow')} over {counted(in_flows, 'exchange')}; "
            f"{counted(alone, 'exchange')} had no NAT or proxy hop{copies}\ncaptures:\n{caps}")
