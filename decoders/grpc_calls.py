"""gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md): what a call says about itself — service and method
from ``:path``, status by name from ``grpc-status``, ``grpc-timeout`` — and its messages, read from
the length-prefixed DATA payload (1 byte compressed flag, 4 bytes length, the message) without
keeping them."""

from __future__ import annotations

from urllib.parse import unquote

STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
MAX_SIZES = 64  # message sizes kept per direction (the count goes on)


def is_grpc(content_type: str | None) -> bool:
    return bool(content_type) and content_type.startswith("application/grpc")  # type: ignore[union-attr]


def status_name(status: str | None) -> str | None:
    """grpc-status "14" → "UNAVAILABLE" (an unknown code stays as given)."""
    if status is None:
        return None
    s = status.strip()
    return STATUS_NAMES[int(s)] if s.isdigit() and int(s) < len(STATUS_NAMES) else s


def service_method(path: str | None) -> tuple[str | None, str | None]:
    """"/grpc.health.v1.Health/Check" → ("grpc.health.v1.Health", "Check")."""
    if not path or not path.startswith("/"):
        return None, None
    service, sep, method = path[1:].partition("/")
    return (service, method) if sep and service and method and "/" not in method else (None, None)


def timeout_seconds(value: str | None) -> float | None:
    """grpc-timeout "100m" → 0.1 (at most 8 digits and a unit; anything else is None)."""
    if not value or len(value) < 2 or not value[:-1].isdigit() or len(value) > 9:
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    return int(value[:-1]) * unit if unit is not None else None


def grpc_message(value: str | None) -> str | None:
    """grpc-message is percent-encoded UTF-8."""
    if value is None:
        return None
    try:
        return unquote(value.encode("latin-1").decode("utf-8", "replace"), errors="replace")
    except UnicodeEncodeError:
        return value


class MessageReader:
    """Length-prefixed messages of one direction of one call, counted as DATA frames arrive."""

    __slots__ = ("count", "sizes", "compressed", "_head", "_left", "broken")

    def __init__(self) -> None:
        self.count = 0
        self.sizes: list[int] = []
        self.compressed = False  # any message had its compressed flag set
        self._head = b""  # an unfinished 5-byte prefix
        self._left = 0  # bytes of the current message still to come
        self.broken = False  # a gap: the framing is lost for this direction

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._left:
                take = min(self._left, n - pos)
                self._left -= take
                pos += take
                continue
            need = 5 - len(self._head)
            self._head += data[pos:pos + need]
            pos += need
            if len(self._head) < 5:
                return
            head, self._head = self._head, b""
            if head[0] & 1:
                self.compressed = True
            size = int.from_bytes(head[1:5], "big")
            self.count += 1
            if len(self.sizes) < MAX_SIZES:
                self.sizes.append(size)
            self._left = size

    def gap(self) -> None:
        self.broken = True
