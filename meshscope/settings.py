"""Configuration: one YAML file plus MESHSCOPE_* environment variables; defaults run embedded on loopback.

Precedence: defaults < YAML file (``--config`` or MESHSCOPE_CONFIG) < environment variables.
An environment variable is the field name upper-cased: ``MESHSCOPE_API_PORT=8080``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(slots=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    data_dir: Path = Path("data")
    # ports (DESIGN.md conventions)
    api_port: int = 8000
    zipkin_port: int = 9411
    als_port: int = 18000
    otlp_grpc_port: int = 4317  # OTLP/gRPC logs and traces
    otlp_http_port: int = 4318  # OTLP/HTTP (protobuf, JSON)
    envoy_admin_port: int = 15000
    proxy_port: int = 15001
    demo_upstream_port: int = 18080
    # bus and store: "memory" + "sqlite" embedded; "kafka" + "elasticsearch" scale-out
    bus: str = "memory"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "meshscope."
    kafka_partitions: int = 3  # for topics meshscope creates when missing
    kafka_replication_factor: int = 1
    kafka_compression: str | None = None  # producer compression: zstd, lz4, gzip, snappy (None: off)
    # how long the pipeline's fetches may wait (Kafka's fetch.max.wait.ms; Kafka answers sooner when data is
    # there). Tansu 0.6 on S3 serves a fetch roughly what it read within this wait: give it 2000 or more
    kafka_fetch_wait_ms: int = 500
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ca_file: Path | None = None
    kafka_cert_file: Path | None = None  # client certificate (mutual TLS)
    kafka_key_file: Path | None = None
    store: str = "sqlite"
    sqlite_path: Path | None = None  # default: data_dir / "meshscope.db"
    elasticsearch_url: str = "http://127.0.0.1:9200"
    elasticsearch_index_prefix: str = "meshscope-"
    # how long one Elasticsearch call retries an unreachable or busy server before the store gives up
    # (the pipeline then waits and tries again; the API answers 503)
    elasticsearch_retry_s: float = 30.0
    retention_days: int = 7
    # alerts
    alert_rules: Path | None = None  # default: the bundled pipelines/default_rules.yaml
    alert_webhooks: list[str] = field(default_factory=list)
    # Alertmanager (POST /api/v2/alerts): every URL gets every alert, as Prometheus does for an HA cluster
    alertmanager_urls: list[str] = field(default_factory=list)
    alertmanager_resend_interval: float = 60.0  # seconds between re-sends of active alerts
    alertmanager_username: str | None = None  # basic auth
    alertmanager_password: str | None = None
    alertmanager_bearer_token: str | None = None
    alertmanager_ca_file: Path | None = None  # CA bundle for https Alertmanagers
    alertmanager_timeout: float = 10.0
    # API
    api_token: str | None = None  # required for every endpoint but health when bound beyond loopback
    upload_max_bytes: int = 2 * 1024**3
    upload_max_count: int = 1000
    # the HTTP servers close a connection whose request head is not in after this many seconds, or
    # whose body stops arriving for this long (meshscope/slow_clients.py)
    http_head_timeout_s: int = 10
    http_body_timeout_s: int = 30
    # collector intake (issue 12): records dated outside [now - behind, now + ahead] are clamped or
    # rejected; text fields and whole entries past these sizes are cut or rejected; gRPC messages past
    # collector_max_message_bytes are refused (Envoy flushes its access-log buffer at 16 KiB)
    intake_max_ahead_s: int = 3600
    intake_max_behind_s: int = 30 * 86400
    intake_time_policy: str = "clamp"
    intake_max_field: int = 16 * 1024
    intake_max_entry: int = 64 * 1024
    collector_max_message_bytes: int = 4 * 1024 * 1024
    # collector access control (collector/access_control.py): beyond loopback the receivers need a bearer
    # token (collector_token, else api_token) and/or client certificates signed by collector_client_ca
    collector_token: str | None = None
    collector_tls_cert: Path | None = None
    collector_tls_key: Path | None = None
    collector_client_ca: Path | None = None
    # proxies whose admin API the collector reads for loss accounting ("127.0.0.1:15000")
    proxy_admins: list[str] = field(default_factory=list)
    # the API reads those proxies' counters this often (seconds; 0: only when /api/proxies is asked), so
    # a proxy's restart is noticed and its earlier run's counts carried even when nobody is looking;
    # every proxy_poll_busy_s while a proxy logs: what it logs after the last read dies uncounted with it
    proxy_poll_s: float = 1.0
    proxy_poll_busy_s: float = 0.25
    # set by `meshscope up`, not by hand: the admin addresses among proxy_admins of the Envoy it launched,
    # which dies with it (so a run that died with an earlier `up` ended within a poll of its last read)
    proxy_admins_bundled: list[str] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.sqlite_path or (self.data_dir / "meshscope.db")

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost": only this machine can connect (the API and the collector
    require credentials beyond it)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build Settings from defaults, the YAML file and MESHSCOPE_* variables (clear error on bad input)."""
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {}
    path = path or env.get("MESHSCOPE_CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"config {path}: expected a mapping at the top level")
        values.update(loaded)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name in fields:
        key = "MESHSCOPE_" + name.upper()
        if key in env:
            values[name] = env[key]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    defaults = Settings()
    return Settings(**{k: _coerce(getattr(defaults, k), fields[k].type, v) for k, v in values.items()})


def _coerce(default: object, annotation: object, value: object) -> object:
    ann = str(annotation)
    if value is None:
        return None
    if "list" in ann:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value)  # type: ignore[arg-type]
    if "Path" in ann:
        return Path(str(value))
    if ann.startswith("float"):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"expected a number, got {value!r}") from exc
    if ann.startswith("int") or isinstance(default, int):
        try:
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"expected a whole number, got {value!r}") from exc
    return str(value)
