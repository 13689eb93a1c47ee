"""The pyshark backend: tshark dissects every frame (link layer, IP, TCP; it also selects the wanted
segments with a display filter), pyshark hands us its fields, and the shared connection table does
the rest. Slowest by far; its value is that Wireshark's dissectors, not ours, read the headers.

tshark's own TCP reassembly is switched off so each frame's payload arrives as captured; the
file's framing (truncation, damage) is also checked with the shared reader, so the report reads
the same as the other backends' (its count of frames not decoded too: decoders.tunnels).

Through a tunnel, a frame has two IP layers, which pyshark's JSON mode folds into one layer object
(the outer) with the others in ``duplicate_layers``: the addresses are taken from the IP layer
right under TCP in ``frame.protocols``, the innermost one of its name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pyshark
from meshscope.decoders.backends.segment_backend import Segment, SegmentBackend
from meshscope.decoders.capture_file import ReadStats, read_capture
from meshscope.decoders.tunnels import VXLAN_PORTS, locate_inner_ip
from meshscope.decoders.udp_table import Datagram
from pyshark.capture.capture import TSharkCrashException

from meshscope.errors import CaptureError

TSHARK_COMPRESSIONS = (None, "gzip", "zstd", "lz4")  # what tshark 4.0 opens itself
DISPLAY_FILTER = ("tcp.len > 0 or tcp.flags.syn == 1 or tcp.flags.fin == 1 or tcp.flags.reset == 1"
                  " or (udp and not tcp and not icmp and not icmpv6)")  # a tunnel's pure ACKs stay out
PREFS = {"tcp.desegment_tcp_streams": "FALSE", "tcp.relative_sequence_numbers": "FALSE",
         "tcp.analyze_sequence_numbers": "FALSE", "tcp.check_checksum": "FALSE",
         "ip.defragment": "FALSE"}  # fragments are counted, not reassembled, by every backend
# tshark would otherwise dissect payloads we parse ourselves (and reassemble them across frames)
DISABLED = ("http", "tls", "http2", "dns", "quic")
# tunnels on ports tshark does not assign them by default (the other backends decode them there),
# and an L2TPv3 session whose control channel was not captured (`ip l2tp` sets up none) taken as an
# Ethernet pseudowire, as the other backends take it; tshark then assumes no cookie
DECODE_AS = tuple(f"udp.port=={port},vxlan" for port in sorted(VXLAN_PORTS) if port != 4789) + (
    "l2tp.pw_type==0,eth",)


def _epoch(text: str) -> float:
    """frame.time_epoch ("sec.nanoseconds") as the shared reader computes pcap times."""
    sec, _, frac = text.partition(".")
    frac = (frac + "000000000")[:9]
    return int(sec) + int(frac) / 1e9


class PysharkBackend(SegmentBackend):
    name = "pyshark"

    def segments(self, path: Path, stats: ReadStats,
                 progress: Callable[[int], None] | None) -> Iterator[Segment | Datagram]:
        if stats.compression not in TSHARK_COMPRESSIONS:
            raise CaptureError(f"{path}: tshark (the pyshark backend) cannot read {stats.compression}-"
                               f"compressed captures; decompress it or use another backend")
        not_decoded = stats.not_decoded
        notes = stats.notes
        by_frame: dict[int, list] = {}  # pcapng packet comments (ptcpdump's) by tshark's frame number
        for number, record in enumerate(read_capture(path, stats, progress), 1):  # framing, damage, …
            locate_inner_ip(record.linktype, record.data, not_decoded)
            if notes:
                by_frame[number] = notes[:]
                notes.clear()
        if stats.damage:
            by_frame.clear()  # a skipped block would shift the numbering: no comment on the wrong packet
        params = []
        for proto in DISABLED:
            params += ["--disable-protocol", proto]
        for rule in DECODE_AS:
            params += ["-d", rule]
        # a loop of its own: pyshark otherwise asks asyncio for the current one, which fails once an
        # earlier asyncio.run() (or pytest-asyncio) has closed and unset it
        loop = asyncio.new_event_loop()
        cap = pyshark.FileCapture(str(path), keep_packets=False, use_json=True, display_filter=DISPLAY_FILTER,
                                  override_prefs=PREFS, custom_parameters=params, eventloop=loop)
        try:
            for pkt in cap:
                seg = _segment(pkt)
                if seg is not None:
                    if by_frame and seg.__class__ is not Datagram:
                        notes[:] = by_frame.get(int(pkt.frame_info.number), ())
                    yield seg
        except TSharkCrashException:
            if not stats.truncated and not stats.damage:  # tshark's complaint is news to us
                raise CaptureError(f"{path}: tshark could not read this capture") from None
        finally:
            try:
                cap.close()
            except TSharkCrashException:
                # tshark exits non-zero on a damaged file, which the shared reader has reported;
                # forget the process so pyshark's __del__ does not raise the same again
                cap._running_processes.clear()
            loop.close()


def _innermost_ip(pkt, layers: dict, transport: str = "tcp"):
    """The IP layer right under the innermost ``transport`` layer (tunnels put several in one
    frame), or None."""
    stack = str(pkt.frame_info.protocols).split(":")
    if transport not in stack:
        return None
    at = len(stack) - 1 - stack[::-1].index(transport)
    below = [name for name in stack[:at] if name in ("ip", "ipv6")]
    if not below or "icmp" in stack or "icmpv6" in stack:
        return None  # no IP, or a header quoted inside an ICMP error: not a segment
    if transport == "udp" and stack[at + 1:at + 2] and stack[at + 1] in _UDP_TUNNELS:
        return None  # the UDP of a tunnel whose payload is not IP: counted, not a datagram
    ip = layers.get(below[-1])
    if ip is None:
        return None
    return ip.duplicate_layers[-1] if ip.duplicate_layers else ip


_UDP_TUNNELS = frozenset(("vxlan", "geneve", "l2tp"))


def _fragment(layers: dict) -> bool:
    v4 = layers.get("ip")
    return v4 is not None and any(str(h.flags_tree.mf) == "1" or int(h.frag_offset)
                                  for h in (v4, *v4.duplicate_layers))


def _segment(pkt) -> Segment | Datagram | None:
    layers = {layer.layer_name: layer for layer in pkt.layers}
    tcp = layers.get("tcp")
    if tcp is None:
        return _datagram(pkt, layers) if "udp" in layers else None
    ip = _innermost_ip(pkt, layers)
    if ip is None:
        return None
    if _fragment(layers):
        return None  # an IP fragment, or a tunnel's: the other backends skip them too
    frame = pkt.frame_info
    payload_hex = getattr(tcp, "payload", None)
    payload = bytes.fromhex(payload_hex.replace(":", "")) if payload_hex else b""
    interface = _interface(frame, layers)
    wire, captured = int(frame.len), int(frame.cap_len)
    # str(): pyshark's field values are str subclasses, which other code (interning, orjson) refuses
    return (_epoch(frame.time_epoch), str(ip.src), int(tcp.srcport), str(ip.dst), int(tcp.dstport),
            int(tcp.seq_raw), int(tcp.ack_raw), int(tcp.flags, 16) & 0xFF, payload,
            wire - captured if wire > captured else 0, interface)


def _interface(frame, layers: dict) -> str | None:
    sll = layers.get("sll")
    ifindex = getattr(sll, "ifindex", None) if sll is not None else None
    if ifindex is not None:
        return str(int(ifindex))
    iface_id = getattr(frame, "interface_id", None)  # pcapng only; its name sits in a subtree
    tree = getattr(frame, "interface_id_tree", None)
    name = getattr(tree, "interface_name", None) if tree is not None else None
    return str(name) if name else (str(iface_id) if iface_id is not None else None)


def _datagram(pkt, layers: dict) -> Datagram | None:
    ip = _innermost_ip(pkt, layers, "udp")
    if ip is None or _fragment(layers):
        return None
    udp = layers["udp"]
    udp = udp.duplicate_layers[-1] if udp.duplicate_layers else udp
    frame = pkt.frame_info
    payload_hex = getattr(udp, "payload", None)
    payload = bytes.fromhex(str(payload_hex).replace(":", "")) if payload_hex else b""
    wire, captured = int(frame.len), int(frame.cap_len)
    length = int(udp.length)
    return Datagram(_epoch(frame.time_epoch), str(ip.src), int(udp.srcport), str(ip.dst), int(udp.dstport),
                    payload, max(0, length - 8 - len(payload)) if wire > captured else 0,
                    _interface(frame, layers))


BACKEND = PysharkBackend
