"""Streaming pcap / pcapng reader: yields one CaptureRecord per packet, never the whole file.

Hand-written on struct (rather than dpkt.pcap / dpkt.pcapng) because meshscope needs, per packet,
the pcapng interface it came from, and needs damage (truncation, absurd record lengths) reported
instead of raised; it also reads in large chunks, which is the fastest way through a big file. For a
pcap of an Ethernet or Linux cooked link layer, the loop over the records of a chunk runs in C
(decoders/_record_scan.c: most records are dropped from their headers, the rest cut into Segments),
once per chunk instead of once per record; the Python loop below is its reference and fallback."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from meshscope.decoders.compressed import COMPRESSIONS, CaptureStream, compression_of
from meshscope.decoders.link_layers import FIXED_LAYOUTS
from meshscope.decoders.tcp_cut import IPV4_TCP_MIN, TcpCut, linked_head
from meshscope.decoders.tcp_flags import CONTROL, IP_FRAGMENTED
from meshscope.decoders.wording import counted

from meshscope.errors import CaptureError

try:  # compiled by the package's install (scripts/setup.sh); without it the Python loop reads alone
    from meshscope.decoders._record_scan import scan as _scan
except ImportError:  # pragma: no cover - a checkout whose extension was not built
    _scan = None

PCAP_MAGICS = {  # magic as read little-endian -> (byte order, timestamp divisor)
    0xA1B2C3D4: ("<", 1e6), 0xD4C3B2A1: (">", 1e6),
    0xA1B23C4D: ("<", 1e9), 0x4D3CB2A1: (">", 1e9),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
MAX_RECORD = 1 << 20  # no real link layer carries more; tcpdump's largest snaplen is 256 KiB
MAX_BLOCK = 16 << 20  # pcapng blocks beyond this are damage, not data
CHUNK = 1 << 20
MAX_DAMAGE = 50
PCAPNG_DSB = 0x0000000A  # Decryption Secrets Block (what `editcap --inject-secrets` writes)
DSB_TLS_KEYLOG = 0x544C534B  # "TLSK": the secrets are NSS key-log lines


class CaptureRecord(NamedTuple):
    """One captured frame: time (s), link type, interface (name/index or None), bytes, wire length."""

    ts: float
    linktype: int
    interface: str | None
    data: bytes
    orig_len: int


_record = tuple.__new__  # builds a CaptureRecord at C speed (its generated __new__ is Python)


@dataclass(slots=True)
class ReadStats:
    """What the reader saw: filled while iterating."""

    format: str = ""
    compression: str | None = None  # "gzip", "zstd", … (decoders.compressed), None for a plain file
    link_types: set[int] = field(default_factory=set)
    packets: int = 0
    bytes: int = 0
    offset: int = 0
    truncated: bool = False
    snaplen: int | None = None  # the smallest snaplen the file's header(s) declare
    damage: list[str] = field(default_factory=list)  # the first MAX_DAMAGE places
    damage_count: int = 0  # all of them
    # the packet just yielded carried pcapng comments: [(comments, direction)] (decoders.pod_labels)
    notes: list[tuple[tuple[str, ...], int]] = field(default_factory=list, repr=False)
    # pcapng Decryption Secrets Blocks of type TLSK: key-log text, a secret (kept out of repr)
    tls_key_logs: list[bytes] = field(default_factory=list, repr=False)
    # frames that led to no analysable packet, by what stopped them (decoders.tunnels)
    not_decoded: dict[str, int] = field(default_factory=dict)

    def add_damage(self, text: str) -> None:
        self.damage_count += 1
        if len(self.damage) < MAX_DAMAGE:
            self.damage.append(text)


def capture_format(head: bytes) -> str | None:
    """'pcap' or 'pcapng' from a file's first four bytes, else None (the one place formats are sniffed)."""
    if len(head) < 4:
        return None
    magic = struct.unpack("<I", head[:4])[0]
    if magic in PCAP_MAGICS:
        return "pcap"
    if magic == PCAPNG_SHB:
        return "pcapng"
    return None


