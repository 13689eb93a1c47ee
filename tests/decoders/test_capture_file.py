"""pcap / pcapng framing: formats, interfaces, time units — and bad input of every kind, for every
backend: one clear CaptureError, or a best-effort result whose report says what was damaged."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshscope.decoders.capture_file import ReadStats, read_capture
from meshscope.decoders.read import read_exchanges

from meshscope.errors import CaptureError
from tests.conftest import need_binary
from tests.decoders.capture_builders import Conversation, http_request, http_response, write, write_pcapng

BACKENDS = ["dpkt", "scapy", pytest.param("pyshark", marks=pytest.mark.tshark)]


def _need(backend):
    if backend == "pyshark":
        need_binary("tshark")


def two_requests(tmp_path, name="two.pcap"):
    c = Conversation().handshake()
    for i in range(2):
        c.send(True, http_request("GET", f"/r{i}", x_request_id=f"r{i}"))
        c.send(False, http_response(200, b"b" * 500))
    if name.endswith(".pcapng"):
        return write_pcapng(tmp_path / name, {"eth0": c.close().packets})
    return write(tmp_path / name, c.close().packets)


def test_pcapng_interfaces_names_and_times(tmp_path):
    a = Conversation().handshake()
    b = Conversation(client="10.9.0.1", t=1_700_000_000.0005).handshake()
    path = write_pcapng(tmp_path / "m.pcapng", {"eth0": a.packets, "veth9": b.packets})
    stats = ReadStats()
    recs = list(read_capture(path, stats))
    assert stats.format == "pcapng" and len(recs) == 6 and not stats.damage
    assert {r.interface for r in recs} == {"eth0", "veth9"}
    assert [r.ts for r in recs] == sorted(r.ts for r in recs)
    assert abs(recs[0].ts - 1_700_000_000.001) < 1e-6


def test_nanosecond_and_big_endian_pcap(tmp_path):
    frame = bytes(60)
    for magic, order in ((0xA1B23C4D, "<"), (0xA1B2C3D4, ">"), (0xA1B23C4D, ">")):
        hdr = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
        rec = struct.pack(
            order + "IIII", 1_700_000_000, 500_000 if magic == 0xA1B2C3D4 else 500_000_000, 60, 60
        )
        p = tmp_path / "x.pcap"
        p.write_bytes(hdr + rec + frame)
        recs = list(read_capture(p))
        assert len(recs) == 1 and recs[0].ts == 1_700_000_000.5 and recs[0].data == frame


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("content", [b"", b"\xd4\xc3", b"GIF89a garbage" * 10, b"\x00" * 100])
def test_not_a_capture_is_one_clear_error(tmp_path, backend, content):
    _need(backend)
    p = tmp_path / "bad.pcap"
    p.write_bytes(content)
    with pytest.raises(CaptureError) as e:
        stream, _ = read_exchanges(p, backend)
        list(stream)
    assert "\n" not in str(e.value) and "bad.pcap" in str(e.value)


def test_missing_file_is_a_capture_error(tmp_path):
    with pytest.raises(CaptureError):
        read_exchanges(tmp_path / "nope.pcap")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_file_keeps_what_came_before(tmp_path, backend, fmt):
    _need(backend)
    whole = two_requests(tmp_path, f"two.{fmt}")
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) - 300])  # ends inside the second response's packets
    stream, report = read_exchanges(cut, backend)
    exs = list(stream)
    assert report.truncated and any("ends inside" in d for d in report.damage)
    assert [e.uri for e in exs][:1] == ["/r0"] and exs[0].status == 200
    assert report.packets < 18


@pytest.mark.parametrize("backend", BACKENDS)
def test_absurd_snaplen_and_record_length(tmp_path, backend):
    _need(backend)
    data = bytearray(two_requests(tmp_path).read_bytes())
    data[16:20] = struct.pack("<I", 0xFFFFFFFF)  # absurd snaplen in the header: harmless
    p = tmp_path / "snap.pcap"
    p.write_bytes(bytes(data))
    stream, report = read_exchanges(p, backend)
    assert len(list(stream)) == 2 and not report.damage
    # now a record that claims 2 GB, half-way through
    recs, pos = [], 24
    while pos < len(data):
        recs.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    data[recs[9] + 8 : recs[9] + 12] = struct.pack("<I", 0x7FFFFFFF)
    p.write_bytes(bytes(data))
    stream, report = read_exchanges(p, backend)
    exs = list(stream)
    assert any("claims 2147483647 bytes" in d for d in report.damage)
    assert report.packets == 9 and exs and exs[0].uri == "/r0"


def test_pcapng_with_a_broken_block_length(tmp_path):
    c = Conversation().handshake()
    c.send(True, http_request("GET", "/ok"))
    p = write_pcapng(tmp_path / "b.pcapng", {"eth0": c.packets})
    data = bytearray(p.read_bytes())
    data[-8:-4] = struct.pack("<I", 7)  # not a multiple of 4: cannot be a block
    last_start = len(data) - struct.unpack_from("<I", data, len(data) - 4)[0]
    data[last_start + 4 : last_start + 8] = struct.pack("<I", 7)
    p.write_bytes(bytes(data))
    stream, report = read_exchanges(p)
    list(stream)
    assert any("claims length 7" in d for d in report.damage)


def test_unsupported_link_type_is_reported(tmp_path):
    p = tmp_path / "bt.pcap"
    p.write_bytes(
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 187)
        + struct.pack("<IIII", 1, 0, 4, 4)
        + b"abcd"
    )
    stream, report = read_exchanges(p)
    assert list(stream) == [] and any("not supported" in d for d in report.damage)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([struct.pack("<I", 0xA1B2C3D4), struct.pack("<I", 0x0A0D0D0A)]), st.binary(max_size=600)
)
def test_fuzz_reader_and_decoder_never_raise_anything_else(tmp_path, magic, body):
    p = tmp_path / "fuzz.cap"
    p.write_bytes(magic + body)
    try:
        stream, report = read_exchanges(p)
        list(stream)
    except CaptureError:
        return
    assert report.packets >= 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_flipped_bytes_in_a_real_capture(tmp_path, data):
    base = two_requests(tmp_path, "base.pcap").read_bytes()
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    p = tmp_path / "flip.pcap"
    p.write_bytes(bytes(raw))
    try:
        stream, report = read_exchanges(p)
        list(stream)
    except CaptureError:
        pass


def test_progress_reports_byte_offsets_up_to_the_end(tmp_path):
    path = two_requests(tmp_path)
    seen: list[int] = []
    stream, _ = read_exchanges(path, progress=seen.append)
    list(stream)
    assert seen and seen == sorted(seen) and seen[-1] == path.stat().st_size
