"""Decoders: tcpdump captures (pcap/pcapng) to Exchanges, then Flows (NAT and proxy hops) and graphs.

The door: the rest of meshscope imports only the names below (``analyze`` is the entry point; the
renderers draw what it returns).
"""

from meshscope.doors import lazy_exports

_EXPORTS = {
    "Analysis": ".analysis", "analyze": ".analysis", "stitch": ".analysis",
    "BACKENDS": ".backends", "DEFAULT_BACKEND": ".backends", "get_backend": ".backends",
    "CaptureReport": ".backends",
    "capture_format": ".capture_file", "upload_format": ".capture_file", "read_exchanges": ".read",
    # diagrams: one Diagram type (sections of messages), built from flows or by the app; three renderers
    "Diagram": ".diagram", "Section": ".diagram", "Message": ".diagram", "flow_diagram": ".sequence",
    "diagram_svg": ".graph_svg", "diagram_mermaid": ".graph_mermaid", "diagram_text": ".graph_text",
    "render_svg": ".graph_svg", "render_mermaid": ".graph_mermaid", "render_text": ".flow_text",
    # a picture for every capture: flows, else its exchanges, else an overview; narrowed by a filter
    "capture_diagram": ".capture_picture", "MAX_EXCHANGES": ".capture_picture",
    "ExchangeFilter": ".exchange_filter", "FilterError": ".exchange_filter",
    "NODEPORT_LAB": ".samples",
    "KeyLog": ".tls_keylog",
    "K8sNames": ".pod_labels", "endpoint_names": ".pod_labels", "name_columns": ".sequence",
    "counted": ".wording", "examples": ".wording", "capture_line": ".report_text",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
