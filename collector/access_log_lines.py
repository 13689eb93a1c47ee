"""Envoy access-log lines (files, ``kubectl logs``, ``stern``, OTLP log bodies) → AccessRecords.

One parser for the formats operators actually have: Istio's default text format, Istio's JSON format,
Envoy's own default format, and any custom format compiled from its Envoy format string. A text
format becomes one regular expression (each ``%OPERATOR%`` a group that stops at the character after
it), so a line costs one match. Prefixes added by ``kubectl logs --prefix``/``--timestamps`` and by
``stern`` are taken off and name the proxy (pod, container). A line that fits no format is counted
with its line number and skipped: one bad line never stops an import.
"""

from __future__ import annotations

import calendar
import dataclasses
import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import blake2b
from itertools import islice
from typing import IO, Any

import orjson

from meshscope.model import AccessRecord
from meshscope.model.rows import row_shape

try:  # compiled by the package's install (scripts/setup.sh), like decoders/_record_scan.c
    from meshscope.collector._line_split import Builder as _Builder
    from meshscope.collector._line_split import Splitter as _Splitter
except ImportError:  # pragma: no cover - a checkout whose extension was not built
    _Builder = _Splitter = None

# Istio's EnvoyTextLogFormat (pilot/pkg/model/telemetry_logging.go)
ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
# Envoy's default format (source/common/formatter/substitution_formatter.h, DefaultUnstructuredFormat)
ENVOY_DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
    '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
    '"%UPSTREAM_HOST%"\n'
)
# Istio's EnvoyJSONLogFormatIstio: JSON key → Envoy operator
ISTIO_JSON_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

MAX_REPORTED_ERRORS = 100
_MISSING = object()  # a JSON key the line does not have; a head not seen yet




class BadLine(ValueError):
    """A line (or log body) that fits none of the formats; the message says why."""


# ---- values -------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value)
    return None if value in ("-", "") else value


def _int(value: Any) -> int | None:
    if value is None or value == "-" or value == "":
        return None
    return int(value)


def _code(value: Any) -> int | None:
    code = _int(value)
    return code or None  # Envoy writes 0 when there was no response (TCP, reset before headers)


def _float(value: Any) -> float | None:
    if value is None or value == "-" or value == "":
        return None
    return float(value)


def _flags(value: Any) -> list[str]:
    if not value or value == "-":
        return []
    return str(value).split(",")


_SECONDS: dict[str, int] = {}  # "2024-05-01T12:00:00" → epoch seconds (one entry per second seen)


