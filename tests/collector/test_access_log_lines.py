"""Envoy access-log lines → AccessRecords: every format, prefixes, gzip, bad lines, bounded memory."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshscope.collector.access_log_lines import (
    _KUBECTL_PREFIX,
    ENVOY_DEFAULT_FORMAT,
    ISTIO_JSON_FORMAT,
    ISTIO_TEXT_FORMAT,
    BadLine,
    ImportReport,
    LineParser,
    LineSplitter,
    Origin,
    _kubectl_origin,
    compile_format,
    custom_format,
    make_record,
    parse_lines,
    parse_start_time,
    read_lines,
    strip_prefix,
)

RID = "a8a0f1d2-1234-4567-8abc-1234567890ab"
ISTIO_LINE = (
    '[2024-05-01T12:00:00.123Z] "GET /productpage HTTP/1.1" 503 UF,URX '
    'upstream_reset_before_response_started{connection_failure} - "delayed_connect_error:_111" 0 91 35 - '
    f'"10.0.0.1" "curl/8.0" "{RID}" '
    '"productpage:9080" "10.244.0.12:9080" outbound|9080||productpage.default.svc.cluster.local '
    "10.244.0.5:51237 10.96.0.20:9080 10.244.0.5:34567 - default\n"
)
TCP_LINE = ('[2024-05-01T12:00:01.000Z] "- - -" 0 - - - "-" 100 200 5 - "-" "-" "-" "-" "10.0.0.2:3306" '
            "outbound|3306||db 10.0.0.1:4444 10.0.0.9:3306 10.0.0.1:5555 - -\n")
ENVOY_LINE = ('[2024-05-01T12:00:02.500Z] "POST /api HTTP/2" 200 - 12 34 5 4 "-" "grpc-go/1.6" '
              f'"{RID}" "api:80" "1.2.3.4:80"\n')
JSON_LINE = orjson.dumps({
    "start_time": "2024-05-01T12:00:03.000Z", "method": "GET", "path": "/j", "protocol": "HTTP/1.1",
    "response_code": 404, "response_flags": "NR", "bytes_received": 0, "bytes_sent": 0, "duration": 0,
    "upstream_service_time": None, "request_id": RID, "authority": "x", "upstream_host": None,
    "downstream_remote_address": "10.0.0.7:1234", "route_name": None, "unknown_key": [1, 2],
}).decode() + "\n"


def parse(text: str, **kw) -> tuple[list, ImportReport]:
    report = ImportReport()
    records = [r for batch in parse_lines(io.StringIO(text), LineParser(**kw), report) for r in batch]
    return records, report


def test_istio_text_line_fields():
    (r,), report = parse(ISTIO_LINE)
    assert report.by_format == {"istio": 1}
    assert r.start_time == pytest.approx(1714564800.123)
    assert (r.method, r.path, r.protocol, r.protocol_version) == ("GET", "/productpage", "HTTP", "HTTP/1.1")
    assert r.response_code == 503 and r.response_flags == ["UF", "URX"] and r.retried
    assert r.response_code_details == "upstream_reset_before_response_started{connection_failure}"
    assert r.upstream_failure_reason == "delayed_connect_error:_111"
    assert (r.request_bytes, r.response_bytes, r.duration_ms, r.upstream_duration_ms) == (0, 91, 35.0, None)
    assert r.request_id == RID and r.authority == "productpage:9080" and r.x_forwarded_for == "10.0.0.1"
    assert r.upstream_cluster == "outbound|9080||productpage.default.svc.cluster.local"
    assert (r.upstream_local, r.downstream_local, r.downstream_remote) == (
        "10.244.0.5:51237", "10.96.0.20:9080", "10.244.0.5:34567")
    assert r.sni is None and r.route_name == "default"


def test_tcp_envoy_default_and_json_lines_in_one_file():
    records, report = parse(TCP_LINE + ENVOY_LINE + JSON_LINE + ISTIO_LINE)
    assert report.by_format == {"istio": 2, "envoy": 1, "istio-json": 1} and report.failed == 0
    tcp, envoy, js, _ = records
    assert tcp.protocol == "TCP" and tcp.response_code is None and tcp.request_bytes == 100
    assert tcp.upstream_host == "10.0.0.2:3306" and tcp.downstream_remote == "10.0.0.1:5555"
    assert envoy.method == "POST" and envoy.protocol_version == "HTTP/2" and envoy.upstream_duration_ms == 4
    assert envoy.upstream_host == "1.2.3.4:80" and envoy.user_agent == "grpc-go/1.6"
    assert js.response_code == 404 and js.response_flags == ["NR"] and js.downstream_remote == "10.0.0.7:1234"
    assert js.upstream_host is None and js.start_time == 1714564803.0


def test_custom_format_from_its_envoy_format_string():
    fmt = '%START_TIME% %REQ(:METHOD)% %REQ(:PATH)% code=%RESPONSE_CODE% rid=%REQ(X-REQUEST-ID)% b3=%REQ(X-B3-TRACEID)% attempts=%REQ(X-ENVOY-ATTEMPT-COUNT)% ua="%REQ(USER-AGENT):20%"\n'  # noqa: E501
    line = f'2024-05-01T12:00:04.000Z GET /c code=200 rid={RID} b3=463ac35c9f6413ad attempts=2 ua="a b c"\n'
    (r,), report = parse(line, custom=custom_format(fmt))
    assert report.by_format == {"custom": 1}
    assert (r.path, r.response_code, r.trace_id, r.attempt_count, r.user_agent) == (
        "/c", 200, "463ac35c9f6413ad", 2, "a b c")
    assert r.retried
    # the default formats still apply to other lines of the same stream
    records, report = parse(line + ISTIO_LINE, custom=custom_format(fmt))
    assert report.by_format == {"custom": 1, "istio": 1}


def test_custom_json_format_and_format_errors():
    fmt = custom_format('{"ts": "%START_TIME%", "code": "%RESPONSE_CODE%", "id": "%REQ(X-REQUEST-ID)%"}')
    (r,), _ = parse('{"ts": "2024-05-01T12:00:00Z", "code": 201, "id": "abc"}\n', custom=fmt)
    assert (r.response_code, r.request_id, r.start_time) == (201, "abc", 1714564800.0)
    with pytest.raises(ValueError, match="no %OPERATOR%"):
        compile_format("just text")
    with pytest.raises(ValueError, match="no text between"):
        compile_format("%START_TIME%%DURATION% x")


def test_known_formats_compile_from_their_format_strings():
    assert compile_format(ISTIO_TEXT_FORMAT).fields(ISTIO_LINE.rstrip())["request_id"] == RID
    assert compile_format(ENVOY_DEFAULT_FORMAT).fields(ENVOY_LINE.rstrip())["authority"] == "api:80"
    assert set(ISTIO_JSON_FORMAT) >= {"start_time", "request_id", "response_flags", "upstream_cluster"}


PREFIXES = [
    ("[pod/productpage-v1-6b7f6f8d5c-x2k9p/istio-proxy] ", "productpage-v1-6b7f6f8d5c-x2k9p", "istio-proxy"),
    ("[pod/productpage-v1-6b7f6f8d5c-x2k9p/istio-proxy] 2024-05-01T12:00:00.123456789Z ",
     "productpage-v1-6b7f6f8d5c-x2k9p", "istio-proxy"),
    ("productpage-v1-6b7f6f8d5c-x2k9p istio-proxy ", "productpage-v1-6b7f6f8d5c-x2k9p", "istio-proxy"),
    ("bookinfo productpage-v1-6b7f6f8d5c-x2k9p istio-proxy ", "productpage-v1-6b7f6f8d5c-x2k9p.bookinfo",
     "istio-proxy"),
    ("\x1b[32mproductpage-v1-abc\x1b[0m \x1b[34mistio-proxy\x1b[0m ", "productpage-v1-abc", "istio-proxy"),
    ("2024-05-01T12:00:00.123456789Z ", "file.log", ""),
]


@pytest.mark.parametrize(("prefix", "node_id", "log_name"), PREFIXES)
def test_kubectl_and_stern_prefixes_name_the_proxy(prefix, node_id, log_name):
    (r,), report = parse(prefix + ISTIO_LINE, origin=Origin("file.log"))
    assert report.failed == 0
    assert (r.node_id, r.log_name, r.request_id) == (node_id, log_name, RID)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(["[pod/", "a", "/", "]", " ", "\t", "\u2028", "ä", "["]), max_size=12))
def test_a_kubectl_prefix_is_read_from_the_line_up_to_its_first_bracket(pieces):
    """strip_prefix reads a ``[pod/…] `` prefix from the line's head up to its first "]" (one Origin per
    head, cached): the same as the prefix regex matched on the whole line."""
    line = "[pod/" + "".join(pieces) + ISTIO_LINE
    m = _KUBECTL_PREFIX.match(line)
    end = line.find("]", 5) + 2
    assert _kubectl_origin(line[:end]) == (Origin(m.group(1), m.group(2)) if m else None)
    assert m is None or m.end() == end
    if m:
        assert strip_prefix(line)[0] == line[end:]


def test_every_format_under_every_prefix_mixed_in_one_gzip_file():
    """What ``kubectl logs --prefix`` or ``stern`` over several proxies gives: Istio text (HTTP and TCP),
    Istio JSON and Envoy's default format, each under each prefix and bare, shuffled with unreadable
    lines, gzip'ed and split at awkward places. Every line is read by its own format and names its proxy."""
    import random

    formats = {"istio": ISTIO_LINE, "istio-tcp": TCP_LINE, "envoy": ENVOY_LINE, "istio-json": JSON_LINE}
    cases = [(fmt, prefix, node, log) for fmt in formats
             for prefix, node, log in [*PREFIXES, ("", "file.log", "")]]
    random.Random(15).shuffle(cases)
    lines, expected = [], {}
    for i, (fmt, prefix, node, log) in enumerate(cases):
        rid = f"mixed-{i:03d}"
        line = formats[fmt].replace(RID, rid) if fmt != "istio-tcp" else formats[fmt]
        lines.append(prefix + line)
        expected[len(lines)] = (fmt, node, log)
        if i % 7 == 0:
            lines.append("[pod/x/istio-proxy] this is no access-log line\n")
    data = gzip.compress("".join(lines).encode())
    splitter, report, parser = LineSplitter(), ImportReport(), LineParser(origin=Origin("file.log"))
    records = []
    for at in range(0, len(data), 997):  # chunks that cut lines and gzip blocks anywhere
        records += [r for b in parse_lines(splitter.feed(data[at:at + 997]), parser, report) for r in b]
    records += [r for b in parse_lines(splitter.close(), parser, report) for r in b]
    assert report.failed == len(lines) - len(cases) and report.records == len(cases) == len(records)
    assert report.by_format == {"istio": 2 * len(PREFIXES) + 2, "envoy": len(PREFIXES) + 1,
                                "istio-json": len(PREFIXES) + 1}
    bad_lines = {e.line for e in report.errors}
    assert bad_lines.isdisjoint(expected) and len(bad_lines) == report.failed
    for record, (fmt, node, log) in zip(records, [v for k, v in sorted(expected.items())], strict=True):
        assert (record.node_id, record.log_name) == (node, log), fmt
        assert record.protocol == ("TCP" if fmt == "istio-tcp" else "HTTP")
        if fmt != "istio-tcp":
            assert record.request_id.startswith("mixed-")


