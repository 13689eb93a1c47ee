"""Link layers down to the IP header: Ethernet (+802.1Q/802.1ad VLAN), Linux cooked v1 and v2,
raw IP, BSD loopback (null and loop). Struct-level, so it costs next to nothing per packet."""

from __future__ import annotations

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_ALT = (12, 14)  # some BSDs and OpenBSD wrote raw IP under these numbers
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "null", LINKTYPE_ETHERNET: "ethernet", LINKTYPE_RAW: "raw", 12: "raw", 14: "raw",
    LINKTYPE_LOOP: "loop", LINKTYPE_LINUX_SLL: "linux-sll", LINKTYPE_LINUX_SLL2: "linux-sll2",
    LINKTYPE_IPV4: "ipv4", LINKTYPE_IPV6: "ipv6",
}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)
BSD_AF_INET6 = (24, 28, 30)  # AF_INET6 differs between the BSDs and macOS


# link layers of a fixed length (no VLAN tag): (offset of the ethertype, of the IP header, of the
# Linux ifindex or None); the capture reader cuts their IPv4/TCP frames without locate_ip()
FIXED_LAYOUTS = {
    LINKTYPE_ETHERNET: (12, 14, None),
    LINKTYPE_LINUX_SLL: (14, 16, None),
    LINKTYPE_LINUX_SLL2: (0, 20, 4),
}


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"linktype-{linktype}")


def _skip_vlans(frame: bytes, off: int, ethertype: int) -> tuple[int, int]:
    """Step over stacked 802.1Q / 802.1ad tags: (offset after them, inner ethertype)."""
    while ethertype in ETH_VLAN and len(frame) >= off + 4:
        ethertype = (frame[off + 2] << 8) | frame[off + 3]
        off += 4
    return off, ethertype


def link_payload(linktype: int, frame: bytes) -> tuple[int, int, int | None] | str:
    """What the link layer carries, before any VLAN tag: (ethertype, its offset, Linux ifindex or
    None); raw and BSD loopback frames give ETH_IPV4 / ETH_IPV6 from the IP version. A string
    names why there is nothing to read (an unsupported link type, a frame too short for its header)."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return "ethernet (cut short)"
        return (frame[12] << 8) | frame[13], 14, None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return "linux-sll (cut short)"
        return (frame[14] << 8) | frame[15], 16, None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return "linux-sll2 (cut short)"
        return (frame[0] << 8) | frame[1], 20, int.from_bytes(frame[4:8], "big")
    if linktype == LINKTYPE_RAW or linktype in LINKTYPE_RAW_ALT or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        return _by_version(frame, 0, "raw")
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        if len(frame) < 5:
            return "null (cut short)"
        # null: host byte order of the capturing machine, so accept both; loop: network order
        af_le = int.from_bytes(frame[:4], "little")
        af_be = int.from_bytes(frame[:4], "big")
        if 2 in (af_le, af_be) or af_le in BSD_AF_INET6 or af_be in BSD_AF_INET6:
            return _by_version(frame, 4, "null")
        return f"null address family {min(af_le, af_be)}"
    return f"link type {linktype_name(linktype)}"


def _by_version(frame: bytes, off: int, link: str) -> tuple[int, int, None] | str:
    version = frame[off] >> 4 if len(frame) > off else 0
    if version == 4:
        return ETH_IPV4, off, None
    if version == 6:
        return ETH_IPV6, off, None
    return f"{link} IP version {version}"


def locate_ip(linktype: int, frame: bytes) -> tuple[int, int | None] | None:
    """(offset of the IP header, Linux ifindex when the link layer carries one), or None if the
    frame holds no IPv4/IPv6 packet (after VLAN tags; tunnels are decoders.tunnels' business)."""
    found = link_payload(linktype, frame)
    if found.__class__ is str:
        return None
    et, off, ifindex = found  # type: ignore[misc]
    off, et = _skip_vlans(frame, off, et)
    return (off, ifindex) if et == ETH_IPV4 or et == ETH_IPV6 else None
