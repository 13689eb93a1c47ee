"""What the three backends share: they turn a capture into TCP segments their own way, and the
ConnectionTable turns segments into Exchanges. This class runs that loop and fills the report."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from pathlib import Path

from meshscope.decoders.backends.base import Backend, CaptureReport
from meshscope.decoders.capture_file import ReadStats, sniff_capture
from meshscope.decoders.connection_table import DEFAULT_MAX_CONNECTIONS, ConnectionSummary, ConnectionTable
from meshscope.decoders.link_layers import SUPPORTED_LINKTYPES, linktype_name
from meshscope.decoders.pod_labels import ptcpdump_labels
from meshscope.decoders.udp_table import Datagram, UdpTable
from meshscope.decoders.wording import counted

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
                 progress: Callable[[int], None] | None) -> Iterator[Segment | Datagram]:
        """The capture's TCP segments that ``connection_table.wanted`` keeps and its UDP datagrams
        (decoders.udp_table.Datagram), in capture order."""

    def decode(self, path: Path, *, capture: str | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[Exchange]:
        """Validates the file now (CaptureError), then streams its Exchanges."""
        path = Path(path)
        fmt, compression = sniff_capture(path)
        stats = ReadStats(format=fmt, compression=compression)
        self.report = CaptureReport(capture=capture or path.name, format=fmt, compression=compression)
        return self._run(path, stats, capture or path.name, progress)

    def _run(self, path: Path, stats: ReadStats, capture: str,
             progress: Callable[[int], None] | None) -> Iterator[Exchange]:
        table = ConnectionTable(capture, max_connections=self.max_connections,
                                on_connection=self.on_connection, keylog=self.keylog)
        ready = table.ready
        udp = UdpTable(capture, ready)
        table.dns = udp.dns  # DNS over TCP joins the same lookups
        segment = table.segment
        table.names = udp.names = udp.dns.names = self.names
        secrets = stats.tls_key_logs if stats.format == "pcapng" else None  # Decryption Secrets Blocks
        notes = stats.notes  # the comments of the packet just read (pcapng: ptcpdump's process and pod)
        try:
            for seg in self.segments(path, stats, progress):
                if secrets:
                    _take_secrets(table, secrets, capture)
                if seg.__class__ is Datagram:
                    udp.datagram(*seg)
                else:
                    segment(*seg)
                if notes:
                    _take_notes(table, seg, notes)
                if ready:
                    self._count(len(ready))
                    yield from ready
                    ready.clear()
            table.finish()
            udp.finish()
            self._count(len(ready))
            yield from ready
            ready.clear()
        finally:
            self._fill_report(stats, table)
            self._fill_udp_report(udp)

    def _fill_udp_report(self, udp: UdpTable) -> None:
        r = self.report
        assert r is not None
        r.datagrams, r.quic_connections, r.dns_lookups = udp.datagrams, udp.quic_connections, udp.dns.lookups
        r.damage.extend(udp.damage)
        if udp.damage_count > len(udp.damage):
            r.damage.append(f"… and {udp.damage_count - len(udp.damage)} more damaged UDP datagrams")

    def _count(self, n: int) -> None:
        self.report.exchanges += n  # type: ignore[union-attr]

    def _fill_report(self, stats: ReadStats, table: ConnectionTable) -> None:
        r = self.report
        assert r is not None
        r.link_types = sorted(linktype_name(lt) for lt in stats.link_types)
        r.packets, r.bytes, r.truncated = stats.packets, stats.bytes, stats.truncated
        r.connections = table.connections
        r.not_decoded = dict(sorted(stats.not_decoded.items(), key=lambda kv: (-kv[1], kv[0])))
        r.snaplen, r.cut_by_snaplen = stats.snaplen, table.snap_cut
        # the report's own notes first (few, and the most telling), then the first places of each kind
        notes = [f"link type {linktype_name(lt)} is not supported; its packets were skipped"
                 for lt in sorted(stats.link_types - SUPPORTED_LINKTYPES)]
        if table.snap_cut:
            per = f" ({stats.snaplen} bytes per packet)" if stats.snaplen else ""
            notes.append(f"{counted(table.snap_cut, 'segment')} cut short by the capture's snaplen{per}: "
                         "request and status lines, header lines and TLS hello extensions kept whole are "
                         "read, the rest is unknown")
        if table.evicted:
            notes.append(f"{counted(table.evicted, 'connection')} evicted: more than {table.max_connections} "
                         f"open at once, or more than {table.max_buffered >> 20} MB held for them")
        r.damage = notes + list(stats.damage) + list(table.damage)
        r.damage_count = len(notes) + stats.damage_count + table.damage_count


def _take_notes(table: ConnectionTable, seg: Segment, notes: list) -> None:
    for comments, direction in notes:
        table.label(seg[1], seg[2], seg[3], seg[4], ptcpdump_labels(comments), direction)
    notes.clear()


def _take_secrets(table: ConnectionTable, secrets: list[bytes], capture: str) -> None:
    """Key-log text from the capture's own Decryption Secrets Blocks joins the table's key log."""
    from meshscope.decoders.tls_keylog import KeyLog

    if table.keylog is None:
        table.keylog = KeyLog()
    for text in secrets:
        table.keylog.add_text(text, f"{capture} (decryption secrets block)")
    secrets.clear()
