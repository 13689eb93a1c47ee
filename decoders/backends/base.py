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
    compression: str | None = None  # "gzip", "zstd", "lz4", "bzip2", "xz" (decoders.compressed), or None
    link_types: list[str] = field(default_factory=list)
    packets: int = 0
    bytes: int = 0
    connections: int = 0
    exchanges: int = 0
    damage: list[str] = field(default_factory=list)  # human-readable, the first places (capped in length)
    damage_count: int = 0  # every damaged place, also those beyond the examples in ``damage``
    truncated: bool = False  # the file ended mid-record
    snaplen: int | None = None  # the capture's declared snaplen (bytes kept per packet)
    cut_by_snaplen: int = 0  # TCP segments whose payload that snaplen cut short (their heads still read)
    error: str | None = None  # why this capture could not be read (the others of a run still were)
    # frames not decoded, by link type / encapsulation / protocol ("PPP LCP": 3, "ARP": 2)
    not_decoded: dict[str, int] = field(default_factory=dict)
    datagrams: int = 0  # UDP datagrams read (DNS, QUIC, other)
    quic_connections: int = 0
    dns_lookups: int = 0


class Backend(abc.ABC):
    name: ClassVar[str]

    def __init__(self) -> None:
        self.report: CaptureReport | None = None
        self.keylog = None  # decoders.tls_keylog.KeyLog: decrypt TLS with it (segment backends)
        self.names = None  # decoders.pod_labels.K8sNames: label connections with pod and service names

    @abc.abstractmethod
    def decode(
        self, path: Path, *, capture: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[Exchange]:
        """Stream the Exchanges of one capture in memory that does not grow with the file.
        ``capture`` names it in Exchange.conn.capture (default: the file name); ``progress`` is
        called with the byte offset reached. Fills ``self.report``; raises CaptureError when the
        file cannot be read at all."""
