"""What the read-only CLI commands (trace, records, alerts) share: opening the configured store for
one query, and reading times given on the command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshscope.errors import UserError
from meshscope.pipelines import Store, StoreUnavailable
from meshscope.settings import Settings

T = TypeVar("T")
_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def with_store(settings: Settings, query: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store named by the settings, run one query, close it; a store that is down is a UserError."""
    from meshscope.pipelines import make_store

    async def go() -> T:
        store = make_store(settings)
        try:
            await store.start()
            return await query(store)
        finally:
            await store.stop()

    try:
        return asyncio.run(go())
    except StoreUnavailable as exc:
        raise UserError(f"store unavailable: {exc}") from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """Epoch seconds, an ISO 8601 time (UTC unless it says otherwise) or an age such as ``15m``/``2h``."""
    if text is None:
        return None
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"cannot read time {text!r}: give epoch seconds, ISO 8601 or an age like 15m"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def format_time(t: float | None) -> str:
    if t is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):  # a stored value past year 9999 must not crash a reader
        return f"{t!r} (out of range)"
