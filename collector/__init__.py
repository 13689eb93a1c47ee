"""The collector: receives Envoy's gRPC access logs and Zipkin v2 spans, turns them into records and
publishes them to the bus durably. One module per transport or concern:

- ``server``: ``Collector(settings, bus)``, the startable whole (``meshscope collector``, ``meshscope up``)
- ``als_server`` + ``access_entries``: the AccessLogService and entry → AccessRecord conversion
- ``zipkin_receiver`` + ``zipkin_spans`` + ``zipkin_proto``: ``POST /api/v2/spans`` (JSON, proto3)
- ``publisher`` + ``spool``: bus acknowledgement, disk spool, replay, backpressure, metrics

The door: the rest of meshscope imports only the names below.
"""

from meshscope.doors import lazy_exports

_EXPORTS = {"Collector": ".server", "PublisherMetrics": ".publisher"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
