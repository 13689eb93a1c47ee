"""QUIC Initial packets (RFC 9000 section 17.2.2) opened without any secret: their keys come from the
client's first destination connection id (RFC 9001 section 5.2, RFC 9369 section 3.3.1 for v2),
so the ClientHello (SNI, ALPN) and the ServerHello they carry in CRYPTO frames can be read.

``InitialKeys`` derives one side's keys; ``open_initial`` removes header protection and the AEAD of
one packet; ``crypto_frames`` lists the CRYPTO frames of its payload; ``long_packets`` walks the
coalesced packets of one datagram."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from meshscope.decoders.tls_key_schedule import hkdf_expand_label

V1, V2, DRAFT29 = 0x00000001, 0x6B3343CF, 0xFF00001D
# initial salts: RFC 9001 section 5.2, RFC 9369 section 3.3.1, draft-ietf-quic-tls-29 section 5.2
SALTS = {
    V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
    DRAFT29: bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899"),
}
VERSION_NAMES = {V1: "1", V2: "2", DRAFT29: "draft-29"}
# the long-header packet type bits of an Initial: 0 in v1 (and drafts), 1 in v2 (RFC 9369 section 3.2)
INITIAL_TYPE = {V1: 0, V2: 1, DRAFT29: 0}
CRYPTO, PADDING, PING, ACK, ACK_ECN, CLOSE, CLOSE_APP = 0x06, 0x00, 0x01, 0x02, 0x03, 0x1C, 0x1D


def version_name(version: int) -> str:
    return VERSION_NAMES.get(version) or f"0x{version:08x}"


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer (RFC 9000 section 16) and the position after it."""
    if pos >= len(buf):
        raise ValueError("varint past the end")
    first = buf[pos]
    n = 1 << (first >> 6)
    if pos + n > len(buf):
        raise ValueError("varint cut short")
    value = first & 0x3F
    for b in buf[pos + 1:pos + n]:
        value = (value << 8) | b
    return value, pos + n


@dataclass(slots=True, frozen=True)
class InitialKeys:
    """One side's Initial packet protection: AEAD key, IV and header-protection key."""

    key: bytes
    iv: bytes
    hp: bytes

    def __repr__(self) -> str:
        return "InitialKeys(…)"

    @classmethod
    def derive(cls, dcid: bytes, version: int, server: bool = False) -> InitialKeys:
        """RFC 9001 section 5.2: initial_secret = HKDF-Extract(salt, dcid), then the side's secret."""
        # HKDF-Extract is HMAC-Hash(salt, ikm) (RFC 5869 section 2.2)
        initial = hmac.digest(SALTS[version], dcid, "sha256")
        side = hkdf_expand_label(initial, b"server in" if server else b"client in", b"", 32, "sha256")
        prefix = b"quicv2 " if version == V2 else b"quic "
        return cls(hkdf_expand_label(side, prefix + b"key", b"", 16, "sha256"),
                   hkdf_expand_label(side, prefix + b"iv", b"", 12, "sha256"),
                   hkdf_expand_label(side, prefix + b"hp", b"", 16, "sha256"))


@dataclass(slots=True)
class LongPacket:
    """One long-header packet of a datagram: its type bits, version, connection ids, where its
    packet number starts and where it ends."""

    first: int
    version: int
    dcid: bytes
    scid: bytes
    ptype: int  # the two type bits as sent (their meaning depends on the version)
    pn_offset: int  # in the datagram
    end: int  # in the datagram
    start: int

    @property
    def initial(self) -> bool:
        return self.version in INITIAL_TYPE and self.ptype == INITIAL_TYPE[self.version]


