"""One call from a capture file to its Exchanges: what the stitching code and the CLI use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from meshscope.decoders.backends import get_backend
from meshscope.decoders.backends.base import CaptureReport
from meshscope.decoders.connection_table import ConnectionSummary

from meshscope.model import Exchange


def read_exchanges(path: str | Path, backend: str = "dpkt", progress: Callable[[int], None] | None = None,
                   *, capture: str | None = None,
                   on_connection: Callable[[ConnectionSummary], None] | None = None,
                   ) -> tuple[Iterator[Exchange], CaptureReport]:
    """(stream of Exchanges, report). The file is checked now (CaptureError, one line, for an empty
    file, a wrong magic, an unreadable path); the report fills in as the stream is consumed and is
    complete once it is exhausted. ``progress`` gets the byte offset reached; ``on_connection``
    gets a summary of every connection as it closes, also those without HTTP or TLS."""
    b = get_backend(backend)
    if on_connection is not None:
        b.on_connection = on_connection  # type: ignore[attr-defined]
    stream = b.decode(Path(path), capture=capture, progress=progress)
    assert b.report is not None
    return stream, b.report
