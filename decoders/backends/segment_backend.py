"""What the three backends share: they turn a capture into TCP segments their own way, and the
ConnectionTable turns segments into Exchanges. This class runs that loop and fills the report."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from pathlib import Path

from meshscope.decoders.backends.base import Backend, CaptureReport
from meshscope.decoders.capture_file import ReadStats, sniff_format
from meshscope.decoders.connection_table import DEFAULT_MAX_CONNECTIONS, ConnectionSummary, ConnectionTable
from meshscope.decoders.link_layers import SUPPORTED_LINKTYPES, linktype_name

from meshscope.model import Exchange

# (ts, src, sport, dst, dport, seq, ack, flags, payload, missing, interface), as ConnectionTable.segment
Segment = tuple[float, str, int, str, int, int, int, int, bytes, int, "str | None"]


class SegmentBackend(Backend):
    """A backend that yields TCP segments; subclasses implement ``segments``."""

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 on_connection: Callable[[ConnectionSummary], None] | None = None) -> None:
        super().__init__()
        self.max_connections = max_connections
        self.on_connection = on_connection

    @abc.abstractmethod
    def segments(self, path: Path, stats: ReadStats,
                 progress: Callable[[int], None] | None) -> Iterator[Segment]:
        """The capture's TCP segments that ``connection_table.wanted`` keeps, in capture order."""

    def decode(self, path: Path, *, capture: str | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[Exchange]:
        """Validates the file now (CaptureError), then streams its Exchanges."""
        path = Path(path)
        fmt = sniff_format(path)
        stats = ReadStats(format=fmt)
        self.report = CaptureReport(capture=capture or path.name, format=fmt)
        return self._run(path, stats, capture or path.name, progress)

    def _run(self, path: Path, stats: ReadStats, capture: str,
             progress: Callable[[int], None] | None) -> Iterator[Exchange]:
        table = ConnectionTable(capture, max_connections=self.max_connections,
                                on_connection=self.on_connection, keylog=self.keylog)
        ready = table.ready
        segment = table.segment
        secrets = stats.tls_key_logs if stats.format == "pcapng" else None  # Decryption Secrets Blocks
        try:
            for seg in self.segments(path, stats, progress):
                if secrets:
                    _take_secrets(table, secrets, capture)
                segment(*seg)
                if ready:
                    self._count(len(ready))
                    yield from ready
                    ready.clear()
            table.finish()
            self._count(len(ready))
            yield from ready
            ready.clear()
        finally:
            self._fill_report(stats, table)

    def _count(self, n: int) -> None:
        self.report.exchanges += n  # type: ignore[union-attr]

    def _fill_report(self, stats: ReadStats, table: ConnectionTable) -> None:
        r = self.report
        assert r is not None
        r.link_types = sorted(linktype_name(lt) for lt in stats.link_types)
        r.packets, r.bytes, r.truncated = stats.packets, stats.bytes, stats.truncated
        r.connections = table.connections
        r.not_decoded = dict(sorted(stats.not_decoded.items(), key=lambda kv: (-kv[1], kv[0])))
        r.damage = list(stats.damage) + list(table.damage)
        for lt in sorted(stats.link_types - SUPPORTED_LINKTYPES):
            r.damage.append(f"link type {linktype_name(lt)} is not supported; its packets were skipped")
        if table.damage_count > len(table.damage):
            r.damage.append(f"… and {table.damage_count - len(table.damage)} more damaged places")
        if table.evicted:
            r.damage.append(f"{table.evicted} connections evicted: more than {table.max_connections} open "
                            f"at once, or more than {table.max_buffered >> 20} MB held for them")


def _take_secrets(table: ConnectionTable, secrets: list[bytes], capture: str) -> None:
    """Key-log text from the capture's own Decryption Secrets Blocks joins the table's key log."""
    from meshscope.decoders.tls_keylog import KeyLog

    if table.keylog is None:
        table.keylog = KeyLog()
    for text in secrets:
        table.keylog.add_text(text, f"{capture} (decryption secrets block)")
    secrets.clear()
