"""uvicorn against slow and idle clients: read timeouts on request heads and bodies, one line per disconnect.

uvicorn closes an idle keep-alive connection, but a client that sends half a request head, or a body
one byte a minute, holds its connection (and whatever the app reserved for it) forever. ``GuardedH11``
closes a connection whose request head is not complete within ``head_timeout`` seconds of the
connection (or of the previous response), and one whose body stops arriving for ``body_timeout``
seconds while the app is waiting for it. ``quiet_disconnects`` turns a client that went away
mid-request into one log line instead of uvicorn's traceback.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from meshscope.settings import Settings

log = logging.getLogger("meshscope.http")

HEAD_TIMEOUT = 10.0  # defaults; settings.http_head_timeout_s and http_body_timeout_s set them
BODY_TIMEOUT = 30.0


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with head and body read timeouts."""

    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard: asyncio.TimerHandle | None = None
        self._arm(self.head_timeout, "no complete request head")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout, "request body stalled")
        elif state is not h11.IDLE:  # head and body in (DONE), or closing: nothing to wait for
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm(self.head_timeout + self.timeout_keep_alive, "no complete request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        self._guard = self.loop.call_later(seconds, self._expire, seconds, why)

    def _disarm(self) -> None:
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.cancel()
            self._guard = None

    def _expire(self, seconds: float, why: str) -> None:
        self._guard = None
        if self.flow is not None and self.flow.read_paused:  # the app is behind, not the client
            self._arm(seconds, why)
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closing the connection from %s: %s for %g s", client, why, seconds)
        self.transport.close()


def quiet_disconnects(app: ASGIApp) -> ASGIApp:
    """ASGI wrapper: a client gone mid-request is one log line, not a traceback."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except (ClientDisconnect, ConnectionResetError, BrokenPipeError) as exc:
            client = scope.get("client") or ("?", 0)
            log.warning("client %s:%s went away during %s %s (%s)", client[0], client[1],
                     scope.get("method", ""), scope.get("path", ""), type(exc).__name__)

    return guarded


def uvicorn_options(settings: Settings | None = None) -> dict:
    """Keyword arguments for uvicorn.Config / uvicorn.run that install the guards (timeouts from settings)."""
    s = settings or Settings()
    protocol = type("GuardedH11", (GuardedH11,), {"head_timeout": float(s.http_head_timeout_s),
                                                  "body_timeout": float(s.http_body_timeout_s)})
    return {"http": protocol, "timeout_keep_alive": 5}
