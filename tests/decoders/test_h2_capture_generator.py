"""The HTTP/2 + gRPC benchmark's capture generator (benchmarks.make_h2_capture) keeps saying what it
writes: on a few hundred packets tshark reads back every stream's facts that the benchmark asks it for
(5-tuple, stream id, :method, :path, :authority, x-request-id, :status, grpc-status), HPACK
dynamic table included."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from benchmarks.bench_h2 import tshark_cmd, tshark_streams
from benchmarks.make_h2_capture import write_h2_grpc
from tests.conftest import need_binary

pytestmark = pytest.mark.tshark


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("h2") / "h2_grpc.pcap"
    streams = write_h2_grpc(path, 400)
    return path, {(s.client, s.cport, s.server, s.sport, s.stream_id): s for s in streams}


def test_tshark_reads_back_what_the_generator_wrote(generated):
    need_binary("tshark")
    path, streams = generated
    seen = tshark_streams(path)
    assert len(streams) >= 40 and {s.grpc_status for s in streams.values()} >= {None, 0}
    expected = {}
    for key, s in streams.items():
        facts = dataclasses.asdict(s)
        expected[key] = {k: facts[k] for k in ("method", "path", "authority", "request_id", "status")}
        if s.grpc_status is not None:
            expected[key]["grpc_status"] = s.grpc_status
    assert seen == expected


def test_header_blocks_use_the_dynamic_table(generated):
    tshark = need_binary("tshark")
    path, _ = generated
    cmd = tshark_cmd(path)
    cmd[cmd.index("-Y") + 1] = "http2.header.index > 61"  # past the static table
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert cmd[0] == tshark and len(out.splitlines()) > 50
