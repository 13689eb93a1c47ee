"""gRPC's own count of a server's calls (channelz): the streams that ended in failure without the handler
knowing, so the collector can report them.

A message past ``grpc.max_receive_message_length`` is refused by the gRPC core before the handler sees
it: the core answers RESOURCE_EXHAUSTED, while grpc.aio hands the handler a plain end of stream (the
stream's earlier messages look complete). Only the core's per-server counters (channelz, on by default)
know the call failed; ``failed`` minus the streams the handler failed itself is what gRPC cut unseen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from grpc._cython import cygrpc  # channelz's reader; grpcio-channelz wraps the same calls in protobuf

log = logging.getLogger(__name__)


def _server_ids() -> set[int]:
    ids: set[int] = set()
    start = 0
    for _ in range(1000):  # pages of servers; bounded
        page = json.loads(cygrpc.channelz_get_servers(start))
        for server in page.get("server", []):
            ids.add(int(server["ref"]["serverId"]))
        if page.get("end", True) or not ids:
            return ids
        start = max(ids) + 1
    return ids


class ServerCalls:
    """The call counters of the one gRPC server created by ``make`` (started, succeeded, failed)."""

    def __init__(self, make: Callable[[], object]) -> None:
        before = _server_ids()
        self.server = make()
        new = _server_ids() - before
        # one server created in between (asyncio runs one thing at a time); none if channelz is off
        self.server_id = max(new) if new else None

    @staticmethod
    def zero() -> dict[str, int]:
        return {"started": 0, "succeeded": 0, "failed": 0}

    def counts(self) -> dict[str, int]:
        """{"started", "succeeded", "failed"}: zeros when channelz is off or the server is gone."""
        out = self.zero()
        if self.server_id is None:
            return out
        try:
            data = json.loads(cygrpc.channelz_get_server(self.server_id))["server"]["data"]
        except (ValueError, KeyError, RuntimeError) as exc:  # removed with its server
            log.debug("channelz server %s: %s", self.server_id, exc)
            return out
        for key in out:
            out[key] = int(data.get(f"calls{key.capitalize()}", 0))
        return out


class CallsCollector:
    """Prometheus collector: ``meshscope_collector_grpc_calls_total{server, outcome}`` from channelz."""

    def __init__(self, servers: dict[str, Callable[[], ServerCalls | None]]) -> None:
        self.servers = servers

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("meshscope_collector_grpc_calls", "gRPC calls per receiver as the gRPC "
                                     "core counted them (failed includes messages it refused past the "
                                     "size ceiling before the collector saw them)",
                                     labels=["server", "outcome"])
        for name, calls in self.servers.items():
            current = calls()
            for outcome, value in (current.counts() if current else ServerCalls.zero()).items():
                family.add_metric([name, outcome], value)
        yield family
