"""The decoder backend interface: one capture file in, a stream of Exchanges out, plus a damage report.

Every backend gives the same Exchanges for the same capture (tests check it)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from meshscope.model import Exchange


@dataclass(slots=True, kw_only=True)
class CaptureReport:
    """What a backend saw in one capture, and what was damaged in it."""

    capture: str
    format: str = ""  # "pcap" or "pcapng"
    link_types: list[str] = field(default_factory=list)
    packets: int = 0
    bytes: int = 0
    connections: int = 0
    exchanges: int = 0
    damage: list[str] = field(default_factory=list)  # human-readable, capped in length
    truncated: bool = False  # the file ended mid-record
    # frames not decoded, by link type / encapsulation / protocol ("PPP LCP": 3, "ARP": 2)
    not_decoded: dict[str, int] = field(default_factory=dict)


class Backend(abc.ABC):
    name: ClassVar[str]

    def __init__(self) -> None:
        self.report: CaptureReport | None = None
        self.keylog = None  # decoders.tls_keylog.KeyLog: decrypt TLS with it (segment backends)

    @abc.abstractmethod
    def decode(
        self, path: Path, *, capture: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[Exchange]:
        """Stream the Exchanges of one capture in memory that does not grow with the file.
        ``capture`` names it in Exchange.conn.capture (default: the file name); ``progress`` is
        called with the byte offset reached. Fills ``self.report``; raises CaptureError when the
        file cannot be read at all."""