def parse_start_time(value: Any) -> float:
    """Envoy's START_TIME (``2024-05-01T12:00:00.123Z``), any ISO 8601 time, or epoch seconds."""
    if type(value) is str and len(value) == 24 and value[23] == "Z" and value[19] == ".":
        base = _SECONDS.get(value[:19])  # the common case: a second already seen, milliseconds
        frac = value[20:23]
        if base is not None and frac.isdigit():
            return base + int(frac) / 1000
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if len(text) >= 20 and text[4] == "-" and text[10] == "T" and text[-1] == "Z":
        head = text[:19]
        base = _SECONDS.get(head)
        if base is None:
            try:
                base = calendar.timegm(datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").timetuple())
            except ValueError as exc:
                raise BadLine(f"bad start time {text!r}") from exc
            if len(_SECONDS) > 100_000:
                _SECONDS.clear()
            _SECONDS[head] = base
        frac = text[19:-1]
        if not frac:
            return float(base)
        if frac[0] != "." or not frac[1:].isdigit():
            raise BadLine(f"bad start time {text!r}")
        return base + int(frac[1:]) / 10 ** (len(frac) - 1)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise BadLine(f"bad start time {text!r}") from exc


# Envoy command operator (upper-cased, header names upper-cased, max length dropped) → (field, reader)
OPERATORS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "START_TIME": ("start_time", parse_start_time),
    "REQ(:METHOD)": ("method", _text),
    "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": ("path", _text),
    "REQ(:PATH)": ("path", _text),
    "REQ(:SCHEME)": ("scheme", _text),
    "REQ(:AUTHORITY)": ("authority", _text),
    "REQ(HOST)": ("authority", _text),
    "PROTOCOL": ("protocol_version", _text),
    "RESPONSE_CODE": ("response_code", _code),
    "RESPONSE_FLAGS": ("response_flags", _flags),
    "RESPONSE_CODE_DETAILS": ("response_code_details", _text),
    "CONNECTION_TERMINATION_DETAILS": ("connection_termination_details", _text),
    "UPSTREAM_TRANSPORT_FAILURE_REASON": ("upstream_failure_reason", _text),
    "BYTES_RECEIVED": ("request_bytes", _int),
    "BYTES_SENT": ("response_bytes", _int),
    "DURATION": ("duration_ms", _float),
    "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)": ("upstream_duration_ms", _float),
    "REQ(X-FORWARDED-FOR)": ("x_forwarded_for", _text),
    "REQ(USER-AGENT)": ("user_agent", _text),
    "REQ(X-REQUEST-ID)": ("request_id", _text),
    "STREAM_ID": ("stream_id", _text),
    "REQ(X-B3-TRACEID)": ("trace_id", _text),
    "REQ(X-B3-SPANID)": ("span_id", _text),
    "REQ(X-B3-PARENTSPANID)": ("parent_span_id", _text),
    "REQ(X-B3-SAMPLED)": ("sampled", _text),
    "REQ(X-ENVOY-ATTEMPT-COUNT)": ("attempt_count", _int),
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": ("attempt_count", _int),
    "UPSTREAM_HOST": ("upstream_host", _text),
    "UPSTREAM_REMOTE_ADDRESS": ("upstream_host", _text),
    "UPSTREAM_CLUSTER": ("upstream_cluster", _text),
    "UPSTREAM_CLUSTER_RAW": ("upstream_cluster", _text),
    "UPSTREAM_LOCAL_ADDRESS": ("upstream_local", _text),
    "DOWNSTREAM_LOCAL_ADDRESS": ("downstream_local", _text),
    "DOWNSTREAM_REMOTE_ADDRESS": ("downstream_remote", _text),
    "REQUESTED_SERVER_NAME": ("sni", _text),
    "DOWNSTREAM_TLS_VERSION": ("tls_version", _text),
    "ROUTE_NAME": ("route_name", _text),
    "ACCESS_LOG_TYPE": ("access_log_type", _text),
}
_OPERATOR = re.compile(r"%(START_TIME(?:\([^)]*\))?|[A-Z_0-9]+(?:\([^)]*\))?(?::\d+)?)%")


def operator_key(operator: str) -> str:
    """``REQ(x-request-id):36`` → ``REQ(X-REQUEST-ID)``; ``START_TIME(%s)`` → ``START_TIME``."""
    op = operator.strip("%")
    if op.startswith("START_TIME"):
        return "START_TIME"
    if not op.endswith(")") and ":" in op and op.rsplit(":", 1)[1].isdigit():
        op = op.rsplit(":", 1)[0]
    return op.upper()


# ---- formats ------------------------------------------------------------------------------------
# inline reading of the common value kinds, for the generated per-format functions (see TextFormat); ``{v}``
# is a local holding the operator's value, already None where Envoy wrote "-" or "" (``blank_none``)
_INLINE = {
    "_text": "{v}",
    "_int": "(None if {v} is None else int({v}))",
    "_float": "(None if {v} is None else float({v}))",
    "_code": "(None if {v} is None else int({v}) or None)",
    "_flags": "([] if {v} is None else {v}.split(','))",
    # a second already seen, with milliseconds (what Envoy writes): one dict lookup, else the full parser
    "parse_start_time": "(b + int({v}[20:23]) / 1000 if len({v}) == 24 and {v}[23] == 'Z' and {v}[19] == '.' "
                        "and (b := SECONDS.get({v}[:19])) is not None and {v}[20:23].isdigit() else R({v}))",
}
_BLANK_NONE = frozenset(("_text", "_int", "_float", "_code", "_flags"))  # readers that take "-" as None