def long_packets(datagram: bytes) -> Iterator[LongPacket]:
    """The long-header packets coalesced in one datagram (RFC 9000 section 12.2), stopping at a short
    header packet, a Retry, a version negotiation or anything unreadable."""
    pos = 0
    n = len(datagram)
    while pos + 7 <= n and datagram[pos] & 0x80:
        start = pos
        first = datagram[pos]
        version = int.from_bytes(datagram[pos + 1:pos + 5], "big")
        if version == 0:
            return  # version negotiation
        dlen = datagram[pos + 5]
        if dlen > 20 or pos + 6 + dlen >= n:
            return
        dcid = datagram[pos + 6:pos + 6 + dlen]
        p = pos + 6 + dlen
        slen = datagram[p]
        if slen > 20 or p + 1 + slen > n:
            return
        scid = datagram[p + 1:p + 1 + slen]
        p += 1 + slen
        ptype = (first >> 4) & 3
        retry = 0 if version == V2 else 3
        if ptype == retry and version in SALTS:
            return
        try:
            if version in INITIAL_TYPE and ptype == INITIAL_TYPE[version]:
                token_len, p = read_varint(datagram, p)
                p += token_len
            length, p = read_varint(datagram, p)
        except ValueError:
            return
        if p + length > n or length < 20:
            return
        yield LongPacket(first, version, dcid, scid, ptype, p, p + length, start)
        pos = p + length


def open_initial(datagram: bytes, pkt: LongPacket, keys: InitialKeys) -> bytes:
    """The decrypted payload (frames) of one Initial packet; ValueError if it does not open."""
    from cryptography.exceptions import InvalidTag

    pn_offset = pkt.pn_offset
    sample = datagram[pn_offset + 4:pn_offset + 20]
    if len(sample) < 16:
        raise ValueError("packet too short for its header-protection sample")
    encryptor = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first = pkt.first ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(datagram[pn_offset:pn_offset + pn_len], mask[1:1 + pn_len],
                                           strict=True))
    header = bytes([first]) + datagram[pkt.start + 1:pn_offset] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    try:
        return AESGCM(keys.key).decrypt(nonce, datagram[pn_offset + pn_len:pkt.end], header)
    except InvalidTag:
        raise ValueError("Initial packet did not open with the keys of its connection id") from None


def crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of each CRYPTO frame in an Initial's payload; the frames an Initial may also
    carry (PADDING, PING, ACK, CONNECTION_CLOSE) are stepped over. ValueError on anything else."""
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(payload)
    while pos < n:
        ftype = payload[pos]
        pos += 1
        if ftype == PADDING or ftype == PING:
            continue
        if ftype == CRYPTO:
            offset, pos = read_varint(payload, pos)
            length, pos = read_varint(payload, pos)
            if pos + length > n:
                raise ValueError("CRYPTO frame runs past its packet")
            out.append((offset, payload[pos:pos + length]))
            pos += length
        elif ftype in (ACK, ACK_ECN):
            _largest, pos = read_varint(payload, pos)
            _delay, pos = read_varint(payload, pos)
            ranges, pos = read_varint(payload, pos)
            _first, pos = read_varint(payload, pos)
            for _ in range(ranges * 2):
                _, pos = read_varint(payload, pos)
            if ftype == ACK_ECN:
                for _ in range(3):
                    _, pos = read_varint(payload, pos)
        elif ftype in (CLOSE, CLOSE_APP):
            _code, pos = read_varint(payload, pos)
            if ftype == CLOSE:
                _frame, pos = read_varint(payload, pos)
            reason, pos = read_varint(payload, pos)
            pos += reason
        else:
            raise ValueError(f"frame type 0x{ftype:02x} in an Initial packet")
    return out


class CryptoStream:
    """One side's CRYPTO bytes in order, from frames that may come in any order and overlap;
    bounded (a hello is a few kilobytes)."""

    MAX = 64 << 10
    __slots__ = ("data", "pieces")

    def __init__(self) -> None:
        self.data = b""  # contiguous from offset 0
        self.pieces: dict[int, bytes] = {}

    def add(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.MAX:
            raise ValueError(f"CRYPTO data beyond {self.MAX} bytes")
        self.pieces[offset] = data
        progressed = True
        while progressed:
            progressed = False
            have = len(self.data)
            for off in list(self.pieces):
                piece = self.pieces[off]
                if off <= have:
                    del self.pieces[off]
                    if off + len(piece) > have:
                        self.data += piece[have - off:]
                        progressed = True
                        have = len(self.data)

    def held(self) -> int:
        return len(self.data) + sum(len(p) for p in self.pieces.values())

    def message(self) -> tuple[int, bytes] | None:
        """The first handshake message (type, body) once all of it is here."""
        d = self.data
        if len(d) < 4:
            return None
        length = int.from_bytes(d[1:4], "big")
        if len(d) < 4 + length:
            return None
        return d[0], d[4:4 + length]
