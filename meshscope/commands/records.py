"""`meshscope records`: stored access records by time range, status class, cluster, authority; paged."""

from __future__ import annotations

import argparse
import sys

import orjson

from meshscope.pipelines import AccessQuery
from meshscope.reading import format_time, parse_time, with_store
from meshscope.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="from (epoch seconds, ISO 8601, or an age like 15m)")
    parser.add_argument("--end", help="until (exclusive)")
    parser.add_argument("--status-class", type=int, choices=range(1, 6), metavar="N", help="2, 4, 5 …")
    parser.add_argument("--cluster", help="upstream cluster")
    parser.add_argument("--authority", help="HTTP authority (Host)")
    parser.add_argument("--node-id", help="the proxy that logged it")
    parser.add_argument("--limit", type=int, default=50, help="records per page (default 50)")
    parser.add_argument("--cursor", help="continue after a previous page")
    parser.add_argument("--json", action="store_true", help="JSON: {items, next_cursor}")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    query = AccessQuery(
        start=parse_time(args.start), end=parse_time(args.end), status_class=args.status_class,
        upstream_cluster=args.cluster, authority=args.authority, node_id=args.node_id,
        limit=args.limit, cursor=args.cursor,
    )
    page = with_store(settings, lambda store: store.list_access(query))
    if args.json:
        body = {"items": page.items, "next_cursor": page.next_cursor}
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    for r in page.items:
        print(
            f"{format_time(r.start_time)}  {r.response_code or '-':>3}  {r.method or r.protocol:<6} "
            f"{r.authority or ''}{r.path or ''}  -> {r.upstream_cluster or '-'}  "
            f"attempts={r.attempt_count or 1} flags={','.join(r.response_flags) or '-'}  "
            f"{r.request_id or '-'}  [{r.node_id}]"
        )
    if page.next_cursor:
        print(f"-- more: --cursor {page.next_cursor}")
    return 0
