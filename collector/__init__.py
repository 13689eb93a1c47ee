"""The collector: receives Envoy's gRPC access logs, Zipkin v2 spans and OTLP logs and traces, turns them
into records and publishes them to the bus durably. One module per transport or concern:

- ``server``: ``Collector(settings, bus)``, the startable whole (``meshscope collector``, ``meshscope up``)
- ``als_server`` + ``access_entries``: the AccessLogService and entry → AccessRecord conversion
- ``zipkin_receiver`` + ``zipkin_spans`` + ``zipkin_proto``: ``POST /api/v2/spans`` (JSON, proto3)
- ``access_log_lines``: Envoy access-log lines (files, ``kubectl logs``, ``stern``) → AccessRecords
- ``log_imports``: imported access-log records onto the bus the way live ones go (``POST /api/logs``)
- ``otlp_receiver`` + ``otlp_records``: OTLP/gRPC (4317) and OTLP/HTTP (4318) logs and traces
- ``publisher`` + ``spool``: bus acknowledgement, disk spool, replay, backpressure, metrics
- ``access_control`` + ``tls_scope``: who may send (token, mTLS) and the name records give the sender

The door: the rest of meshscope imports only the names below.
"""

from meshscope.doors import lazy_exports

_EXPORTS = {
    "Collector": ".server", "PublisherMetrics": ".publisher", "Backpressure": ".publisher",
    "BadLine": ".access_log_lines", "ImportReport": ".access_log_lines", "LineParser": ".access_log_lines",
    "LineSplitter": ".access_log_lines", "Origin": ".access_log_lines", "custom_format": ".access_log_lines",
    "LogImports": ".log_imports",
    "parse_lines": ".access_log_lines", "read_lines": ".access_log_lines",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
