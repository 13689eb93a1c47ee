"""Deterministic record ids and request-id normalisation shared by every component."""

from __future__ import annotations

from hashlib import blake2b as _blake2b

_UUID_DASHES = (8, 13, 18, 23)
_VERSION_NIBBLE = 14
NONE_PART = "\x1f"  # how an id's text writes a None part (record_id, access_id, exchange ids alike)


def record_id(*parts: object) -> str:
    """A stable 32-hex-digit id from the parts that identify a record (same parts, same id).
    Each part is followed by \\x1e (None written as \\x1f); one string, hashed in one call,
    because ids are made for every decoded exchange."""
    text = "\x1e".join([NONE_PART if p is None else p if type(p) is str else str(p) for p in parts])
    return _blake2b((text + "\x1e").encode(), digest_size=16).hexdigest()


def access_id(node_id: str | None, log_name: str | None, protocol: str | None, start_time: float,
              downstream_remote: str | None, upstream_local: str | None, request_id: str | None,
              path: str | None) -> str:
    """The id of a final access-log entry: ``record_id`` of the same parts, written as one f-string
    (every collected entry gets one: half the cost of the generic join); the same text as record_id's."""
    if node_id is None or log_name is None or protocol is None:  # never from a receiver; as record_id
        return record_id("access", node_id, log_name, protocol, f"{start_time:.6f}", downstream_remote,
                         upstream_local, request_id, path)
    text = (f"access\x1e{node_id}\x1e{log_name}\x1e{protocol}\x1e{start_time:.6f}\x1e"
            f"{NONE_PART if downstream_remote is None else downstream_remote}\x1e"
            f"{NONE_PART if upstream_local is None else upstream_local}\x1e"
            f"{NONE_PART if request_id is None else request_id}\x1e{NONE_PART if path is None else path}\x1e")
    return _blake2b(text.encode(), digest_size=16).hexdigest()


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


def request_ids_all_fine(request_ids: list[str]) -> bool:
    """Whether none of these ids has a ``request_id_problem``: the same rule in whole-list passes, for
    the collector's intake of a batch (a False sends it id by id, where the problem is named)."""
    if not request_ids:
        return True
    return (max(map(len, request_ids)) <= REQUEST_ID_MAX and "/" not in "".join(request_ids)
            and all(map(str.strip, request_ids)))


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
