"""Bearer-token protection for an API bound beyond loopback: every endpoint but the probes needs the token.

The web page's shell (``/`` and ``/static/…``: code, no data) is served without it, because a browser
cannot send a header when it navigates; the page then asks for the token and sends it on every API call."""

from __future__ import annotations

import secrets

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from meshscope.errors import UserError
from meshscope.settings import Settings, is_loopback  # noqa: F401 - re-exported

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})
OPEN_PREFIXES = ("/static/",)


def required_token(settings: Settings) -> str | None:
    """The token every request must carry, or None on loopback; refuses an exposed API without one."""
    if is_loopback(settings.host):
        return None
    if not settings.api_token:
        raise UserError(
            f"refusing to serve on {settings.host} without api_token (set MESHSCOPE_API_TOKEN), "
            "or bind to 127.0.0.1"
        )
    return settings.api_token


class BearerTokenMiddleware:
    """Answers 401 (JSON) to any HTTP request but health that lacks ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
