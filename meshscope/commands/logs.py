"""`meshscope logs import FILE…`: Envoy access logs (Istio text or JSON, Envoy default, ``--format``;
plain or gzip; ``kubectl logs --prefix`` and ``stern`` prefixes) into meshscope — posted to the running
API (``POST /api/logs``), or with ``--direct`` written straight to the configured store.

    kubectl logs -n bookinfo deploy/productpage -c istio-proxy --prefix | meshscope logs import -
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from meshscope.errors import UserError
from meshscope.settings import Settings, load_settings

CHUNK = 256 * 1024
SHOWN_ERRORS = 20
DIRECT_NOT_EVALUATED = ("alerts were not evaluated: --direct writes to the store; import through the API "
                        "(under `meshscope up`, or with bus: kafka) for the alert rules to see the records")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("import", help="import access-log files ('-' reads standard input)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--format", help="Envoy format string of the lines (default: detect Istio text/JSON "
                   "and Envoy's default format)")
    p.add_argument("--node-id", help="the proxy for lines without a kubectl/stern prefix "
                   "(default: the file name)")
    p.add_argument("--log-name", default="", help="the access log's name (default: the prefix's container)")
    p.add_argument("--direct", action="store_true", help="write to the configured store, not the API")
    p.add_argument("--api", help="API base URL (default: http://HOST:API_PORT from the settings)")
    p.add_argument("--token", help="API bearer token (default: settings api_token / MESHSCOPE_API_TOKEN)")
    p.add_argument("--json", action="store_true", help="print each file's report as JSON")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    failed_files = 0
    for name in args.files:
        node_id = args.node_id if args.node_id is not None else ("stdin" if name == "-" else Path(name).name)
        try:
            with _open(name) as stream:
                report = (_direct(settings, stream, args, node_id) if args.direct
                          else _post(settings, stream, args, node_id))
        except OSError as exc:
            raise UserError(f"cannot read {name}: {exc.strerror or exc}") from exc
        _print_report(name, report, args.json)
        failed_files += report.get("records", 0) == 0 and report.get("failed", 0) > 0
    return 1 if failed_files else 0


def _open(name: str) -> IO[bytes]:
    return sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115 - closed by the caller


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _post(settings: Settings, stream: IO[bytes], args: argparse.Namespace, node_id: str) -> dict:
    import httpx

    base = args.api or f"http://{settings.host}:{settings.api_port}"
    token = args.token or settings.api_token
    params = {"node_id": node_id, "log_name": args.log_name}
    if args.format:
        params["format"] = args.format
    try:
        response = httpx.post(f"{base.rstrip('/')}/api/logs", params=params, content=_chunks(stream),
                              headers={"Authorization": f"Bearer {token}"} if token else None, timeout=600)
    except httpx.HTTPError as exc:
        raise UserError(f"cannot reach the API at {base} ({exc}); is `meshscope api` running? "
                        "--direct writes to the store instead") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        raise UserError(f"the API refused the import ({response.status_code}): "
                        f"{body.get('detail', response.text[:200])}")
    return body


def _direct(settings: Settings, stream: IO[bytes], args: argparse.Namespace, node_id: str) -> dict:
    from meshscope.collector import ImportReport, LineParser, Origin, custom_format, parse_lines, read_lines
    from meshscope.pipelines import StoreUnavailable, make_store

    try:
        custom = custom_format(args.format) if args.format else None
        parser = LineParser(custom, Origin(node_id, args.log_name))
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    report = ImportReport()

    async def go() -> None:
        store = make_store(settings)
        await store.start()
        try:
            for batch in parse_lines(read_lines(stream), parser, report):
                await store.write(batch)
        finally:
            await store.stop()

    try:
        asyncio.run(go())
    except StoreUnavailable as exc:
        raise UserError(f"store unavailable: {exc}") from exc
    except EOFError as exc:  # gzip ended early: what was read is stored
        raise UserError(f"gzip data ended early after {report.lines} lines: {exc}") from exc
    return {**report.to_dict(), "stored": report.records, "alerts": DIRECT_NOT_EVALUATED}


def _print_report(name: str, report: dict, as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps({"file": name, **report}) + b"\n")
        return
    formats = ", ".join(f"{k} {v}" for k, v in sorted(report.get("by_format", {}).items())) or "-"
    print(f"{name}: {report['lines']} lines, {report['records']} records ({formats}), "
          f"{report['failed']} unreadable, {report['blank']} blank")
    if report.get("alerts"):
        print(f"  {report['alerts']}")
    for e in report.get("errors", [])[:SHOWN_ERRORS]:
        print(f"  line {e['line']}: {e['reason']}: {e['text'][:120]}")
    if report["failed"] > SHOWN_ERRORS:
        print(f"  … and {report['failed'] - SHOWN_ERRORS} more")
