"""The HTTP/2 + gRPC benchmark's capture generator (benchmarks.make_h2_capture) keeps saying what it
writes: on a few hundred packets the decoder and tshark both read back every stream's facts that the
benchmark compares (5-tuple, stream id, :method, :path, :authority, x-request-id, :status,
grpc-status), HPACK dynamic table included."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
from meshscope.decoders import analyze

from benchmarks.bench_h2 import tshark_cmd, tshark_streams
from benchmarks.make_h2_capture import write_h2_grpc
from tests.conftest import need_binary


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("h2") / "h2_grpc.pcap"
    streams = write_h2_grpc(path, 400)
    return path, {(s.client, s.cport, s.server, s.sport, s.stream_id): s for s in streams}


def _expected(streams: dict) -> dict:
    out = {}
    for key, s in streams.items():
        facts = dataclasses.asdict(s)
        out[key] = {k: facts[k] for k in ("method", "path", "authority", "request_id", "status")}
        if s.grpc_status is not None:
            out[key]["grpc_status"] = s.grpc_status
    return out


def test_the_decoder_reads_back_what_the_generator_wrote(generated):
    path, streams = generated
    analysis = analyze([path], workers=1)
    seen = {}
    for ex in analysis.exchanges:
        c = ex.conn
        seen[(c.src, c.sport, c.dst, c.dport, ex.stream_id)] = facts = {
            "method": ex.method, "path": ex.uri, "authority": ex.host, "request_id": ex.request_id,
            "status": ex.status}
        if ex.protocol == "grpc":
            facts["grpc_status"] = ex.grpc.status_code
        assert not ex.damage and ex.h2.undecoded_headers == 0
    assert analysis.reports[0].damage == []
    assert seen == _expected(streams)


@pytest.mark.tshark
def test_tshark_reads_back_what_the_generator_wrote(generated):
    need_binary("tshark")
    path, streams = generated
    seen = tshark_streams(path)
    assert len(streams) >= 40 and {s.grpc_status for s in streams.values()} >= {None, 0, 5, 14}
    assert seen == _expected(streams)


@pytest.mark.tshark
def test_header_blocks_use_the_dynamic_table(generated):
    tshark = need_binary("tshark")
    path, _ = generated
    cmd = tshark_cmd(path)
    cmd[cmd.index("-Y") + 1] = "http2.header.index > 61"  # past the static table
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert cmd[0] == tshark and len(out.splitlines()) > 50
