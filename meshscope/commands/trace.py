"""`meshscope trace REQUEST_ID`: every hop, span and packet exchange known for one request."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from meshscope.api.uploads import capture_sources
from meshscope.reading import with_store
from meshscope.settings import load_settings
from meshscope.traces import assemble_trace, format_trace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request_id", help="x-request-id (whichever sampling digit)")
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.add_argument("--svg", metavar="OUT", help="also write the combined flow graph to OUT")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    view = with_store(settings, lambda store: assemble_trace(store, args.request_id))
    if not view.found:
        print(f"meshscope: nothing known about request {args.request_id}", file=sys.stderr)
        return 1
    view.captures = capture_sources(settings.data_dir / "pcaps", [e.conn.capture for e in view.exchanges])
    if args.svg:
        from meshscope.trace_graph import trace_svg

        Path(args.svg).write_text(trace_svg(view))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(view, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_trace(view))
    return 0