def test_prefix_without_a_log_line_is_left_alone():
    assert strip_prefix("hello world\n") == ("hello world\n", None)


def test_bad_lines_are_counted_with_their_numbers_never_fatal():
    text = ("garbage line\n" + ISTIO_LINE + "\n" + ISTIO_LINE.replace(" 91 ", " x91 ")
            + '{"start_time": 5\n' + '{"method": "GET"}\n' + "[" + "\n" + ENVOY_LINE
            + ISTIO_LINE.replace("2024-05-01T12", "2024-13-01T12"))
    records, report = parse(text)
    assert len(records) == 2 and report.records == 2 and report.blank == 1 and report.lines == 9
    assert [e.line for e in report.errors] == [1, 4, 5, 6, 7, 9]
    reasons = {e.line: e.reason for e in report.errors}
    assert "fits no known format" in reasons[1]
    assert "response_bytes 'x91'" in reasons[4]
    assert reasons[5].startswith("JSON:") and reasons[6] == "no start time"
    assert "bad start time" in reasons[9]
    assert report.to_dict()["errors"][0] == {"line": 1, "reason": reasons[1], "text": "garbage line"}


def test_deterministic_ids_and_same_line_same_record():
    (a,), _ = parse(ISTIO_LINE)
    (b,), _ = parse(ISTIO_LINE)
    (c,), _ = parse(ISTIO_LINE, origin=Origin("other"))
    assert a.id == b.id != c.id


