"""Who may send records: beyond loopback every receiver needs mTLS client certificates and/or a bearer token.

One owner for all receivers (gRPC ALS, Zipkin HTTP, and the OTLP ones): ``receiver_access(settings)``
says what to require and refuses to start an exposed collector without either, as the API does.
gRPC servers take ``grpc_credentials()`` and ``grpc_interceptors()``; Starlette apps are wrapped
with ``http_guard(app)`` and uvicorn gets ``uvicorn_options(...)``. ``peer_identity`` (gRPC) and
``http_identity`` (HTTP) name how a sender proved who it is ("mtls:<certificate name>", "token") so
records can say so, the same name on both transports.
"""

from __future__ import annotations

import functools
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from meshscope.collector.tls_scope import with_tls_scope
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from meshscope.errors import UserError
from meshscope.settings import Settings, is_loopback

#: paths any HTTP client may read (probes and metrics carry no records)
OPEN_HTTP_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(slots=True, frozen=True)
class ReceiverAccess:
    """What a sender must present: a bearer token, a client certificate signed by ``client_ca``, or both."""

    token: str | None = None
    cert: Path | None = None  # the receivers' own certificate and key (TLS on)
    key: Path | None = None
    client_ca: Path | None = None  # client certificates must chain to this (mTLS)

    @property
    def tls(self) -> bool:
        return self.cert is not None

    # ---- gRPC ----------------------------------------------------------------------------------
    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],  # type: ignore[union-attr]
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None)

    def grpc_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [_TokenInterceptor(self.token)] if self.token else []

    # ---- HTTP ----------------------------------------------------------------------------------
    def http_guard(self, app: ASGIApp) -> ASGIApp:
        return _BearerGuard(app, self.token) if self.token else app

    def uvicorn_options(self, options: dict | None = None) -> dict:
        """``options`` (uvicorn.Config keywords) plus TLS; with client certificates required, the HTTP
        protocol also puts the sender's certificate in the ASGI scope (``http_identity`` reads it)."""
        options = dict(options or {})
        if not self.tls:
            return options
        options.update(ssl_certfile=str(self.cert), ssl_keyfile=str(self.key))
        if self.client_ca:
            options.update(ssl_ca_certs=str(self.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED,
                           http=with_tls_scope(options.get("http")))
        return options


def receiver_access(settings: Settings) -> ReceiverAccess:
    """The receivers' requirements from settings; UserError for an exposed collector without any.

    The token is ``collector_token``, else the API's ``api_token`` (so a deployment that protected its
    API is not left with open receivers); TLS is on when ``collector_tls_cert`` and ``_key`` are set,
    and client certificates are required when ``collector_client_ca`` is set too."""
    s = settings
    token = s.collector_token or s.api_token
    if bool(s.collector_tls_cert) != bool(s.collector_tls_key):
        raise UserError("collector TLS needs both collector_tls_cert and collector_tls_key")
    if s.collector_client_ca and not s.collector_tls_cert:
        raise UserError("collector_client_ca (mTLS) needs collector_tls_cert and collector_tls_key")
    for name in ("collector_tls_cert", "collector_tls_key", "collector_client_ca"):
        path = getattr(s, name)
        if path and not Path(path).is_file():
            raise UserError(f"{name}: no such file {path}")
    access = ReceiverAccess(token=token, cert=Path(s.collector_tls_cert) if s.collector_tls_cert else None,
                            key=Path(s.collector_tls_key) if s.collector_tls_key else None,
                            client_ca=Path(s.collector_client_ca) if s.collector_client_ca else None)
    if not is_loopback(s.host) and not token and not access.client_ca:
        raise UserError(
            f"refusing to receive records on {s.host} from anyone: set collector_token (senders send "
            "'authorization: Bearer <token>') or collector_tls_cert, collector_tls_key and "
            "collector_client_ca (mTLS), or bind to 127.0.0.1")
    return access


def peer_identity(context: grpc.aio.ServicerContext, access: ReceiverAccess) -> str | None:
    """How a gRPC sender proved itself: "mtls:<certificate name>", "token", or None (loopback, open)."""
    auth = context.auth_context() or {}
    pem = auth.get("x509_pem_cert")
    if pem:
        return "mtls:" + certificate_name(pem[0].decode())
    names = [n for n in (*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ()))
             if n]
    if names:
        return "mtls:" + names[0].decode(errors="replace")
    if access.token:
        return "token"  # the interceptor let only token holders through
    return None


def http_identity(scope: Scope) -> str | None:
    """How an HTTP sender proved itself, named as ``peer_identity`` names a gRPC one: "mtls:<name>"
    from the client certificate in the scope's TLS extension, "token" (set by the bearer guard), or None."""
    chain = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_chain")
    if chain:
        return "mtls:" + certificate_name(chain[0])
    return scope.get("state", {}).get("peer_auth")


@functools.lru_cache(maxsize=1024)
def certificate_name(pem: str) -> str:
    """A certificate's name in records: its common name, else its first subject alternative name (an
    Istio workload certificate has an empty subject and its SPIFFE id as a URI SAN)."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        return str(common[0].value)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cert.subject.rfc4514_string() or "unnamed"
    first = next(iter(sans), None)
    return str(first.value) if first is not None else "unnamed"


def _token_ok(given: str | bytes | None, expected: str) -> bool:
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode()
    return secrets.compare_digest(given, f"Bearer {expected}".encode())


class _TokenInterceptor(grpc.aio.ServerInterceptor):
    """Fails any call without ``authorization: Bearer <token>`` metadata with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(self, continuation, details):
        metadata = dict(details.invocation_metadata or ())
        handler = await continuation(details)
        if handler is None or _token_ok(metadata.get("authorization"), self.token):
            return handler
        return _denied(handler)


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only refuses."""
    async def deny(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}[
        (handler.request_streaming, handler.response_streaming)]
    return make(deny)


class _BearerGuard:
    """Answers 401 to any HTTP request for records without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "") not in OPEN_HTTP_PATHS:
            if not _token_ok(dict(scope["headers"]).get(b"authorization"), self.token):
                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["peer_auth"] = "token"
        await self.app(scope, receive, send)
