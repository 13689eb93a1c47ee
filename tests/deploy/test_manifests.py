"""deploy/: the Kubernetes manifests of both shapes validate against the Kubernetes OpenAPI schemas
(the ``kubernetes-validate`` package ships them, strict: unknown fields fail), hang together (every
Service selects pods that have its target ports, probes name real ports, ServiceMonitor endpoints
name Service ports) and the container image definition copies everything the wheel needs. Objects of
CRD kinds (ServiceMonitor, Istio's Telemetry) validate against the CRDs their projects publish
(vendored in ``crds/``), strict as well."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SHAPES = ["embedded", "scale-out"]
K8S_VERSION = "1.33.0"
# kinds defined by CRDs, not by the Kubernetes API: not in its OpenAPI schemas
CRD_KINDS = {"ServiceMonitor", "Telemetry", "IstioOperator", "EnvoyFilter"}
CLUSTER_SCOPED = {"Namespace"}
# the published CRDs of those kinds (vendored, with their source): Istio's Telemetry and EnvoyFilter,
# prometheus-operator's ServiceMonitor. IstioOperator has no published CRD any more (istioctl reads it):
# test_istio_meshconfig.py validates it against Istio's MeshConfig proto
CRDS = Path(__file__).parent / "crds"


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) → the CRD's openAPIV3Schema for that version, made strict as ``kubectl apply
    --validate=strict`` is: a field the schema does not declare is an error, not silently pruned."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if crd:
                spec = crd["spec"]
                for version in spec["versions"]:
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return out


def _strict(schema):
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def validate_crd_object(obj: dict, schemas: dict) -> None:
    """jsonschema.ValidationError unless the object fits its CRD's schema (apiVersion, kind and metadata
    are the API server's own, allowed at the root of every object whatever the CRD declares)."""
    import jsonschema

    schema = schemas.get((obj["apiVersion"], obj["kind"]))
    assert schema is not None, f"no vendored CRD for {obj['apiVersion']} {obj['kind']}"
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft7Validator(schema, format_checker=None).validate(body)


def build(directory: Path) -> list[dict]:
    """The objects a kustomization produces, for the subset of kustomize these manifests use
    (``resources`` files and directories, ``namespace``); anything else in it is refused."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "namespace", "resources"}
    assert not unknown, f"{directory}: kustomize features this test does not render: {unknown}"
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += build(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    namespace = kustomization.get("namespace")
    for obj in objects:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
    return objects


def pods(objects: list[dict]) -> list[dict]:
    return [o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_object_validates_against_the_kubernetes_schemas(shape):
    objects = build(DEPLOY / "kubernetes" / shape)
    kinds = sorted(o["kind"] for o in objects)
    assert "Service" in kinds and "ServiceMonitor" in kinds
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises ValidationError


def crd_objects() -> list[dict]:
    """Every object of a CRD kind in deploy/: the ServiceMonitor of both shapes, the Istio guide's
    (Telemetry, the key-log EnvoyFilter)."""
    objects = [o for shape in SHAPES for o in build(DEPLOY / "kubernetes" / shape) if o["kind"] in CRD_KINDS]
    for path in sorted((DEPLOY / "istio").glob("*.yaml")):
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def test_crd_kinds_validate_against_their_published_crd_schemas():
    schemas = crd_schemas()
    checked = set()
    for obj in crd_objects():
        if obj["kind"] == "IstioOperator":
            continue  # no published CRD: test_istio_meshconfig.py parses it as Istio's MeshConfig proto
        validate_crd_object(obj, schemas)  # raises jsonschema.ValidationError
        checked.add(obj["kind"])
    assert checked == {"ServiceMonitor", "Telemetry", "EnvoyFilter"}


@pytest.mark.parametrize(("kind", "break_it", "why"), [
    ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(intervall="30s"), "intervall"),
    ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="30 seconds"), "30 seconds"),
    ("ServiceMonitor", lambda o: o["spec"].update(endpoints="http-zipkin"), "is not of type 'array'"),
    ("Telemetry", lambda o: o["spec"]["tracing"][0].update(randomSamplingPercentage="all"), "all"),
    ("Telemetry", lambda o: o["spec"].update(accessLoging=[]), "accessLoging"),
    ("EnvoyFilter", lambda o: o["spec"]["configPatches"][0].update(applyTo="TRANSPORT_SOCKET"),
     "TRANSPORT_SOCKET"),
    ("EnvoyFilter", lambda o: o["spec"]["configPatches"][1]["match"].update(context="OUTBOUND"), "OUTBOUND"),
    ("EnvoyFilter", lambda o: o["spec"]["configPatches"][0]["patch"].update(operation="MERGED"), "MERGED"),
])
def test_a_broken_crd_object_is_caught(kind, break_it, why):
    import jsonschema

    obj = next(o for o in crd_objects() if o["kind"] == kind and o["spec"].get("tracing", [None]))
    break_it(obj)
    with pytest.raises(jsonschema.ValidationError, match=why):
        validate_crd_object(obj, crd_schemas())


def test_a_broken_manifest_is_caught():
    (deployment,) = [o for o in build(DEPLOY / "kubernetes" / "embedded") if o["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_services_probes_and_service_monitor_hang_together(shape):
    objects = build(DEPLOY / "kubernetes" / shape)
    templates = pods(objects)
    services = [o for o in objects if o["kind"] == "Service"]
    ports_of_services = set()
    for service in services:
        selector = service["spec"]["selector"]
        chosen = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert chosen, f"{shape}: Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            ports_of_services.add(port["name"])
            for t in chosen:
                names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, (shape, service["metadata"]["name"], port)
    by_name = {(s["metadata"]["name"], p["port"]) for s in services for p in s["spec"]["ports"]}
    for port in (18000, 9411, 4317, 4318):
        assert ("meshscope-collector", port) in by_name
    assert ("meshscope-api", 8000) in by_name
    for t in templates:
        assert t["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        for c in t["spec"]["containers"]:
            names = {p["name"] for p in c.get("ports", [])}
            probes = [c[k] for k in ("readinessProbe", "livenessProbe") if k in c]
            assert probes, f"{shape}: container {c['name']} has no probe"
            for probe in probes:
                assert probe["httpGet"]["port"] in names
                assert probe["httpGet"]["path"] in ("/healthz", "/readyz", "/metrics")
            for source in c.get("envFrom", []):
                name = source["configMapRef"]["name"]
                assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == name for o in objects)
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    matched = [s for s in services
               if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert {p["name"] for s in matched for p in s["spec"]["ports"]} >= {"http-zipkin", "http-api"}
    if shape == "scale-out":
        assert "http-metrics" in ports_of_services
        replicas = {o["metadata"]["name"]: o["spec"]["replicas"] for o in objects
                    if "replicas" in o.get("spec", {})}
        assert replicas["meshscope-collector"] > 1 and replicas["meshscope-pipeline"] > 1
        settings = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
        assert settings["MESHSCOPE_BUS"] == "kafka" and settings["MESHSCOPE_STORE"] == "elasticsearch"
        from meshscope.settings import load_settings

        loaded = load_settings(env=settings)  # every key is a real setting, with a valid value
        assert loaded.kafka_bootstrap == settings["MESHSCOPE_KAFKA_BOOTSTRAP"]


@pytest.mark.parametrize("shape", SHAPES)
def test_kubectl_kustomize_builds_the_same_objects(shape):
    """Where kubectl is installed, its kustomize must agree with the renderer the other tests use."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the other tests render the kustomization themselves)")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / "kubernetes" / shape)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, yaml.safe_load_all(out))) == sorted(map(key, build(DEPLOY / "kubernetes" / shape)))
    theirs = {key(o): o for o in yaml.safe_load_all(out)}
    for obj in build(DEPLOY / "kubernetes" / shape):
        assert theirs[key(obj)] == obj