@pytest.mark.parametrize(("fmt", "line"), [
    (ISTIO_TEXT_FORMAT, ISTIO_LINE), (ISTIO_TEXT_FORMAT, TCP_LINE), (ENVOY_DEFAULT_FORMAT, ENVOY_LINE),
    ("%START_TIME% %REQ(:METHOD)% %RESPONSE_CODE% %ACCESS_LOG_TYPE% %DURATION%",
     "2024-05-01T12:00:04.000Z GET 200 DownstreamPeriodic 7"),
    ("%DURATION% %REQ(X-REQUEST-ID)%", f"7 {RID}"),
])
def test_generated_builder_gives_the_record_the_field_path_gives(fmt, line):
    """The fast path (regex groups → AccessRecord, id included) and the field-dict path (``fields`` +
    ``make_record`` + ``compute_id``) agree on every field: ids stay what earlier imports stored."""
    compiled = compile_format(fmt)
    origin = Origin("sidecar~10.0.0.1~a.b~b.svc.cluster.local", "istio-proxy")
    fields = compiled.fields(line.rstrip())
    if "start_time" not in fields:
        with pytest.raises(BadLine, match="no start time"):
            compiled.record(line.rstrip(), origin.node_id, origin.log_name)
        return
    fast = compiled.record(line.rstrip(), origin.node_id, origin.log_name)
    slow = make_record(fields, origin)
    assert fast == slow and fast.id == fast.compute_id() == slow.id
    assert compiled.record("not this format", "n", "") is None


