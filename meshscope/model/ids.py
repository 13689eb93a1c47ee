"""Deterministic record ids and request-id normalisation shared by every component."""

from __future__ import annotations

from hashlib import blake2b as _blake2b

_UUID_DASHES = (8, 13, 18, 23)
_VERSION_NIBBLE = 14


def record_id(*parts: object) -> str:
    """A stable 32-hex-digit id from the parts that identify a record (same parts, same id).
    Each part is followed by \\x1e (None written as \\x1f); one string, hashed in one call,
    because ids are made for every decoded exchange."""
    text = "\x1e".join(["\x1f" if p is None else p if type(p) is str else str(p) for p in parts])
    return _blake2b((text + "\x1e").encode(), digest_size=16).hexdigest()


REQUEST_ID_MAX = 200  # the lookup's limit (GET /api/traces/{request_id})


def request_id_problem(request_id: str) -> str | None:
    """Why a request id could never be looked up (a path segment of at most 200 characters), or None."""
    if len(request_id) > REQUEST_ID_MAX:
        return f"longer than {REQUEST_ID_MAX} characters"
    if "/" in request_id:
        return "contains '/'"
    if not request_id.strip():
        return "blank"
    return None


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