def _copies(containerfile: Path) -> list[str]:
    sources = []
    for line in containerfile.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            sources += parts[1:-1]
    return sources


def test_the_image_copies_every_installed_folder():
    sources = _copies(DEPLOY / "Containerfile")
    for source in sources:
        assert (ROOT / source).exists(), f"Containerfile copies {source}, which is not in the repository"
    import tomllib

    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {})
    folders = {d.split("/")[0] for d in mapped.values()} | {"meshscope"}
    assert folders <= {s.rstrip("/") for s in sources}, folders - {s.rstrip("/") for s in sources}


@pytest.mark.slow
def test_the_wheel_builds_from_what_the_image_copies(tmp_path):
    """Build the wheel from exactly the Containerfile's build context, as its build stage does."""
    context = tmp_path / "src"
    context.mkdir()
    for source in _copies(DEPLOY / "Containerfile"):
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, context / source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--wheel-dir", str(tmp_path / "wheels"), str(context)], check=True, timeout=300)
    (wheel,) = (tmp_path / "wheels").glob("meshscope-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    for module in ("meshscope/cli.py", "meshscope/collector/access_log_lines.py", "meshscope/api/logs.py",
                   "meshscope/pipelines/bus/kafka.py", "meshscope/proxy/launcher.py"):
        assert module in names


def test_the_istio_guide_names_only_declared_providers_and_the_collector_service():
    """Every provider a Telemetry resource names is declared in meshconfig.yaml, and every provider
    points at the collector Service on the port the Service exposes for it."""
    meshconfig = yaml.safe_load((DEPLOY / "istio" / "meshconfig.yaml").read_text())
    declared = {p["name"]: p for p in meshconfig["spec"]["meshConfig"]["extensionProviders"]}
    service_ports = {p["port"]: p["name"] for o in build(DEPLOY / "kubernetes" / "embedded")
                     if o["kind"] == "Service" and o["metadata"]["name"] == "meshscope-collector"
                     for p in o["spec"]["ports"]}
    expected = {"envoyHttpAls": "grpc-als", "envoyTcpAls": "grpc-als", "envoyOtelAls": "grpc-otlp",
                "zipkin": "http-zipkin", "opentelemetry": "grpc-otlp"}
    for provider in declared.values():
        (kind,) = [k for k in provider if k != "name"]
        body = provider[kind]
        assert body["service"] == "meshscope-collector.meshscope.svc.cluster.local"
        assert service_ports[body["port"]] == expected[kind], provider["name"]
    http_headers = declared["meshscope-http-als"]["envoyHttpAls"]["additionalRequestHeadersToLog"]
    assert {"x-b3-traceid", "x-b3-spanid", "x-envoy-attempt-count"} <= set(http_headers)
    named = set()
    for name in ("telemetry-mesh.yaml", "telemetry-workload.yaml"):
        doc = yaml.safe_load((DEPLOY / "istio" / name).read_text())
        assert doc["apiVersion"] == "telemetry.istio.io/v1" and doc["kind"] == "Telemetry"
        for section in ("accessLogging", "tracing"):
            for entry in doc["spec"].get(section, []):
                named |= {p["name"] for p in entry["providers"]}
                if section == "tracing":
                    assert len(entry["providers"]) == 1  # a proxy takes one tracing provider
    assert named == set(declared)
