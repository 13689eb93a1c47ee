"""Deterministic record ids and request-id normalisation shared by every component."""

from __future__ import annotations

import hashlib

_UUID_DASHES = (8, 13, 18, 23)
_VERSION_NIBBLE = 14


def record_id(*parts: object) -> str:
    """A stable 32-hex-digit id from the parts that identify a record (same parts, same id)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(b"\x1f" if part is None else str(part).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def normalize_request_id(request_id: str | None) -> str | None:
    """Envoy writes its sampling decision into the UUID version nibble of x-request-id
    (``4`` may become ``9``, ``a`` or ``b``), so one request's id differs by that digit from
    hop to hop. Return the id lower-cased with that digit set to ``4``; non-UUID ids unchanged."""
    if not request_id:
        return request_id
    rid = request_id.strip().lower()
    if len(rid) == 36 and all(rid[i] == "-" for i in _UUID_DASHES):
        return rid[:_VERSION_NIBBLE] + "4" + rid[_VERSION_NIBBLE + 1 :]
    return rid
