"""The collector beyond loopback: refused without credentials; with a bearer token or mTLS only senders
that present them get in, and their records say how the proxy proved itself. The collector runs as a
real process inside a network namespace the test creates, reached from the host over a veth pair."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.accesslog.v3 import als_pb2_grpc
from meshscope.pipelines.bus.memory import MemoryBus
from meshscope.proxy.certs import self_signed_pair

from tests.collector.als_messages import http_message
from tests.collector.test_access_log_lines import ISTIO_LINE
from tests.conftest import stop_process
from tests.proxy.test_netns import namespace  # noqa: F401 - fixture

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]
ROOT = Path(__file__).resolve().parents[2]
SPAN = b'[{"traceId": "463ac35c9f6413ad", "id": "463ac35c9f6413ad", "kind": "SERVER"}]'
PROTOBUF = {"content-type": "application/x-protobuf"}


def _otlp_logs() -> bytes:
    """One OTLP log record whose body is an Istio text line dated now (inside the intake window)."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    request = logs_service_pb2.ExportLogsServiceRequest()
    log = request.resource_logs.add().scope_logs.add().log_records.add()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    log.body.string_value = ISTIO_LINE.replace("2024-05-01T12:00:00.123Z", now).rstrip()
    return request.SerializeToString()


OTLP_LOGS = _otlp_logs()


def _collector(data_dir: Path, host: str, env: dict, netns: str | None = None) -> subprocess.Popen:
    cmd = [*MESHSCOPE, "collector", "--host", host, "--als-port", "18000", "--zipkin-port", "9411",
           "--data-dir", str(data_dir)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _wait_listening(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()  # "meshscope collector: access logs on …" once both listen
    assert "access logs on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")


def _stored_auth(data_dir: Path) -> list[str | None]:
    async def read() -> list:
        bus = MemoryBus(wal_dir=data_dir / "bus")
        out: list = []
        consumer = bus.consume("access", "check")
        try:
            while True:
                batch = await asyncio.wait_for(anext(consumer), 1)
                out += [r.node_auth for r in batch.records]
        except TimeoutError:
            return out
        finally:
            await consumer.aclose()
            await bus.stop()

    return asyncio.run(read())


def test_beyond_loopback_without_credentials_is_refused(data_dir):
    proc = _collector(data_dir, "0.0.0.0", {"MESHSCOPE_API_TOKEN": "", "MESHSCOPE_COLLECTOR_TOKEN": ""})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("meshscope: refusing to receive records on 0.0.0.0"), err


@pytest.mark.root
@pytest.mark.slow
def test_bearer_token_on_grpc_metadata_and_http(namespace, data_dir):  # noqa: F811
    name, _, ns_ip = namespace
    proc = _collector(data_dir, ns_ip, {"MESHSCOPE_COLLECTOR_TOKEN": "s3cret"}, netns=name)
    try:
        _wait_listening(proc)
        with grpc.insecure_channel(f"{ns_ip}:18000") as channel:
            stub = als_pb2_grpc.AccessLogServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.StreamAccessLogs(iter([http_message(2, node_id="forged")]), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError):
                stub.StreamAccessLogs(iter([http_message(2, node_id="forged")]), timeout=10,
                                      metadata=[("authorization", "Bearer wrong")])
            stub.StreamAccessLogs(iter([http_message(3)]), timeout=10,
                                  metadata=[("authorization", "Bearer s3cret")])
        url = f"http://{ns_ip}:9411"
        assert httpx.post(f"{url}/api/v2/spans", content=SPAN, timeout=10).status_code == 401
        assert httpx.post(f"{url}/api/v2/spans", content=SPAN, timeout=10,
                          headers={"Authorization": "Bearer s3cret"}).status_code == 202
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # probes stay open
        otlp = f"http://{ns_ip}:4318/v1/logs"
        assert httpx.post(otlp, content=OTLP_LOGS, headers=PROTOBUF, timeout=10).status_code == 401
        assert httpx.post(otlp, content=OTLP_LOGS, timeout=10,
                          headers={**PROTOBUF, "Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    assert _stored_auth(data_dir) == ["token"] * 4  # nothing from the forged proxy


@pytest.mark.root
@pytest.mark.slow
def test_mtls_client_certificates(namespace, data_dir, tmp_path):  # noqa: F811
    name, _, ns_ip = namespace
    server_cert, server_key = self_signed_pair(tmp_path / "server", ["collector.test"])
    client_cert, client_key = self_signed_pair(tmp_path / "client", ["gateway.lab"])
    stranger_cert, stranger_key = self_signed_pair(tmp_path / "stranger", ["stranger.lab"])
    env = {"MESHSCOPE_COLLECTOR_TLS_CERT": str(server_cert), "MESHSCOPE_COLLECTOR_TLS_KEY": str(server_key),
           "MESHSCOPE_COLLECTOR_CLIENT_CA": str(client_cert)}
    proc = _collector(data_dir, ns_ip, env, netns=name)
    options = [("grpc.ssl_target_name_override", "collector.test")]
    try:
        _wait_listening(proc)

        def send(cert: Path | None, key: Path | None, node: str) -> None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=server_cert.read_bytes(),
                private_key=key.read_bytes() if key else None,
                certificate_chain=cert.read_bytes() if cert else None)
            with grpc.secure_channel(f"{ns_ip}:18000", creds, options=options) as channel:
                als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(
                    iter([http_message(2, node_id=node)]), timeout=10)

        send(client_cert, client_key, "gateway")
        for cert, key in ((None, None), (stranger_cert, stranger_key)):
            with pytest.raises(grpc.RpcError):
                send(cert, key, "forged")

        def post(cert: Path | None, key: Path | None, url: str = f"https://{ns_ip}:9411/api/v2/spans",
                 body: bytes = SPAN) -> int:
            ctx = ssl.create_default_context(cafile=str(server_cert))
            ctx.check_hostname = False
            if cert:
                ctx.load_cert_chain(cert, key)
            headers = PROTOBUF if body is OTLP_LOGS else None
            return httpx.post(url, content=body, verify=ctx, headers=headers, timeout=10).status_code

        assert post(client_cert, client_key) == 202
        otlp = f"https://{ns_ip}:4318/v1/logs"
        assert post(client_cert, client_key, otlp, OTLP_LOGS) == 200  # OTLP/HTTP: TLS, client certificate
        for cert, key in ((None, None), (stranger_cert, stranger_key)):
            for url, body in ((f"https://{ns_ip}:9411/api/v2/spans", SPAN), (otlp, OTLP_LOGS)):
                with pytest.raises((httpx.HTTPError, ssl.SSLError)):
                    post(cert, key, url, body)
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.post(f"http://{ns_ip}:4318/v1/logs", content=OTLP_LOGS, headers=PROTOBUF, timeout=10)
        time.sleep(0.2)
    finally:
        stop_process(proc)
    # OTLP/HTTP names the client certificate as gRPC does
    assert _stored_auth(data_dir) == ["mtls:gateway.lab"] * 3
