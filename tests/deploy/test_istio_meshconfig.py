"""deploy/istio/meshconfig.yaml against Istio's own schema. Istio no longer publishes an IstioOperator CRD
(istioctl reads the object itself) nor JSON schemas for MeshConfig (istio/api dropped them in 2023): the
schema is the MeshConfig proto, vendored in ``istio_api/`` with its source commit and licence, compiled
here with protoc (grpcio-tools) and parsed with protobuf's JSON mapping, strict: an unknown field, a
wrong type, two providers in one entry fail. The IstioOperator envelope is checked against the field
names of istioctl's ``IstioOperatorSpec`` (istio/istio operator/pkg/apis/types.go)."""

from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

MESHCONFIG = Path(__file__).resolve().parents[2] / "deploy" / "istio" / "meshconfig.yaml"
ISTIO_API = Path(__file__).parent / "istio_api"
# IstioOperatorSpec's JSON names (istio/istio operator/pkg/apis/types.go): istioctl install reads these
ISTIO_OPERATOR_SPEC = {"profile", "installPackagePath", "hub", "tag", "namespace", "revision",
                       "compatibilityVersion", "meshConfig", "components", "values", "unvalidatedValues"}


@functools.cache
def mesh_config_type() -> type:
    """istio.mesh.v1alpha1.MeshConfig as a Python message class, from the vendored protos."""
    from google.api import field_behavior_pb2
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    googleapis = Path(field_behavior_pb2.__file__).parents[2]  # google/api/field_behavior.proto
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mesh.pb"
        code = protoc.main(["protoc", f"-I{ISTIO_API}", f"-I{well_known}", f"-I{googleapis}",
                            "--include_imports", f"--descriptor_set_out={out}", "mesh/v1alpha1/config.proto"])
        assert code == 0, "protoc could not compile the vendored MeshConfig protos"
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:  # dependencies first: protoc writes them in that order
        pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.mesh.v1alpha1.MeshConfig"))


def validate_istio_operator(obj: dict):
    """The MeshConfig message the object's meshConfig parses into; ValueError (json_format.ParseError
    for the meshConfig part) when the object is not one istioctl and istiod would take as written."""
    if (obj.get("apiVersion"), obj.get("kind")) != ("install.istio.io/v1alpha1", "IstioOperator"):
        raise ValueError(f"not an IstioOperator: {obj.get('apiVersion')} {obj.get('kind')}")
    if unknown := set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        raise ValueError(f"unknown top-level fields {sorted(unknown)}")
    if unknown := set(obj.get("spec") or {}) - ISTIO_OPERATOR_SPEC:
        raise ValueError(f"unknown IstioOperator spec fields {sorted(unknown)}")
    return json_format.ParseDict(obj["spec"].get("meshConfig") or {}, mesh_config_type()(),
                                 ignore_unknown_fields=False)


def guide() -> dict:
    return yaml.safe_load(MESHCONFIG.read_text())


def test_the_guides_meshconfig_parses_as_istios_mesh_config():
    mesh = validate_istio_operator(guide())
    providers = {p.name: p.WhichOneof("provider") for p in mesh.extension_providers}
    assert providers == {"meshscope-http-als": "envoy_http_als", "meshscope-tcp-als": "envoy_tcp_als",
                         "meshscope-otel-als": "envoy_otel_als", "meshscope-zipkin": "zipkin",
                         "meshscope-otel-tracing": "opentelemetry"}
    http = next(p for p in mesh.extension_providers if p.name == "meshscope-http-als").envoy_http_als
    assert http.port == 18000 and "x-envoy-attempt-count" in http.additional_request_headers_to_log
    otel = next(p for p in mesh.extension_providers if p.name == "meshscope-otel-als").envoy_otel_als
    assert otel.log_format.labels["x-envoy-attempt-count"] == "%REQ(X-ENVOY-ATTEMPT-COUNT)%"


def test_its_spec_is_also_an_istiod_helm_values_file():
    """The IstioOperator's ``spec.meshConfig`` is the istiod chart's ``meshConfig`` value: the guide's
    spec holds nothing else, so ``yq .spec meshconfig.yaml`` is a values file for ``helm upgrade istiod``."""
    assert set(guide()["spec"]) == {"meshConfig"}


def _provider(doc: dict, name: str) -> dict:
    return next(p for p in doc["spec"]["meshConfig"]["extensionProviders"] if p["name"] == name)


BROKEN = [
    ("a misspelled field in a provider", lambda d: _provider(d, "meshscope-tcp-als")["envoyTcpAls"]
     .update(logname="x"), json_format.ParseError, "logname"),
    ("a port that is not a number", lambda d: _provider(d, "meshscope-zipkin")["zipkin"]
     .update(port="zipkin"), json_format.ParseError, "port"),
    ("a provider kind Istio does not have", lambda d: _provider(d, "meshscope-otel-als")
     .update(envoyOtelAccessLog=_provider(d, "meshscope-otel-als").pop("envoyOtelAls")),
     json_format.ParseError, "envoyOtelAccessLog"),
    ("headers as one string, not a list", lambda d: _provider(d, "meshscope-http-als")["envoyHttpAls"]
     .update(additionalRequestHeadersToLog="x-b3-traceid"), json_format.ParseError,
     "additionalRequestHeadersToLog"),
    ("two providers in one entry", lambda d: _provider(d, "meshscope-zipkin")
     .update(opentelemetry={"service": "x", "port": 4317}), json_format.ParseError, "oneof"),
    ("a misspelled meshConfig field", lambda d: d["spec"]["meshConfig"]
     .update(extensionProvider=[]), json_format.ParseError, "extensionProvider"),
    ("meshConfig misspelled in the envelope", lambda d: d["spec"]
     .update(meshconfig=d["spec"].pop("meshConfig")), ValueError, "meshconfig"),
    ("another kind", lambda d: d.update(kind="MeshConfig"), ValueError, "not an IstioOperator"),
]


@pytest.mark.parametrize(("what", "break_it", "error", "why"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_meshconfig_is_caught(what, break_it, error, why):
    doc = copy.deepcopy(guide())
    break_it(doc)
    with pytest.raises(error, match=why):
        validate_istio_operator(doc)
