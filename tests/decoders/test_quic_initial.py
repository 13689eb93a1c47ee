"""QUIC client Initials opened without secrets (RFC 9001 section 5.2): RFC 9001 Appendix A's exact
packets in a scapy-crafted capture, read by the three backends and by tshark; CRYPTO frames out of
order across packets; damaged and non-QUIC datagrams. (Real v1 and v2 handshakes: test_udp_lab.py.)"""

from __future__ import annotations

import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from meshscope.decoders import get_backend
from meshscope.decoders.quic_initial import (
    V1,
    V2,
    CryptoStream,
    InitialKeys,
    crypto_frames,
    long_packets,
    open_initial,
    read_varint,
)

from tests.conftest import need_binary
from tests.decoders.capture_builders import write
from tests.decoders.quic_vectors import CLIENT_INITIAL, CLIENT_PAYLOAD, DCID, SERVER_INITIAL
from tests.decoders.udp_builders import datagram

CLIENT, SERVER = "10.3.0.5", "10.3.0.9"


def _rfc_capture(tmp_path, *extra):
    pkts = [datagram(0, CLIENT, 50000, SERVER, 443, CLIENT_INITIAL),
            datagram(0.01, SERVER, 443, CLIENT, 50000, SERVER_INITIAL),
            datagram(0.02, CLIENT, 50000, SERVER, 443, b"\x41" + bytes(30)),  # short header: counted
            *extra]
    return write(tmp_path / "quic.pcap", pkts)


def test_initial_keys_are_rfc_9001_appendix_a1():
    client, server = InitialKeys.derive(DCID, V1), InitialKeys.derive(DCID, V1, server=True)
    assert (client.key.hex(), client.iv.hex(), client.hp.hex()) == (
        "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2")
    assert (server.key.hex(), server.iv.hex(), server.hp.hex()) == (
        "cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e", "c206b8d9b9f0f37644430b490eeaa314")


def test_v2_keys_are_rfc_9369_appendix_a1():
    keys = InitialKeys.derive(DCID, V2)
    assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == (
        "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9")


def test_the_rfc_client_initial_opens_to_its_payload():
    (pkt,) = long_packets(CLIENT_INITIAL)
    assert (pkt.version, pkt.dcid, pkt.pn_offset, pkt.end) == (V1, DCID, 18, 1200)
    assert open_initial(CLIENT_INITIAL, pkt, InitialKeys.derive(DCID, V1)) == CLIENT_PAYLOAD


@pytest.mark.parametrize("backend", ["dpkt", "scapy", "pyshark"])
def test_rfc_initials_give_sni_alpn_version_and_counts(tmp_path, backend):
    b = get_backend(backend)
    (ex,) = list(b.decode(_rfc_capture(tmp_path)))
    assert (ex.exchange_type, ex.conn.transport, ex.conn.key) == ("tls", "udp", (CLIENT, 50000, SERVER, 443))
    assert (ex.sni, ex.alpn, ex.tls_offered_versions, ex.tls_version) == (
        "example.com", ["alpn"], ["TLS 1.3"], "TLS 1.3")
    q = ex.quic
    assert (q.version, q.dcid, q.client_packets, q.server_packets) == ("1", DCID.hex(), 2, 1)
    assert not ex.damage and b.report.quic_connections == 1