@dataclass(slots=True)
class TextFormat:
    """A compiled Envoy text format: literal text around operators, each with its field. A line is cut
    into the operators' values by ``split`` (collector/_line_split.c; the Python reference: the
    format's regex, whose groups are the operators), and read by generated functions (as dataclasses
    generates ``__init__``): ``_read`` gives the fields as a dict (OTLP bodies, merged with
    attributes), ``_build`` the AccessRecord itself with its id, no dict between. Where the C
    extension has every reader the format uses, ``_fast`` (``_line_split.Builder``) does split and build
    in one call, and ``build_many`` a run of lines; ``_build`` stays the reference and does each line
    the C builder leaves (a rare value form, or an error: it names the field)."""

    name: str
    pattern: re.Pattern[str]
    literals: tuple[str, ...]  # the text before, between and after the operators
    readers: list[tuple[str, Callable[[Any], Any]] | None]
    native: bool = True  # split (and build, where the readers allow) in C when the extension was built
    split: Callable[[str], tuple | None] = field(init=False)
    _read: Callable[[tuple], dict[str, Any]] = field(init=False)
    _build: Callable[[tuple, str, str], AccessRecord] = field(init=False)
    # the C builder (_line_split.Builder): a line straight to its record, or NotImplemented for what only
    # the Python builder reads (then it decides, and names the error); None: every line goes to Python
    _fast: Callable[[str, str, str], Any] | None = field(init=False, default=None)
    # build_many(lines, start, node_id, log_name, out, origin_of) → the first line it left to Python
    build_many: Callable[..., int] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        env = _builder_env()
        blank_none = tuple(r is None or r[1].__name__ in _BLANK_NONE for r in self.readers)
        if self.native and _Splitter is not None:
            self.split = _Splitter(self.literals, blank_none).split
        else:
            self.native = False
            self.split = _regex_split(self.pattern, blank_none)
        items: dict[str, str] = {}
        for i, reader in enumerate(self.readers):
            if reader is None:
                continue
            name, read = reader
            template = _INLINE.get(read.__name__)
            if template is None:
                env[f"R{i}"] = read
                template = f"R{i}({{v}})"
            expr = template.format(v=f"g{i}")
            # two operators for one field (":PATH" and the original path): the first that is set wins
            if name in items:
                expr = f"({items[name]} if {items[name]} is not None else {expr})"
            items[name] = expr
        unpack = f"    {', '.join(f'g{i}' for i in range(len(self.readers)))}, = g\n"
        body = ", ".join(f"{name!r}: {expr}" for name, expr in items.items())
        exec(f"def read(g):\n{unpack}    return {{{body}}}\n", env)  # noqa: S102 - our own operator table
        self._read = env["read"]
        exec(_builder(items, unpack, env), env)  # noqa: S102 - our own operator table
        self._build = env["build"]
        if self.native and _Builder is not None:
            plan = _native_plan(self.readers, items)
            if plan is not None:
                built = _Builder(self.literals, blank_none, *plan, row_shape(AccessRecord).make,
                                 parse_start_time, _SECONDS)
                self._fast, self.build_many = built.build, built.build_many

    def fields(self, line: str) -> dict[str, Any] | None:
        g = self.split(line)
        if g is None:
            return None
        try:
            return self._read(g)
        except (ValueError, TypeError, AttributeError):
            self._explain(g)
            raise

    def record(self, line: str, node_id: str, log_name: str) -> AccessRecord | None:
        """The line's AccessRecord (None: the line is not in this format); BadLine for a bad value."""
        if self._fast is not None:
            got = self._fast(line, node_id, log_name)
            if got is not NotImplemented:
                return got
        g = self.split(line)
        if g is None:
            return None
        try:
            return self._build(g, node_id, log_name)
        except (ValueError, TypeError, AttributeError):
            self._explain(g)
            raise

    def _explain(self, g: tuple) -> None:
        """BadLine naming the field whose value failed (slow: only for errors)."""
        for reader, value in zip(self.readers, g, strict=True):
            if reader is not None:
                try:
                    reader[1](value)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise BadLine(f"{self.name} format: {reader[0]} {value!r}: {exc}") from None


def _regex_split(pattern: re.Pattern[str], blank_none: tuple[bool, ...]) -> Callable[[str], tuple | None]:
    """The reference ``split``: the regex's groups, "-" and "" as None where ``blank_none`` says."""
    def split(line: str) -> tuple | None:
        m = pattern.fullmatch(line)
        if m is None:
            return None
        return tuple(None if blank and (v == "-" or not v) else v
                     for v, blank in zip(m.groups(), blank_none, strict=True))

    return split


