"""Zipkin's proto3 span messages (``zipkin.proto3``: Span, Endpoint, Annotation, ListOfSpans).

No maintained PyPI package ships them for protobuf ≥ 5, and the collector must not need protoc at
run time, so the descriptors of openzipkin/zipkin-api's ``zipkin.proto`` are built here field by
field (same names, numbers and types) in a private descriptor pool.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _message(file: descriptor_pb2.FileDescriptorProto, name: str,
             *fields: tuple) -> descriptor_pb2.DescriptorProto:
    msg = file.message_type.add(name=name)
    for fname, number, ftype, label, type_name in fields:
        f = msg.field.add(name=fname, number=number, type=ftype, label=label, json_name=_camel(fname))
        if type_name:
            f.type_name = type_name
    return msg


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="zipkin.proto", package="zipkin.proto3", syntax="proto3")
    span = _message(
        file, "Span",
        ("trace_id", 1, _F.TYPE_BYTES, _OPT, None),
        ("parent_id", 2, _F.TYPE_BYTES, _OPT, None),
        ("id", 3, _F.TYPE_BYTES, _OPT, None),
        ("kind", 4, _F.TYPE_ENUM, _OPT, ".zipkin.proto3.Span.Kind"),
        ("name", 5, _F.TYPE_STRING, _OPT, None),
        ("timestamp", 6, _F.TYPE_FIXED64, _OPT, None),
        ("duration", 7, _F.TYPE_UINT64, _OPT, None),
        ("local_endpoint", 8, _F.TYPE_MESSAGE, _OPT, ".zipkin.proto3.Endpoint"),
        ("remote_endpoint", 9, _F.TYPE_MESSAGE, _OPT, ".zipkin.proto3.Endpoint"),
        ("annotations", 10, _F.TYPE_MESSAGE, _REP, ".zipkin.proto3.Annotation"),
        ("tags", 11, _F.TYPE_MESSAGE, _REP, ".zipkin.proto3.Span.TagsEntry"),
        ("debug", 12, _F.TYPE_BOOL, _OPT, None),
        ("shared", 13, _F.TYPE_BOOL, _OPT, None),
    )
    kind = span.enum_type.add(name="Kind")
    for i, n in enumerate(("SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER")):
        kind.value.add(name=n, number=i)
    tags = span.nested_type.add(name="TagsEntry")
    tags.options.map_entry = True
    tags.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_OPT, json_name="key")
    tags.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_OPT, json_name="value")
    _message(
        file, "Endpoint",
        ("service_name", 1, _F.TYPE_STRING, _OPT, None),
        ("ipv4", 2, _F.TYPE_BYTES, _OPT, None),
        ("ipv6", 3, _F.TYPE_BYTES, _OPT, None),
        ("port", 4, _F.TYPE_INT32, _OPT, None),
    )
    _message(
        file, "Annotation",
        ("timestamp", 1, _F.TYPE_FIXED64, _OPT, None),
        ("value", 2, _F.TYPE_STRING, _OPT, None),
    )
    _message(file, "ListOfSpans", ("spans", 1, _F.TYPE_MESSAGE, _REP, ".zipkin.proto3.Span"))
    _message(file, "ReportResponse")
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_build_file())


def _cls(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"zipkin.proto3.{name}"))


Span = _cls("Span")
Endpoint = _cls("Endpoint")
Annotation = _cls("Annotation")
ListOfSpans = _cls("ListOfSpans")
KIND_NAMES = {0: None, 1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
