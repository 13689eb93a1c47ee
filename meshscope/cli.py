"""The `meshscope` command line: one subcommand module per job in meshscope/commands/.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
its subcommand runs, so a slow import never taxes the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from meshscope.errors import UserError

# subcommand -> (module under meshscope.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pcap": ("pcap", "analyse tcpdump captures: flows, flow graphs"),
    "proxy": ("proxy", "the bundled Envoy: print/validate its config, run it"),
    "collector": ("collector", "receive Envoy access logs (gRPC) and Zipkin spans"),
    "pipeline": ("pipeline", "move records from the bus to the store and evaluate alerts"),
    "api": ("api", "serve the HTTP API and web page"),
    "trace": ("trace", "everything known about one request id"),
    "records": ("records", "list stored access records"),
    "logs": ("logs", "import Envoy access-log files (Istio text/JSON, Envoy default, custom format)"),
    "alerts": ("alerts", "list alerts"),
    "up": ("up", "run the whole embedded stack in one process group"),
}


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the line (skipping --config's value), to load only its arguments."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command


def _load(module: str):
    return importlib.import_module(f"meshscope.commands.{module}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="meshscope", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML settings file (also MESHSCOPE_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen_command(argv)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:
            try:
                _load(module).add_arguments(p)
            except ModuleNotFoundError as exc:
                if exc.name != f"meshscope.commands.{module}":
                    raise
    args = parser.parse_args(argv)
    try:
        return int(_load(args._module).run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if exc.name == f"meshscope.commands.{args._module}":
            print(f"meshscope: '{args.command}' is not available in this build", file=sys.stderr)
            return 2
        raise
    except UserError as exc:
        print(f"meshscope: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