@pytest.mark.tshark
def test_tshark_reads_the_same_from_the_rfc_initial(tmp_path):
    need_binary("tshark")
    path = _rfc_capture(tmp_path)
    argv = ["tshark", "-r", str(path), "-d", "udp.port==443,quic", "-Y", "tls.handshake.type == 1",
            "-T", "fields", "-e", "quic.version", "-e", "tls.handshake.extensions_server_name",
            "-e", "tls.handshake.extensions_alpn_str"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    (ex,) = list(get_backend().decode(path))
    assert out == ["0x00000001", ex.sni, ",".join(ex.alpn)]


def _protect(version: int, dcid: bytes, pn: int, frames: bytes) -> bytes:
    """A client Initial as a sender builds it (RFC 9001 sections 5.3, 5.4), padded to 1200 bytes."""
    keys = InitialKeys.derive(dcid, version)
    ptype = 1 if version == V2 else 0
    first = 0xC0 | (ptype << 4) | 3  # 4-byte packet number
    length = 1200 - (7 + len(dcid) + 1 + 1 + 2)  # the rest of the datagram
    plain_len = length - 4 - 16
    frames += bytes(plain_len - len(frames))  # PADDING
    header = bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00" \
        + (0x4000 | length).to_bytes(2, "big") + pn.to_bytes(4, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, frames, header)
    pn_at = len(header) - 4
    enc = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = enc.update(sealed[:16]) + enc.finalize()
    out = bytearray(header + sealed)
    out[0] ^= mask[0] & 0x0F
    for i in range(4):
        out[pn_at + i] ^= mask[1 + i]
    return bytes(out)


def _crypto(offset: int, data: bytes) -> bytes:
    def varint(v: int) -> bytes:
        return (0x4000 | v).to_bytes(2, "big") if v < 0x4000 else (0x80000000 | v).to_bytes(4, "big")
    return b"\x06" + varint(offset) + varint(len(data)) + data


@pytest.mark.parametrize("version, name", [(V1, "1"), (V2, "2")])
def test_a_client_hello_split_over_initials_out_of_order(tmp_path, version, name):
    (frame,) = crypto_frames(CLIENT_PAYLOAD)
    hello = frame[1]
    dcid = bytes(range(1, 9))
    second = _protect(version, dcid, 1, _crypto(100, hello[100:]))
    first = _protect(version, dcid, 0, b"\x01" + _crypto(0, hello[:100]))  # PING, then the start
    pkts = [datagram(0, CLIENT, 50001, SERVER, 443, second),
            datagram(0.001, CLIENT, 50001, SERVER, 443, first)]
    (ex,) = list(get_backend().decode(write(tmp_path / "split.pcap", pkts)))
    assert (ex.sni, ex.alpn, ex.quic.version, ex.quic.client_packets) == ("example.com", ["alpn"], name, 2)
    assert not ex.damage


def test_a_damaged_initial_is_reported_and_its_packets_still_counted(tmp_path):
    bad = bytearray(CLIENT_INITIAL)
    bad[500] ^= 0xFF
    pkts = [datagram(0, CLIENT, 50002, SERVER, 443, bytes(bad)),
            datagram(0.01, SERVER, 443, CLIENT, 50002, SERVER_INITIAL)]
    b = get_backend()
    (ex,) = list(b.decode(write(tmp_path / "bad.pcap", pkts)))
    assert ex.sni is None and (ex.quic.client_packets, ex.quic.server_packets) == (1, 1)
    assert ex.damage == ["QUIC client Initial: Initial packet did not open with the keys of its connection id"
                         ]
    assert b.report.damage == [f"{CLIENT}:50002 -> {SERVER}:443: {ex.damage[0]}"]


def test_other_udp_is_counted_not_taken_for_quic(tmp_path):
    pkts = [datagram(0, CLIENT, 5000, SERVER, 443, b"\xc0\x00\x00\x00\x07" + bytes(40)),  # unknown version
            datagram(0.1, CLIENT, 5001, SERVER, 9999, b"syslog line"),
            datagram(0.2, CLIENT, 5002, SERVER, 443, b"")]
    b = get_backend()
    assert list(b.decode(write(tmp_path / "other.pcap", pkts))) == []
    assert (b.report.datagrams, b.report.quic_connections, b.report.damage) == (3, 0, [])


def test_crypto_stream_reassembles_overlaps_and_bounds():
    s = CryptoStream()
    s.add(4, b"efgh")
    s.add(0, b"abcdef")  # overlapping the piece already held
    assert s.data == b"abcdefgh" and not s.pieces
    with pytest.raises(ValueError, match="beyond"):
        s.add(CryptoStream.MAX, b"x")


def test_varints_of_every_length():
    assert read_varint(bytes.fromhex("c2197c5eff14e88c"), 0) == (151288809941952652, 8)
    assert read_varint(bytes.fromhex("9d7f3e7d"), 0) == (494878333, 4)
    assert read_varint(bytes.fromhex("7bbd"), 0) == (15293, 2)
    assert read_varint(bytes.fromhex("25"), 0) == (37, 1)
    with pytest.raises(ValueError):
        read_varint(bytes.fromhex("7b"), 0)
