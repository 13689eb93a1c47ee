"""Istio's ``x-envoy-peer-metadata`` header: base64 of a serialized ``google.protobuf.Struct``
describing the sending workload. We keep its workload name and namespace."""

from __future__ import annotations

import base64
import binascii
import functools


@functools.lru_cache(maxsize=4096)  # a mesh has few workloads; the same header repeats endlessly
def decode_peer_metadata(value: str) -> tuple[str | None, str | None]:
    """(workload name, namespace) from the header value; (None, None) when it does not decode."""
    # protobuf is imported on first use: it is a tenth of the CLI's start-up, and most captures
    # (all but Istio's) never carry the header
    from google.protobuf import struct_pb2
    from google.protobuf.message import DecodeError

    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=False)
        meta = struct_pb2.Struct()
        meta.ParseFromString(raw)
    except (binascii.Error, DecodeError, ValueError, RecursionError):
        return None, None
    fields = meta.fields

    def text(key: str) -> str | None:
        v = fields.get(key)
        return v.string_value or None if v is not None and v.WhichOneof("kind") == "string_value" else None

    return text("WORKLOAD_NAME") or text("NAME"), text("NAMESPACE")


def encode_peer_metadata(name: str, namespace: str, **extra: str) -> str:
    """The header value Istio would send for a workload (used to build test traffic)."""
    from google.protobuf import struct_pb2

    meta = struct_pb2.Struct()
    meta.update({"NAME": name, "NAMESPACE": namespace, **extra})
    return base64.b64encode(meta.SerializeToString()).decode()
