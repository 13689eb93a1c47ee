"""One capture's report as one line of text (the CLI's summary; the JSON carries the same fields)."""

from __future__ import annotations

from meshscope.decoders.backends.base import CaptureReport
from meshscope.decoders.wording import counted


def capture_line(r: CaptureReport) -> str:
    """``name: pcapng (gzip), 120 packets, 4 connections, 7 exchanges; …``, or why it could not be read."""
    if r.error:
        return f"{r.capture}: NOT READ: {r.error}"
    fmt = f"{r.format} ({r.compression})" if r.compression else r.format
    parts = [f"{r.capture}: {fmt}", counted(r.packets, "packet"), counted(r.connections, "connection"),
             counted(r.exchanges, "exchange")]
    notes = []
    if r.truncated:
        notes.append("file cut short")
    if r.cut_by_snaplen:
        snap = f" {r.snaplen}" if r.snaplen else ""
        notes.append(f"{counted(r.cut_by_snaplen, 'segment')} cut by snaplen{snap}")
    if r.damage_count:
        notes.append(counted(r.damage_count, "damaged place"))
    return ", ".join(parts) + ("; " + ", ".join(notes) if notes else "")
