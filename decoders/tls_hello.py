"""TLS ClientHello (SNI, ALPN, offered versions) and ServerHello (chosen version), assembled from
TLS records that may span several TCP segments, and a hello that may span several records.

RFC 8446 section 4.1.2 / 4.1.3 layouts; RFC 6066 (server_name), RFC 7301 (ALPN)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from meshscope.decoders.wording import counted

MAX_HELLO = 64 * 1024 + 4  # a handshake message length is 24 bits, but real hellos are small
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
                 0x0304: "TLS 1.3"}


def version_name(v: int) -> str:
    return VERSION_NAMES.get(v, f"0x{v:04x}")


def is_grease(v: int) -> bool:
    """RFC 8701 GREASE values (0x0a0a, 0x1a1a, …) are noise, not offers."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


def looks_like_handshake(data: bytes) -> bool:
    """A TLS handshake record header: content type 22, version 3.x."""
    return len(data) >= 3 and data[0] == 22 and data[1] == 3 and data[2] <= 4


@dataclass(slots=True)
class ClientHello:
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # supported_versions, else the legacy version


@dataclass(slots=True)
class ServerHello:
    version: str = ""


def _extensions(body: bytes, pos: int, whole_only: bool = False) -> dict[int, bytes]:
    """Extensions by type; ``whole_only`` (a hello cut short by the capture): those kept whole only."""
    exts: dict[int, bytes] = {}
    if pos + 2 > len(body):
        return exts
    (total,) = struct.unpack_from("!H", body, pos)
    pos += 2
    end = min(len(body), pos + total)
    while pos + 4 <= end:
        etype, elen = struct.unpack_from("!HH", body, pos)
        if whole_only and pos + 4 + elen > len(body):
            break
        exts.setdefault(etype, body[pos + 4:pos + 4 + elen])
        pos += 4 + elen
    return exts


def _after_session_id(body: bytes, what: str) -> tuple[int, int]:
    """Both hellos open with version (2), random (32) and a session id: (legacy version, offset after)."""
    if len(body) < 38:
        raise ValueError(f"{what} too short")
    return struct.unpack_from("!H", body, 0)[0], 35 + body[34]


def parse_client_hello(body: bytes, whole_only: bool = False) -> ClientHello:
    """The ClientHello message body (after the 4-byte handshake header). Raises ValueError.
    ``whole_only``: the body was cut short (a small snaplen): read only the extensions kept whole."""
    legacy, pos = _after_session_id(body, "ClientHello")
    if pos + 2 > len(body):
        raise ValueError("ClientHello cut in cipher suites")
    pos += 2 + struct.unpack_from("!H", body, pos)[0]  # cipher suites
    if pos + 1 > len(body):
        raise ValueError("ClientHello cut in compression methods")
    pos += 1 + body[pos]  # compression methods
    exts = _extensions(body, pos, whole_only)
    hello = ClientHello()
    sn = exts.get(EXT_SERVER_NAME)
    if sn and len(sn) >= 5:
        p = 2
        end = min(len(sn), 2 + struct.unpack_from("!H", sn, 0)[0])
        while p + 3 <= end:
            ntype, nlen = sn[p], struct.unpack_from("!H", sn, p + 1)[0]
            if ntype == 0:
                hello.sni = sn[p + 3:p + 3 + nlen].decode("ascii", "replace")
                break
            p += 3 + nlen
    al = exts.get(EXT_ALPN)
    if al and len(al) >= 2:
        p = 2
        end = min(len(al), 2 + struct.unpack_from("!H", al, 0)[0])
        while p < end:
            n = al[p]
            hello.alpn.append(al[p + 1:p + 1 + n].decode("ascii", "replace"))
            p += 1 + n
    sv = exts.get(EXT_SUPPORTED_VERSIONS)
    if sv:
        n = sv[0]
        hello.versions = [version_name(v) for (v,) in struct.iter_unpack("!H", sv[1:1 + n - n % 2])
                          if not is_grease(v)]
    if not hello.versions and not whole_only:  # cut short, supported_versions may be past the cut
        hello.versions = [version_name(legacy)]
    return hello


def parse_server_hello(body: bytes, whole_only: bool = False) -> ServerHello:
    """The ServerHello body: the version it chose (supported_versions overrides the legacy field)."""
    legacy, pos = _after_session_id(body, "ServerHello")
    pos += 3  # cipher suite, compression method
    exts = _extensions(body, pos, whole_only)
    sv = exts.get(EXT_SUPPORTED_VERSIONS)
    if sv and len(sv) >= 2:
        return ServerHello(version_name(struct.unpack_from("!H", sv, 0)[0]))
    return ServerHello(version_name(legacy))


class HelloAssembler:
    """Collects the first handshake message of one direction from TLS records fed in pieces.

    ``feed`` returns the message (type, body) once complete; ``failed`` says why it never will."""

    __slots__ = ("records", "handshake", "failed", "done")

    def __init__(self) -> None:
        self.records = bytearray()
        self.handshake = bytearray()
        self.failed: str | None = None
        self.done = False

    def kept(self) -> tuple[int, bytes] | None:
        """(type, the body so far) of a hello the capture cut short, or None before its header."""
        if self.records[:1] != b"\x16":
            data = bytes(self.handshake)
        else:
            data = bytes(self.handshake + self.records[5:])
        return (data[0], data[4:]) if len(data) >= 4 else None

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        if self.done or self.failed:
            return None
        self.records += data
        while len(self.records) >= 5:
            ctype, _major, _minor, rlen = struct.unpack_from("!BBBH", self.records, 0)
            if ctype != 22:
                self.failed = f"TLS record type {ctype} before the hello was complete"
                return None
            if len(self.records) < 5 + rlen:
                break
            self.handshake += self.records[5:5 + rlen]
            del self.records[:5 + rlen]
            if len(self.handshake) >= 4:
                mlen = int.from_bytes(self.handshake[1:4], "big")
                if mlen > MAX_HELLO:
                    self.failed = f"handshake message claims {counted(mlen, 'byte')}"
                    return None
                if len(self.handshake) >= 4 + mlen:
                    self.done = True
                    msg = (self.handshake[0], bytes(self.handshake[4:4 + mlen]))
                    self.records.clear()
                    self.handshake.clear()
                    return msg
        if len(self.records) + len(self.handshake) > 2 * MAX_HELLO:
            self.failed = "hello larger than any real one"
        return None