def test_start_time_forms():
    assert parse_start_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert parse_start_time("2024-05-01T12:00:00.5Z") == 1714564800.5
    assert parse_start_time("2024-05-01T14:00:00.250+02:00") == 1714564800.25
    assert parse_start_time("1714564800.75") == 1714564800.75
    with pytest.raises(BadLine):
        parse_start_time("yesterday")


def test_gzip_file_and_plain_file_read_alike(tmp_path):
    plain = (ISTIO_LINE + ENVOY_LINE) * 3
    gz = tmp_path / "access.log.gz"
    gz.write_bytes(gzip.compress(plain.encode()))
    with gz.open("rb") as f:
        assert list(read_lines(f)) == list(read_lines(io.BytesIO(plain.encode())))


def test_splitter_gzip_chunks_and_truncation():
    data = gzip.compress((ISTIO_LINE * 50 + "last line without newline").encode())
    splitter = LineSplitter()
    lines = [line for i in range(0, len(data), 7) for line in splitter.feed(data[i:i + 7])]
    lines += splitter.close()
    assert len(lines) == 51 and lines[0] == ISTIO_LINE.rstrip("\n")
    assert lines[-1] == "last line without newline"
    cut = LineSplitter()
    cut.feed(data[: len(data) // 2])
    with pytest.raises(zlib.error):
        cut.close()
    long = LineSplitter(max_line=100)
    assert long.feed(b"x" * 250) == ["x" * 100] and long.feed(b"yy\nnext") == [] and long.close() == ["next"]


def test_a_large_stream_is_parsed_in_bounded_memory():
    """60,000 lines (~23 MB; their records would take ~60 MB held at once) streamed from a generator:
    the parsing process's peak RSS grows by far less than that."""
    code = f"""
import io, resource
from meshscope.collector.access_log_lines import ImportReport, LineParser, parse_lines, read_lines
line = {ISTIO_LINE.encode()!r}

class Lines(io.RawIOBase):
    left = 60_000
    def readable(self):
        return True
    def readinto(self, buf):
        k = min(self.left, len(buf) // len(line))
        self.left -= k
        buf[: k * len(line)] = line * k
        return k * len(line)

ImportReport(); LineParser()  # imports and formats before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = ImportReport()
n = sum(len(b) for b in parse_lines(read_lines(io.BufferedReader(Lines(), 1 << 16)), LineParser(), report))
print(n, report.failed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=True)
    n, failed, grown_kb = map(int, out.stdout.split())
    assert (n, failed) == (60_000, 0)
    assert grown_kb < 20_000, f"RSS grew by {grown_kb} kB"
