"""pcapng Decryption Secrets Blocks, crafted: a TLS key log is kept (out of reprs), another secret type
and a block that overruns itself are reported as damage, and the packets around them still come out."""

from __future__ import annotations

import struct

from meshscope.decoders.capture_file import ReadStats, read_capture


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _pcapng(*blocks: bytes) -> bytes:
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535))
    return shb + idb + b"".join(blocks)


def _epb(data: bytes) -> bytes:
    return _block(6, struct.pack("<IIIII", 0, 0, 1, len(data), len(data)) + data)


def _dsb(stype: int, secret: bytes, claimed: int | None = None) -> bytes:
    return _block(10, struct.pack("<II", stype, len(secret) if claimed is None else claimed) + secret)


def test_tls_key_log_block_kept_others_reported(tmp_path):
    keylog = f"CLIENT_RANDOM {'11' * 32} {'ab' * 48}\r\n".encode()
    path = tmp_path / "secrets.pcapng"
    path.write_bytes(_pcapng(_dsb(0x544C534B, keylog), _epb(b"\0" * 60), _dsb(0x5753534B, b"wireguard"),
                             _dsb(0x544C534B, b"short", claimed=4000), _epb(b"\1" * 60)))
    stats = ReadStats()
    records = list(read_capture(path, stats))
    assert len(records) == 2 and stats.tls_key_logs == [keylog]
    assert any("0x5753534b" in d and "not supported" in d for d in stats.damage)
    assert any("overruns" in d for d in stats.damage)
    assert "ab" * 8 not in repr(stats)