def _builder_env() -> dict[str, Any]:
    """The names a generated builder (``_builder``) uses, beside its readers."""
    return {"AccessRecord": AccessRecord, "BadLine": BadLine, "SECONDS": _SECONDS, "R": parse_start_time,
            "blake2b": blake2b, "US": "\x1f", "make": row_shape(AccessRecord).make}


def _builder(items: dict[str, str], unpack: str, env: dict[str, Any]) -> str:
    """Source of ``build(g, node_id, log_name)``: the fields as locals, then the AccessRecord made from
    its row (every field in order, defaults for the ones the format lacks; ``RowShape.make``, no
    keyword ``__init__``) with the id ``AccessRecord.compute_id`` would give (``record_id``'s text of
    the same parts, hashed here in one f-string; make_record's protocol rule)."""
    lines = ["def build(g, node_id, log_name):", unpack.rstrip("\n")]
    lines += [f"    {name} = {expr}" for name, expr in items.items()]
    if "start_time" not in items:
        lines.append("    raise BadLine('no start time')")
        return "\n".join(lines) + "\n"
    lines.append("    if start_time is None:\n        raise BadLine('no start time')")
    http = [n for n in ("method", "protocol_version") if n in items]
    lines.append(f"    protocol = 'HTTP' if ({' or '.join(http) or 'False'}) else 'TCP'")
    given = set(items) | {"protocol", "node_id", "log_name"}
    if "access_log_type" not in items:  # else compute_id decides whether the type is part of the id
        # record_id("access", node_id, log_name, protocol, f"{start_time:.6f}", downstream_remote,
        # upstream_local, request_id, path): each part then \x1e, None as \x1f
        parts = "".join(f"{{US if {n} is None else {n}}}\\x1e" if n in items else "\\x1f\\x1e"
                        for n in ("downstream_remote", "upstream_local", "request_id", "path"))
        lines.append("    text = f'access\\x1e{node_id}\\x1e{log_name}\\x1e{protocol}\\x1e"
                     "{start_time:.6f}\\x1e" + parts + "'")
        lines.append("    id = blake2b(text.encode(), digest_size=16).hexdigest()")
        given.add("id")
    row = []
    for i, f in enumerate(dataclasses.fields(AccessRecord)):
        if f.name in given:
            row.append(f.name)
        elif f.default_factory is list:
            row.append("[]")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"F{i}"] = f.default_factory
            row.append(f"F{i}()")
        else:
            env[f"D{i}"] = f.default  # "" for the id: compute_id below
            row.append(f"D{i}")
    lines.append(f"    r = make({', '.join(row)})")
    if "id" not in given:
        lines.append("    r.id = r.compute_id()")
    lines.append("    return r")
    return "\n".join(lines) + "\n"


# the readers the C builder has (_line_split.c's K_TEXT … K_START), by the Python reader they reproduce
_NATIVE_KINDS = {_text: 1, _int: 2, _float: 3, _code: 4, _flags: 5, parse_start_time: 6}
_PLACES = ("id", "start_time", "protocol", "node_id", "log_name", "method", "protocol_version",
           "downstream_remote", "upstream_local", "request_id", "path")  # _line_split.c's P_ID … P_PATH


def _native_plan(readers: list[tuple[str, Callable[[Any], Any]] | None],
                 items: dict[str, str]) -> tuple | None:
    """The C builder's arguments after literals and blank_none (kinds, slots, defaults, lists, places), or
    None when the format needs the Python builder for every line: a reader C lacks, no start time, or an
    ``ACCESS_LOG_TYPE`` (then compute_id decides what the id is made of)."""
    if "start_time" not in items or "access_log_type" in items:
        return None
    fields = dataclasses.fields(AccessRecord)
    index = {f.name: i for i, f in enumerate(fields)}
    kinds, slots = [], []
    for reader in readers:
        if reader is None:
            kinds.append(0)
            slots.append(-1)
            continue
        kind = _NATIVE_KINDS.get(reader[1])  # type: ignore[call-overload]
        if kind is None:
            return None
        kinds.append(kind)
        slots.append(index[reader[0]])
    defaults, lists = [], []
    for i, f in enumerate(fields):
        if f.default_factory is list:
            lists.append(i)
            defaults.append(None)
        elif f.default_factory is not dataclasses.MISSING:
            return None
        else:
            defaults.append(None if f.default is dataclasses.MISSING else f.default)
    places = tuple(index[n] if n in items or n in ("id", "start_time", "protocol", "node_id", "log_name")
                   else -1 for n in _PLACES)
    return tuple(kinds), tuple(slots), tuple(defaults), tuple(lists), places


