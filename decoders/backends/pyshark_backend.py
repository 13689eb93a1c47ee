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
from pyshark.capture.capture import TSharkCrashException

from meshscope.errors import CaptureError

DISPLAY_FILTER = "tcp.len > 0 or tcp.flags.syn == 1 or tcp.flags.fin == 1 or tcp.flags.reset == 1"
PREFS = {"tcp.desegment_tcp_streams": "FALSE", "tcp.relative_sequence_numbers": "FALSE",
         "tcp.analyze_sequence_numbers": "FALSE", "tcp.check_checksum": "FALSE",
         "ip.defragment": "FALSE"}  # fragments are counted, not reassembled, by every backend
# tshark would otherwise dissect payloads we parse ourselves (and reassemble them across frames)
DISABLED = ("http", "tls", "http2")
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
                 progress: Callable[[int], None] | None) -> Iterator[Segment]:
        not_decoded = stats.not_decoded
        for record in read_capture(path, stats, progress):  # framing, damage and what is not decoded
            locate_inner_ip(record.linktype, record.data, not_decoded)
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


def _innermost_ip(pkt, layers: dict):
    """The IP layer right under TCP (tunnels put several in one frame), or None."""
    stack = str(pkt.frame_info.protocols).split(":")
    if "tcp" not in stack:
        return None
    below = [name for name in stack[:stack.index("tcp")] if name in ("ip", "ipv6")]
    if not below or "icmp" in stack or "icmpv6" in stack:
        return None  # no IP, or TCP quoted inside an ICMP error: not a segment
    ip = layers.get(below[-1])
    if ip is None:
        return None
    return ip.duplicate_layers[-1] if ip.duplicate_layers else ip


def _segment(pkt) -> Segment | None:
    layers = {layer.layer_name: layer for layer in pkt.layers}
    tcp = layers.get("tcp")
    ip = _innermost_ip(pkt, layers) if tcp is not None else None
    if tcp is None or ip is None:
        return None
    v4 = layers.get("ip")
    if v4 is not None and any(str(h.flags_tree.mf) == "1" or int(h.frag_offset)
                              for h in (v4, *v4.duplicate_layers)):
        return None  # an IP fragment, or a tunnel's: the other backends skip them too
    frame = pkt.frame_info
    payload_hex = getattr(tcp, "payload", None)
    payload = bytes.fromhex(payload_hex.replace(":", "")) if payload_hex else b""
    sll = layers.get("sll")
    ifindex = getattr(sll, "ifindex", None) if sll is not None else None
    if ifindex is not None:
        interface = str(int(ifindex))
    else:
        iface_id = getattr(frame, "interface_id", None)  # pcapng only; its name sits in a subtree
        tree = getattr(frame, "interface_id_tree", None)
        name = getattr(tree, "interface_name", None) if tree is not None else None
        interface = str(name) if name else (str(iface_id) if iface_id is not None else None)
    wire, captured = int(frame.len), int(frame.cap_len)
    # str(): pyshark's field values are str subclasses, which other code (interning, orjson) refuses
    return (_epoch(frame.time_epoch), str(ip.src), int(tcp.srcport), str(ip.dst), int(tcp.dstport),
            int(tcp.seq_raw), int(tcp.ack_raw), int(tcp.flags, 16) & 0xFF, payload,
            wire - captured if wire > captured else 0, interface)


BACKEND = PysharkBackend