def upload_format(head: bytes) -> str | None:
    """What an upload's first bytes announce: 'pcap', 'pcapng', a compression ('gzip', …: the capture
    inside is checked when it is read), or None for anything else."""
    return capture_format(head) or compression_of(head)


def sniff_format(path: Path) -> str:
    """'pcap' or 'pcapng' from the file's magic (inside its compression, if any); CaptureError (one
    line) for anything else."""
    return sniff_capture(path)[0]


def sniff_capture(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the file's magic; CaptureError (one line) for anything else: a
    directory, a missing or unreadable file, an empty one, a wrong magic, a damaged compressed head."""
    path = Path(path)
    if path.is_dir():
        raise CaptureError(f"{path}: is a directory, not a capture file (name the files in it)")
    compression = None
    try:
        with CaptureStream(path) as cs:
            compression = cs.compression
            head = cs.stream.read(4)
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such capture file") from None
    except OSError as e:
        if e.strerror is not None:
            raise CaptureError(f"{path}: cannot read capture: {e.strerror}") from None
        raise CaptureError(f"{path}: damaged {compression} compression: {e}") from None
    except Exception as e:  # a decompressor's own error (zstandard.ZstdError, lz4's RuntimeError, EOFError)
        raise CaptureError(f"{path}: damaged {compression} compression: {e or type(e).__name__}") from None
    inside = f" inside its {compression} compression" if compression else ""
    if not head:
        raise CaptureError(f"{path}: empty file, not a capture" if not compression
                           else f"{path}: nothing{inside}, not a capture")
    if len(head) < 4:
        raise CaptureError(f"{path}: only {counted(len(head), 'byte')}{inside}, not a capture")
    fmt = capture_format(head)
    if fmt is None:
        raise CaptureError(f"{path}: not a pcap or pcapng file{inside} (magic {head.hex()}; compressions "
                           f"read: {', '.join(COMPRESSIONS.values())})")
    return fmt, compression


class _Chunks:
    """A read-ahead window over a file, so each record costs a slice, not a read() call."""

    def __init__(self, f) -> None:
        self.f = f
        self.buf = b""
        self.pos = 0
        self.base = 0  # file offset of buf[0]
        self.error: str | None = None  # why reading stopped early (a damaged compressed stream)

    def need(self, n: int) -> bool:
        """Make buf[pos:pos+n] available; False at end of file (or where decompression failed)."""
        if self.pos + n <= len(self.buf):
            return True
        self.base += self.pos
        self.buf = self.buf[self.pos:] + self._read(max(CHUNK, n))
        self.pos = 0
        return n <= len(self.buf)

    def _read(self, n: int) -> bytes:
        if self.error is not None:
            return b""
        parts, got = [], 0
        # read1 where there is one: a decompressor's read() of a damaged stream raises and drops what
        # it had already decompressed; read1 hands that over first
        read = getattr(self.f, "read1", self.f.read)
        try:
            while got < n:  # decompressors return less than asked before the end
                part = read(n - got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except Exception as e:  # gzip's EOFError / BadGzipFile, zstandard.ZstdError, lz4's RuntimeError
            self.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return b"".join(parts) if len(parts) != 1 else parts[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def left(self) -> int:
        return len(self.buf) - self.pos


def read_capture(path: Path, stats: ReadStats | None = None,
                 progress: Callable[[int], None] | None = None,
                 cut: TcpCut | None = None) -> Iterator[CaptureRecord | tuple]:
    """Stream the records of a pcap or pcapng file; damage goes to ``stats``, never raised mid-file.
    With ``cut``, the IPv4/TCP frames of a pcap file whose link layer has a fixed length (Ethernet,
    Linux cooked) come out already cut into Segments (decoders.tcp_cut), those of other shards and
    the pure ACKs not at all; every other record still comes out as a CaptureRecord, and every
    record is counted."""
    stats = stats if stats is not None else ReadStats()
    fmt, stats.compression = sniff_capture(path)
    stats.format = fmt
    with CaptureStream(path) as cs:
        chunks = _Chunks(cs.stream)
        tick = cs.progress_of(progress)  # a compressed file's progress counts the bytes on disk
        try:
            if fmt == "pcap":
                yield from _read_pcap(path, chunks, stats, tick, cut)
            else:
                yield from _read_pcapng(path, chunks, stats, tick)
        finally:
            if chunks.error is not None:
                stats.truncated = True
                stats.add_damage(f"{stats.compression} stream damaged after {counted(chunks.offset, 'byte')} "
                                 f"of capture ({chunks.error}); read up to there")
        stats.offset = chunks.offset
        if progress is not None:
            progress(cs.raw_offset() if cs.compression else chunks.offset)  # the end


def _read_pcap(path: Path, c: _Chunks, stats: ReadStats, progress,
               cut: TcpCut | None = None) -> Iterator[CaptureRecord | tuple]:
    if not c.need(24):
        why = f"; {c.error}" if c.error else ""
        raise CaptureError(f"{path}: pcap header cut short ({c.left()} of 24 bytes{why})")
    magic = struct.unpack_from("<I", c.buf, 0)[0]
    order, divisor = PCAP_MAGICS[magic]
    _vmaj, _vmin, _tz, _sig, snaplen, linktype = struct.unpack_from(order + "HHiIII", c.buf, 4)
    linktype &= 0xFFFF  # upper bits carry FCS flags, not the link type
    stats.link_types.add(linktype)
    stats.snaplen = snaplen or None
    c.pos = 24
    unpack = struct.Struct(order + "IIII").unpack_from
    packets = 0
    nbytes = 0
    # the hot loop keeps the window in locals and asks _Chunks only at a chunk's end (reporting
    # progress there too: once per chunk)
    buf, pos, blen = c.buf, c.pos, len(c.buf)
    layout = FIXED_LAYOUTS.get(linktype) if cut is not None else None
    scan = None
    if layout is not None:
        et_at, ip_at, ifindex_at = layout
        head, min_len = linked_head(et_at, ip_at), ip_at + IPV4_TCP_MIN
        index, count, cut_one, ifindex_name = cut.index, cut.count, cut.cut, cut.ifindex_name
        scan, big = _scan, order == ">"
        addr_texts: dict[int, str] = {}  # what the C cut makes, kept (by number) as TcpCut keeps its own
        iface_texts: dict[int, str] = {}
    try:
        while True:
            if scan is not None:
                # the records wholly in the window, in C: Segments cut, and the offsets of the records
                # to yield whole (the same test and cut as below); the record it stops at (the
                # window's end, damage) is left to this loop
                items, pos, n, nb, bad, whole = scan(buf, pos, blen, big, et_at, ip_at,
                                                     -1 if ifindex_at is None else ifindex_at, index, count,
                                                     divisor, addr_texts, iface_texts)
                packets += n
                nbytes += nb
                cut.undecodable += bad
                if not whole:
                    yield from items
                else:
                    for item in items:
                        if item.__class__ is not int:
                            yield item
                            continue
                        sec, frac, incl, orig = unpack(buf, item)
                        yield _record(CaptureRecord, (sec + frac / divisor, linktype, None,
                                                      buf[item + 16:item + 16 + incl], orig))
            if pos + 16 > blen:
                c.pos = pos
                ok = c.need(16)
                buf, pos, blen = c.buf, c.pos, len(c.buf)
                if progress is not None:
                    progress(c.base + pos)
                if not ok:
                    if c.left():
                        stats.truncated = True
                        stats.add_damage(f"file ends inside a record header at byte {c.offset}")
                    break
            sec, frac, incl, orig = unpack(buf, pos)
            if incl > MAX_RECORD:
                c.pos = pos
                stats.add_damage(f"record at byte {c.offset} claims {counted(incl, 'byte')}; stopped reading "
                                 "there")
                break
            end = pos + 16 + incl
            if end > blen:
                c.pos = pos
                ok = c.need(16 + incl)
                buf, pos, blen = c.buf, c.pos, len(c.buf)
                if progress is not None:
                    progress(c.base + pos)
                if not ok:
                    stats.truncated = True
                    stats.add_damage(f"file ends inside a {incl}-byte record at byte {c.offset}")
                    break
                end = pos + 16 + incl
            start = pos + 16
            pos = end
            packets += 1
            nbytes += incl
            if layout is not None and incl >= min_len:
                # IPv4 without options carrying TCP: the cheap test here (another shard's
                # connection, a pure ACK: most packets), the cut for what is left
                et, vhl, total, frag, proto, sport, dport, doff, flags = head(buf, start)
                if et == 0x0800 and vhl == 0x45 and proto == 6 and not frag & IP_FRAGMENTED:
                    if count > 1 and (((sport ^ dport) & 0xFF) >> 1) % count != index:  # TcpCut.mine, inlined
                        continue
                    if total and not flags & CONTROL and total - 20 - ((doff >> 4) << 2) <= 0:
                        continue
                    ip = start + ip_at
                    seg = cut_one(buf, ip, ip + 20, end, total, sec + frac / divisor,
                                  orig - incl if orig > incl else 0,
                                  None if ifindex_at is None else ifindex_name(buf[start + ifindex_at:
                                                                                   start + ifindex_at + 4]))
                    if seg is not None:
                        yield seg
                    continue
            yield _record(CaptureRecord, (sec + frac / divisor, linktype, None, buf[start:end], orig))
    finally:
        c.pos = pos  # where the next record starts (the window's own position, for offset)
        stats.packets += packets
        stats.bytes += nbytes


@dataclass(slots=True)
class _Interface:
    linktype: int
    name: str
    ts_div: int  # ticks per second (10**k or 2**k), kept integral so times round the same as pcap's
    snaplen: int = 0  # 0: no limit


def _read_pcapng(path: Path, c: _Chunks, stats: ReadStats, progress) -> Iterator[CaptureRecord]:
    order = "<"
    ifaces: list[_Interface] = []
    packets = 0
    nbytes = 0
    next_progress = 0
    notes = stats.notes
    try:
        while True:
            if not c.need(12):
                if c.left():
                    stats.truncated = True
                    stats.add_damage(f"file ends inside a block header at byte {c.offset}")
                break
            btype = struct.unpack_from("<I", c.buf, c.pos)[0]
            if btype == PCAPNG_SHB:
                bom = struct.unpack_from("<I", c.buf, c.pos + 8)[0]
                if bom == PCAPNG_BOM:
                    order = "<"
                elif bom == 0x4D3C2B1A:
                    order = ">"
                else:
                    stats.add_damage(f"section header at byte {c.offset} has a bad byte-order mark")
                    break
                ifaces = []  # interface ids are per section
            btype, blen = struct.unpack_from(order + "II", c.buf, c.pos)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                stats.add_damage(f"block at byte {c.offset} claims length {blen}; stopped reading there")
                break
            if not c.need(blen):
                stats.truncated = True
                stats.add_damage(f"file ends inside a {blen}-byte block at byte {c.offset}")
                break
            start = c.pos
            c.pos += blen
            body = c.buf[start + 8:start + blen - 4]
            if progress is not None and c.base + c.pos >= next_progress:
                progress(c.base + c.pos)
                next_progress = c.base + c.pos + CHUNK
            try:
                if btype == 1:  # Interface Description Block
                    ifaces.append(_parse_idb(body, order, len(ifaces)))
                    stats.link_types.add(ifaces[-1].linktype)
                    if ifaces[-1].snaplen and (stats.snaplen is None or ifaces[-1].snaplen < stats.snaplen):
                        stats.snaplen = ifaces[-1].snaplen
                    continue
                if btype == 6:  # Enhanced Packet Block
                    if_id, ts_hi, ts_lo, caplen, orig = struct.unpack_from(order + "IIIII", body, 0)
                elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
                    if_id, ts_hi, ts_lo, orig = 0, 0, 0, struct.unpack_from(order + "I", body, 0)[0]
                    caplen = min(orig, len(body) - 4)
                    data = body[4:4 + caplen]
                elif btype == 2:  # obsolete Packet Block
                    if_id, _drops, ts_hi, ts_lo, caplen, orig = struct.unpack_from(order + "HHIIII", body, 0)
                elif btype == PCAPNG_DSB:
                    _read_dsb(body, order, stats, c.base + start)
                    continue
                else:
                    continue  # name resolution, statistics, custom blocks: nothing for us
                if btype != 3:
                    if 20 + caplen > len(body):
                        stats.add_damage(f"packet block at byte {c.base + start} overruns its block")
                        continue
                    data = body[20:20 + caplen]
                    if notes:
                        notes.clear()  # the last packet's, not this one's
                    opts = 20 + ((caplen + 3) & ~3)
                    if len(body) > opts + 4:  # options: comments (ptcpdump's process and pod)
                        _packet_notes(body, opts, order, notes)
                if if_id >= len(ifaces):
                    stats.add_damage(f"packet at byte {c.base + start} names unknown interface {if_id}")
                    continue
            except struct.error:
                stats.add_damage(f"block type {btype} at byte {c.base + start} is too short")
                continue
            iface = ifaces[if_id]
            packets += 1
            nbytes += len(data)
            sec, frac = divmod((ts_hi << 32) | ts_lo, iface.ts_div)
            yield _record(CaptureRecord, (sec + frac / iface.ts_div, iface.linktype, iface.name, data, orig))
    finally:
        stats.packets += packets
        stats.bytes += nbytes


def _packet_notes(body: bytes, pos: int, order: str, notes: list) -> None:
    """A packet block's comments (opt_comment) and direction (epb_flags bits 0-1), if it has comments."""
    comments: list[str] = []
    direction = 0
    while pos + 4 <= len(body):
        code, olen = struct.unpack_from(order + "HH", body, pos)
        if code == 0:
            break
        value = body[pos + 4:pos + 4 + olen]
        pos += 4 + ((olen + 3) & ~3)
        if code == 1:
            comments.append(value.decode("utf-8", "replace"))
        elif code == 2 and olen == 4:
            direction = struct.unpack(order + "I", value)[0] & 3
    if comments:
        notes.append((tuple(comments), direction))


def _read_dsb(body: bytes, order: str, stats: ReadStats, offset: int) -> None:
    """A Decryption Secrets Block: keep TLS key-log text; other secret types are noted, not read."""
    stype, slen = struct.unpack_from(order + "II", body, 0)
    if 8 + slen > len(body):
        stats.add_damage(f"decryption secrets block at byte {offset} overruns its block")
    elif stype == DSB_TLS_KEYLOG:
        stats.tls_key_logs.append(bytes(body[8:8 + slen]))
    else:
        stats.add_damage(f"decryption secrets of type 0x{stype:08x} at byte {offset} not supported")


def _parse_idb(body: bytes, order: str, index: int) -> _Interface:
    """Link type, name (if_name option, else the interface's index) and timestamp unit."""
    linktype, _res, snaplen = struct.unpack_from(order + "HHI", body, 0)
    name = str(index)
    ts_div = 1_000_000
    pos = 8
    while pos + 4 <= len(body):
        code, olen = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4:pos + 4 + olen]
        pos += 4 + ((olen + 3) & ~3)
        if code == 0:
            break
        if code == 2 and value:  # if_name
            name = value.rstrip(b"\0").decode("utf-8", "replace") or name
        elif code == 9 and value:  # if_tsresol
            r = value[0]
            ts_div = 2 ** min(r & 0x7F, 64) if r & 0x80 else 10 ** min(r, 19)
    return _Interface(linktype, name, ts_div, snaplen)
