"""`meshscope alerts`: alert firings and resolutions, by rule, group, state and time."""

from __future__ import annotations

import argparse
import sys

import orjson

from meshscope.reading import format_time, parse_time, with_store
from meshscope.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rule", help="rule name")
    parser.add_argument("--group", help='group key, e.g. "upstream_cluster=catalog"')
    parser.add_argument("--state", choices=("firing", "resolved"))
    parser.add_argument("--start", help="last seen at or after (epoch seconds, ISO 8601, or an age like 1h)")
    parser.add_argument("--end", help="first seen before")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    items = with_store(settings, lambda store: store.alerts(
        rule=args.rule, group_key=args.group, state=args.state, start=parse_time(args.start),
        end=parse_time(args.end), limit=args.limit,
    ))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps({"items": items}, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not items:
        print("no alerts")
    for a in items:
        baseline = "-" if a.baseline is None else f"{a.baseline:g}"
        print(
            f"{a.state:<8} {a.rule:<16} {a.group_key:<36} observed={a.observed:g} baseline={baseline} "
            f"{format_time(a.first_seen)} .. {format_time(a.last_seen)}"
            f"  samples: {' '.join(a.sample_request_ids)}"
        )
    return 0