def compile_format(format_string: str, name: str = "custom", *, native: bool = True) -> TextFormat:
    """An Envoy text format string (``[%START_TIME%] "%REQ(:METHOD)% …"``) as a TextFormat. Each
    operator matches up to the first character of the literal text after it (to the end of line when
    nothing follows). Raises ValueError for a format without operators or two operators side by side."""
    body = format_string.rstrip("\n").removesuffix("\\n")  # "\n" typed on a command line too
    parts = _OPERATOR.split(body)  # literal, op, literal, op, …, literal
    if len(parts) < 3:
        raise ValueError(f"format {format_string!r} has no %OPERATOR%")
    regex: list[str] = []
    readers: list[tuple[str, Callable[[Any], Any]] | None] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex.append(re.escape(part))
            continue
        after = parts[i + 1]
        if not after and i + 1 < len(parts) - 1:
            raise ValueError(f"format {format_string!r}: %{part}% and %{parts[i + 2]}% have no text "
                             "between them, so a line cannot be split")
        regex.append(f"([^{re.escape(after[0])}]*)" if after else "(.*?)")
        readers.append(OPERATORS.get(operator_key(part)))
    return TextFormat(name, re.compile("".join(regex) + r"\s*"), tuple(parts[::2]), readers, native)


# inline reading of a JSON value (any JSON type) for JsonFormat's generated builder: the reader's answer
# for None, a str and the number types it takes as they are; the reader itself (R{i}) for anything else
_JSON_INLINE = {
    "_text": "(None if {v} is None else ({v} if {v} and {v} != '-' else None) if type({v}) is str "
             "else {r}({v}))",
    "_int": "(None if {v} is None else {v} if type({v}) is int else {r}({v}))",
    "_code": "(None if {v} is None else ({v} or None) if type({v}) is int else {r}({v}))",
    "_float": "(None if {v} is None else float({v}) if type({v}) is int or type({v}) is float else {r}({v}))",
    "parse_start_time": _INLINE["parse_start_time"].replace("R({v})", "{r}({v})")
                        .replace("if len({v})", "if type({v}) is str and len({v})", 1),
}


