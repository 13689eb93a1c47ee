"""NSS key logs: both TLS versions' labels, CRLF and comments, bad lines reported (by number, never by
content), and no secret in any repr or message."""

from __future__ import annotations

import pytest
from meshscope.decoders.tls_keylog import KeyLog

from meshscope.errors import UserError

CR12 = "11" * 32
CR13 = "22" * 32
MASTER = "ab" * 48
HS = "cd" * 32
APP = "ef" * 32

GOOD = (
    f"# curl wrote this\r\nCLIENT_RANDOM {CR12} {MASTER}\r\n\r\n"
    f"CLIENT_HANDSHAKE_TRAFFIC_SECRET {CR13} {HS}\r\n"
    f"SERVER_HANDSHAKE_TRAFFIC_SECRET {CR13} {HS}\r\n"
    f"CLIENT_TRAFFIC_SECRET_0 {CR13} {APP}\r\n"
    f"SERVER_TRAFFIC_SECRET_0 {CR13} {APP}\r\n"
    f"EXPORTER_SECRET {CR13} {APP}\r\n"
)


def test_crlf_comments_and_both_versions():
    log = KeyLog()
    log.add_text(GOOD.encode(), "curl.keys")
    assert len(log) == 2 and log.lines == 6 and not log.problems
    assert log.master_secret(bytes.fromhex(CR12)) == bytes.fromhex(MASTER)
    secrets = log.tls13_secrets(bytes.fromhex(CR13))
    assert secrets["CLIENT_TRAFFIC_SECRET_0"] == bytes.fromhex(APP)
    assert set(secrets) == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"}
    assert log.master_secret(bytes(32)) is None and log.tls13_secrets(bytes(32)) == {}


def test_garbage_lines_are_problems_not_failures():
    text = "\n".join([
        f"CLIENT_RANDOM {CR12} {MASTER}",
        "hello world",                                  # 2: not a key-log line
        f"CLIENT_RANDOM {CR12[:-2]} {MASTER}",         # 3: short random
        f"CLIENT_RANDOM {CR12} {MASTER[:-2]}",         # 4: short master secret
        f"CLIENT_RANDOM {CR12} zz{MASTER[2:]}",        # 5: not hex
        f"RSA {'00' * 8} {MASTER}",                     # 6: RSA key exchange
        f"SOMETHING_NEW {CR12} {APP}",                  # 7: unknown label
        f"CLIENT_TRAFFIC_SECRET_0 {CR13} {'ef' * 20}",  # 8: odd secret length
    ])
    log = KeyLog()
    log.add_text(text, "mixed.keys")
    assert log.lines == 1
    assert [p.line for p in log.problems] == [2, 3, 4, 5, 6, 7, 8]
    assert "mixed.keys:6: RSA lines" in str(log.problems[4])
    for p in log.problems:  # the reason never repeats the line
        assert MASTER[:16] not in str(p) and "hello" not in str(p) and CR12[:16] not in str(p)


def test_no_secret_in_repr_or_str():
    log = KeyLog()
    log.add_text(GOOD)
    for text in (repr(log), str(log), repr(log.problems)):
        assert "ab" * 8 not in text and "cd" * 8 not in text and "ef" * 8 not in text
    assert repr(log) == "KeyLog(sessions=2, lines=6, problems=0)"


def test_files(tmp_path):
    (tmp_path / "a.keys").write_text(GOOD)
    (tmp_path / "b.keys").write_text(f"CLIENT_RANDOM {'33' * 32} {MASTER}\n")
    log = KeyLog.from_files([tmp_path / "a.keys", tmp_path / "b.keys"])
    assert len(log) == 3
    with pytest.raises(UserError, match="cannot read key log"):
        KeyLog.from_files([tmp_path / "missing.keys"])
    (tmp_path / "bin.keys").write_bytes(b"\x0a\x0d\x0d\x0a\0\0\0\0")
    with pytest.raises(UserError, match="binary"):
        KeyLog.from_files([tmp_path / "bin.keys"])
