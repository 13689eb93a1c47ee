"""A real VXLAN overlay (two network namespaces, the kernel's VXLAN on UDP 4789, a second VXLAN on
the Linux default port 8472 nested inside it), real HTTP through it, real tcpdump on the underlay:
every backend finds each request with the pods' INNER 4-tuple, as the client saw it and as tshark
reads it, and counts the frames it could not decode alike."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from meshscope.decoders.analysis import analyze
from meshscope.decoders.read import read_exchanges

from tests.conftest import need, need_binary, need_root
from tests.decoders.canonical import canonical
from tests.decoders.overlay_lab import REQUESTS, UNDERLAY, OverlayLab
from tests.decoders.tshark_http import tshark_requests

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(120)]


def _vxlan_available() -> bool:
    probe = subprocess.run(["ip", "link", "add", "msvxprobe", "type", "vxlan", "id", "1", "dstport", "4789"],
                           capture_output=True, timeout=10)
    subprocess.run(["ip", "link", "del", "msvxprobe"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    need_root()
    for tool in ("ip", "tcpdump"):
        need_binary(tool)
    need(_vxlan_available(), "needs the kernel's VXLAN support (ip link add … type vxlan)")
    for attempt in range(3):  # a loaded machine can make tcpdump miss packets: capture again
        d = tmp_path_factory.mktemp(f"overlay{attempt}")
        path = d / "underlay.pcap"
        with OverlayLab(d) as lab:
            caps = [lab.capture_underlay(path), lab.capture_underlay(d / "any.pcap", "any")]
            rows = lab.traffic()
            if all(_complete(lab.stop_capture(cap)) for cap in caps) and not _lossy(path.parent):
                break
    else:
        pytest.fail("tcpdump lost packets in three attempts")
    assert [r["status"] for r in rows] == [s for _ in range(4) for _, _, s in REQUESTS], rows
    return path, rows


def _complete(tcpdump_stderr: str) -> bool:
    return "\n0 packets dropped by kernel" in f"\n{tcpdump_stderr}"


def _lossy(directory) -> bool:
    """Whether tshark (when installed) sees TCP segments missing from either capture; in the
    `-i any` one, device by device (its copies of one connection would look like losses)."""
    if shutil.which("tshark") is None:
        return False

    def tshark(name: str, *options: str) -> str:
        return subprocess.run(["tshark", "-r", str(directory / name), "-d", "udp.port==8472,vxlan", *options],
                              capture_output=True, text=True, timeout=60).stdout

    lost = ("-Y", "tcp.analysis.lost_segment or tcp.analysis.ack_lost_segment")
    if tshark("underlay.pcap", *lost).strip():
        return True
    devices = set(tshark("any.pcap", "-T", "fields", "-e", "sll.ifindex").split())
    return any(tshark("any.pcap", "-2", "-R", f"sll.ifindex == {n}", *lost).strip() for n in devices)


def _client_view(rows) -> list[tuple]:
    return sorted(((r["src"], r["sport"], r["dst"], r["dport"]), r["method"], r["path"], r["status"])
                  for r in rows)


def _ours(path, backend) -> tuple[list[tuple], object, list[tuple]]:
    stream, report = read_exchanges(path, backend)
    exs = list(stream)
    return sorted((e.conn.key, e.method, e.uri, e.status) for e in exs), report, [canonical(e) for e in exs]


def test_dpkt_finds_every_request_with_the_inner_4_tuple(overlay):
    path, rows = overlay
    facts, report, _ = _ours(path, "dpkt")
    assert facts == _client_view(rows)
    assert not {UNDERLAY[0], UNDERLAY[1]} & {k[0] for k, *_ in facts}  # never an underlay address
    assert report.connections == 4 and not report.damage
    assert set(report.not_decoded) <= {"ARP", "ICMPv6"}  # neighbour discovery, inside and out


@pytest.mark.parametrize("backend", ["scapy", pytest.param("pyshark", marks=pytest.mark.tshark)])
def test_other_backends_agree(overlay, backend):
    if backend == "pyshark":
        need_binary("tshark")
    path, _ = overlay
    _, rep, ours = _ours(path, "dpkt")
    _, rep2, theirs = _ours(path, backend)
    assert theirs == ours
    assert (rep2.packets, rep2.connections, rep2.exchanges, rep2.not_decoded, rep2.damage) == \
        (rep.packets, rep.connections, rep.exchanges, rep.not_decoded, rep.damage)


@pytest.mark.tshark
def test_tshark_reads_the_same_requests_codes_and_inner_4_tuples(overlay):
    need_binary("tshark")
    path, rows = overlay
    theirs = tshark_requests(path, "-d", "udp.port==8472,vxlan")
    assert theirs == _client_view(rows)
    assert theirs == _ours(path, "dpkt")[0]


def test_an_any_capture_sees_each_request_once_and_folds_with_the_underlays(overlay):
    """`tcpdump -i any` on the node records a nested request on vx1, on vx0 and on the underlay,
    three wrappings of one inner connection: one exchange each; analysed with the underlay
    capture, every exchange is a copy folded away."""
    path, rows = overlay
    any_capture = path.with_name("any.pcap")
    alone = analyze([any_capture])
    assert sorted((e.conn.key, e.method, e.uri, e.status) for e in alone.exchanges) == _client_view(rows)
    assert not alone.reports[0].damage and alone.reports[0].link_types == ["linux-sll2"]
    both = analyze([path, any_capture])
    assert len(list(both.exchanges)) == len(rows) and both.duplicates == len(rows)