@dataclass(slots=True)
class JsonFormat:
    """A JSON access-log format: key → field (keys of Istio's JSON format, plus any given operators).
    ``record`` builds the AccessRecord with a generated function (as TextFormat's ``_build``: the keys'
    values read inline, the row made in one call); any error, and any format where two keys name one
    field, goes the reference way (``from_mapping`` then ``make_record``), which names the key."""

    name: str
    keys: dict[str, tuple[str, Callable[[Any], Any]]]
    _build: Callable[[dict, str, str], AccessRecord] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.keys.values()]
        if len(set(names)) != len(names) or "start_time" not in names:
            return
        env = _builder_env()
        env["M"] = _MISSING
        none, fresh = (None, dataclasses.MISSING), (list, dataclasses.MISSING)
        defaults = {f.name: "[]" if f.default_factory is list else "None"
                    for f in dataclasses.fields(AccessRecord)
                    if f.default in none and f.default_factory in fresh}
        unpack, items = [], {}
        for i, (key, (name, read)) in enumerate(self.keys.items()):
            if name not in defaults:
                return  # a field whose default is not None or []: the reference way
            env[f"R{i}"] = read
            template = _JSON_INLINE.get(read.__name__, "{r}({v})")
            unpack.append(f"    g{i} = g.get({key!r}, M)")
            items[name] = f"({defaults[name]} if g{i} is M else {template.format(v=f'g{i}', r=f'R{i}')})"
        exec(_builder(items, "\n".join(unpack) + "\n", env), env)  # noqa: S102 - our own operator table
        self._build = env["build"]

    def _doc(self, line: str) -> dict[str, Any]:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BadLine(f"JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadLine("JSON: not an object")
        return doc

    def fields(self, line: str) -> dict[str, Any] | None:
        return self.from_mapping(self._doc(line))

    def record(self, line: str, origin: Origin) -> AccessRecord:
        """The line's AccessRecord; BadLine for a line that is not a JSON object, or a bad value."""
        doc = self._doc(line)
        if self._build is not None:
            try:
                return self._build(doc, origin.node_id, origin.log_name)
            except (ValueError, TypeError, AttributeError):
                pass  # the reference way below says which key, or (rarely) takes what the inline refused
        return make_record(self.from_mapping(doc), origin)

    def from_mapping(self, doc: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            reader = self.keys.get(key)
            if reader is None:
                continue
            name, read = reader
            try:
                got = read(value)
            except (ValueError, TypeError) as exc:
                raise BadLine(f"{self.name} format: {key} {value!r}: {exc}") from None
            if got is not None or name not in out:
                out[name] = got
        return out


def json_format(mapping: dict[str, str], name: str = "json") -> JsonFormat:
    """A JSON format from its Envoy ``json_format`` map (key → ``%OPERATOR%``)."""
    keys: dict[str, tuple[str, Callable[[Any], Any]]] = {}
    for key, operator in mapping.items():
        reader = OPERATORS.get(operator_key(str(operator)))
        if reader is not None:
            keys[key] = reader
    return JsonFormat(name, keys)


ISTIO_TEXT = compile_format(ISTIO_TEXT_FORMAT, "istio")
ENVOY_DEFAULT = compile_format(ENVOY_DEFAULT_FORMAT, "envoy")
ISTIO_JSON = json_format(ISTIO_JSON_FORMAT, "istio-json")


def custom_format(spec: str) -> TextFormat | JsonFormat:
    """``--format``: an Envoy text format string, or a JSON object of key → operator."""
    if spec.lstrip().startswith("{"):
        try:
            mapping = orjson.loads(spec)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"--format looks like JSON but is not: {exc}") from None
        return json_format(mapping, "custom-json")
    return compile_format(spec)


# ---- prefixes -----------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KUBECTL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d) ")
_KUBECTL_PREFIX = re.compile(r"\[pod/([^/\]\s]+)/([^\]\s]+)\] ")
_STERN_PREFIX = re.compile(r"(?:([a-z0-9][a-z0-9.-]*) )?([a-z0-9][a-z0-9.-]*) ([a-z0-9][a-z0-9-]*) (?=[\[{])")


@dataclass(slots=True, frozen=True)
class Origin:
    """The proxy a line came from: node id (pod, or pod.namespace) and log name (container)."""

    node_id: str
    log_name: str = ""


_KUBECTL_ORIGINS: dict[str, Origin | None] = {}  # "[pod/NAME/CONTAINER] " → its Origin (None: not a prefix)


def _kubectl_origin(head: str) -> Origin | None:
    """The proxy a ``kubectl logs --prefix`` prefix names (head: the line up to its first "]" and one more
    character; the prefix regex's groups hold no "]", so it matches a line just when it matches the head
    whole), one Origin per pod and container seen."""
    known = _KUBECTL_ORIGINS.get(head, _MISSING)
    if known is not _MISSING:
        return known  # type: ignore[return-value]
    m = _KUBECTL_PREFIX.fullmatch(head)
    if len(_KUBECTL_ORIGINS) > 10_000:
        _KUBECTL_ORIGINS.clear()
    origin = _KUBECTL_ORIGINS[head] = Origin(m.group(1), m.group(2)) if m else None
    return origin


def strip_prefix(line: str) -> tuple[str, Origin | None]:
    """The line without kubectl/stern prefixes, and the pod/container they named (None: no prefix)."""
    first = line[:1]
    if first == "[" and line[1:5] != "pod/" and "\x1b" not in line:  # Envoy's own line: the common case
        return line, None
    if "\x1b" in line:
        line = _ANSI.sub("", line)
        first = line[:1]
    origin = None
    if first == "[" and line.startswith("[pod/"):
        end = line.find("]", 5) + 2
        origin = _kubectl_origin(line[:end])
        if origin is not None:
            line = line[end:]
            first = line[:1]
    if first.isdigit():
        m = _KUBECTL_TS.match(line)
        if m:
            line = line[m.end():]
            first = line[:1]
    if origin is None and first not in ("[", "{", ""):
        m = _STERN_PREFIX.match(line)
        if m:
            ns, pod, container = m.groups()
            origin = Origin(f"{pod}.{ns}" if ns else pod, container)
            line = line[m.end():]
    return line, origin


# ---- lines → records ----------------------------------------------------------------------------
@dataclass(slots=True)
class LineError:
    line: int
    reason: str
    text: str


@dataclass(slots=True)
class ImportReport:
    """What an import did: lines read, records made, blank lines, and the lines it could not read."""

    lines: int = 0
    records: int = 0
    blank: int = 0
    failed: int = 0
    by_format: dict[str, int] = field(default_factory=dict)
    errors: list[LineError] = field(default_factory=list)  # the first MAX_REPORTED_ERRORS

    def fail(self, line: int, reason: str, text: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, reason, text[:200]))

    def add(self, other: ImportReport) -> None:
        self.lines += other.lines
        self.records += other.records
        self.blank += other.blank
        self.failed += other.failed
        for k, v in other.by_format.items():
            self.by_format[k] = self.by_format.get(k, 0) + v
        self.errors.extend(other.errors[: MAX_REPORTED_ERRORS - len(self.errors)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines, "records": self.records, "blank": self.blank, "failed": self.failed,
            "by_format": dict(self.by_format),
            "errors": [{"line": e.line, "reason": e.reason, "text": e.text} for e in self.errors],
        }


class LineParser:
    """Turns one access-log line at a time into an AccessRecord, trying the custom format (if any),
    then the format that fit last, then the others; JSON for lines that start with ``{``."""

    def __init__(self, custom: TextFormat | JsonFormat | None = None, origin: Origin | None = None) -> None:
        self.origin = origin or Origin("")
        self.custom_json = custom if isinstance(custom, JsonFormat) else None
        texts = [custom] if isinstance(custom, TextFormat) else []
        self.texts: list[TextFormat] = texts + [ISTIO_TEXT, ENVOY_DEFAULT]

    def fields(self, line: str) -> tuple[str, dict[str, Any]]:
        """(format name, AccessRecord fields) of a line without prefix; BadLine when nothing fits."""
        if line[:1] == "{":
            fmt = self.custom_json or ISTIO_JSON
            return fmt.name, fmt.fields(line)
        texts = self.texts
        for i, fmt in enumerate(texts):
            got = fmt.fields(line)
            if got is not None:
                if i and fmt is not texts[0]:  # the next line is most likely in the same format
                    texts.insert(0, texts.pop(i))
                return fmt.name, got
        raise BadLine("fits no known format (Istio text or JSON, Envoy default, --format)")

    def line_record(self, line: str, origin: Origin) -> tuple[str, AccessRecord]:
        """(format name, AccessRecord) of a line without prefix; BadLine when nothing fits. Text
        formats build the record straight from the regex groups (no field dict)."""
        if line[:1] == "{":
            fmt = self.custom_json or ISTIO_JSON
            return fmt.name, fmt.record(line, origin)
        texts = self.texts
        for i, fmt in enumerate(texts):
            got = fmt.record(line, origin.node_id, origin.log_name)
            if got is not None:
                if i and fmt is not texts[0]:  # the next line is most likely in the same format
                    texts.insert(0, texts.pop(i))
                return fmt.name, got
        raise BadLine("fits no known format (Istio text or JSON, Envoy default, --format)")

    def record(self, raw: str) -> tuple[str, AccessRecord]:
        line, origin = strip_prefix(raw)
        if origin is None and line is raw:  # no prefix: nothing to retry without one
            return self.line_record(raw.rstrip("\r\n"), self.origin)
        try:
            return self.line_record(line.rstrip("\r\n"), origin or self.origin)
        except BadLine:
            if len(line) == len(raw):
                raise
            try:  # what looked like a prefix may be the line's own start (a custom format's time)
                return self.line_record(raw.rstrip("\r\n"), self.origin)
            except BadLine:
                pass
            raise

    def take(self, lines: list[str], report: ImportReport, out: list[AccessRecord]) -> None:
        """The records of ``lines`` (the report's next lines) appended to ``out``; blank and bad lines
        counted in ``report``. Runs of lines in the first format, bare or under a ``kubectl logs --prefix``
        prefix, are built in one C call (``TextFormat.build_many``); each line it leaves goes through
        ``record`` as before."""
        by_format = report.by_format
        n, end, i = report.lines, len(lines), 0
        node_id, log_name = self.origin.node_id, self.origin.log_name
        while i < end:
            fmt = self.texts[0]
            if fmt.build_many is not None:
                j = fmt.build_many(lines, i, node_id, log_name, out, _kubectl_origin)
                if j > i:
                    by_format[fmt.name] = by_format.get(fmt.name, 0) + j - i
                    i = j
                    if i == end:
                        break
            raw = lines[i]
            i += 1
            if not raw or raw.isspace():
                report.blank += 1
                continue
            try:
                name, record = self.record(raw)
            except BadLine as exc:
                report.fail(n + i, str(exc), raw.rstrip("\r\n"))
                continue
            except (TypeError, ValueError) as exc:  # a value the record refuses: the line, not the import
                report.fail(n + i, f"bad value: {exc}", raw.rstrip("\r\n"))
                continue
            by_format[name] = by_format.get(name, 0) + 1
            out.append(record)
        report.lines = n + end


def make_record(fields: dict[str, Any], origin: Origin, node_cluster: str = "") -> AccessRecord:
    """An AccessRecord from parsed fields; BadLine without a start time (the record's identity)."""
    if fields.get("start_time") is None:
        raise BadLine("no start time")
    if "protocol" not in fields:
        fields["protocol"] = "HTTP" if (fields.get("method") or fields.get("protocol_version")) else "TCP"
    fields.setdefault("node_id", origin.node_id)
    fields.setdefault("log_name", origin.log_name)
    fields.setdefault("node_cluster", node_cluster)
    return AccessRecord(**fields)


def read_lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines of a binary stream, gunzipped when it starts with gzip's magic bytes (UTF-8, bad bytes
    replaced); the stream is read in chunks, so a file of any size takes bounded memory."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        buffered = gzip.GzipFile(fileobj=buffered)  # type: ignore[assignment]
    text = io.TextIOWrapper(buffered, encoding="utf-8", errors="replace", newline="")  # type: ignore[arg-type]
    yield from text


