"""meshscope: what happened to this request, hop by hop, in an Envoy / Istio mesh."""

__version__ = "0.1.0"
