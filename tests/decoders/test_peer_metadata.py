"""Istio x-envoy-peer-metadata: workload name and namespace out of a base64 protobuf Struct."""

from __future__ import annotations

import base64

from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.decoders.peer_metadata import decode_peer_metadata, encode_peer_metadata


def test_istio_style_metadata():
    meta = struct_pb2.Struct()
    meta.update({"NAME": "reviews-v1-5c7b8d", "NAMESPACE": "bookinfo", "WORKLOAD_NAME": "reviews-v1",
                 "CLUSTER_ID": "Kubernetes", "LABELS": {"app": "reviews", "version": "v1"},
                 "ISTIO_VERSION": "1.22.0"})
    value = base64.b64encode(meta.SerializeToString()).decode()
    assert decode_peer_metadata(value) == ("reviews-v1", "bookinfo")


def test_name_when_no_workload_name():
    assert decode_peer_metadata(encode_peer_metadata("catalog-5d4b", "shop")) == ("catalog-5d4b", "shop")


def test_garbage_decodes_to_nothing():
    assert decode_peer_metadata("not base64 at all!!") == (None, None)
    assert decode_peer_metadata(base64.b64encode(b"\xff\xff\xff").decode()) == (None, None)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_never_raises(raw):
    name, ns = decode_peer_metadata(base64.b64encode(raw).decode())
    assert name is None or isinstance(name, str)