def parse_lines(lines: Iterable[str], parser: LineParser, report: ImportReport,
                batch: int = 5000) -> Iterator[list[AccessRecord]]:
    """Batches of AccessRecords from lines; what does not parse goes into ``report`` by line number.
    Lines are taken in slices that can at most fill the batch (``LineParser.take``)."""
    out: list[AccessRecord] = []
    it = iter(lines)
    while chunk := list(islice(it, batch - len(out))):
        parser.take(chunk, report, out)
        if len(out) >= batch:
            report.records += len(out)
            yield out
            out = []
    if out:
        report.records += len(out)
        yield out


class LineSplitter:
    """Bytes arriving in chunks (an HTTP body) → complete lines, gunzipping when the first bytes are
    gzip's magic; a line longer than ``max_line`` is cut there (and will not parse) so memory stays
    bounded whatever arrives."""

    def __init__(self, max_line: int = 1024 * 1024) -> None:
        self.max_line = max_line
        self._inflater: Any = None
        self._started = False
        self._tail = b""
        self._skipping = False

    def feed(self, chunk: bytes) -> list[str]:
        if not self._started:
            if len(self._tail) + len(chunk) < 2:
                self._tail += chunk
                return []
            chunk, self._tail = self._tail + chunk, b""
            self._started = True
            if chunk[:2] == b"\x1f\x8b":
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._inflater is not None:
            chunk = self._inflater.decompress(chunk)  # raises zlib.error on a corrupt stream
        return self._lines(chunk)

    def _lines(self, data: bytes) -> list[str]:
        if self._skipping:  # the rest of an overlong line: drop it up to its newline
            end = data.find(b"\n")
            if end < 0:
                return []
            data, self._skipping = data[end + 1:], False
        parts = (self._tail + data).split(b"\n")
        self._tail = parts.pop()
        if len(self._tail) > self.max_line:
            parts.append(self._tail[: self.max_line])  # kept (cut) so the bad line is counted once
            self._tail, self._skipping = b"", True
        return [p.decode("utf-8", "replace") for p in parts]

    def close(self) -> list[str]:
        """The last line (without a newline); zlib.error when a gzip stream ended early."""
        out: list[str] = []
        if not self._started and self._tail:
            self._started = True
            out = self._lines(b"")
        if self._inflater is not None:
            out += self._lines(self._inflater.flush())
            if not self._inflater.eof:
                raise zlib.error("truncated gzip stream")
        if self._tail:
            out.append(self._tail.decode("utf-8", "replace"))
            self._tail = b""
        return out
