"""TLS record decryption against real traffic: curl and `openssl s_server` on loopback writing key logs,
real tcpdump, every decrypted byte compared with tshark's (`-o tls.keylog_file:` + follow,tls); then
corner cases cut from those real sessions: records split into tiny segments, a hole inside a record,
a hole across a record boundary, a stream that ends inside a record, wrong keys, other sessions' keys,
and a real TLS 1.3 KeyUpdate."""

from __future__ import annotations

import subprocess
import time

import pytest
from meshscope.decoders.capture_file import ReadStats, read_capture
from meshscope.decoders.tls_decrypt import TlsSession
from meshscope.decoders.tls_keylog import KeyLog

from tests.conftest import free_port, need_binary, need_root
from tests.decoders.tls_lab import (
    curl,
    openssl_server,
    replay,
    tcpdump_lo,
    tls_connections,
    tshark_follow_tls,
)

pytestmark = [pytest.mark.root, pytest.mark.tshark]

RUNS = [  # (curl arguments, expected version, expected suite)
    (["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"], "TLS 1.3", "TLS_AES_128_GCM_SHA256"),
    (["--tlsv1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384"], "TLS 1.3", "TLS_AES_256_GCM_SHA384"),
    (["--tlsv1.3", "--tls13-ciphers", "TLS_CHACHA20_POLY1305_SHA256"], "TLS 1.3",
     "TLS_CHACHA20_POLY1305_SHA256"),
    (["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"], "TLS 1.2",
     "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"], "TLS 1.2",
     "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305"], "TLS 1.2",
     "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
]


def _body(i: int) -> bytes:
    return b"".join(b"file %d line %06d through TLS\n" % (i, n) for n in range(3000))  # ~90 KB: many records


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    need_root()
    for tool in ("tcpdump", "openssl", "curl", "tshark"):
        need_binary(tool)
    d = tmp_path_factory.mktemp("tls")
    port = free_port()
    client_keys, server_keys, pcap = d / "curl.keys", d / "server.keys", d / "tls.pcap"
    with openssl_server(d, port, keylog=server_keys) as www:
        for i in range(len(RUNS) + 2):
            (www / f"f{i}.txt").write_bytes(_body(i))
        with tcpdump_lo(pcap, [port]):
            for i, (args, _v, _s) in enumerate(RUNS):
                got = curl(f"https://shop.example.com:{port}/f{i}.txt", client_keys, *args, port=port)
                assert got == _body(i)
            # two URLs in one curl: `-WWW` closes each connection, so the second one resumes the session
            n = len(RUNS)
            for j, args in ((n, ["--tlsv1.3"]), (n + 1, ["--tlsv1.2", "--tls-max", "1.2"])):
                curl(f"https://shop.example.com:{port}/f{j}.txt", client_keys, *args, "-o", "/dev/null",
                     f"https://shop.example.com:{port}/f{j}.txt", port=port)
    log = KeyLog.from_files([client_keys])
    conns = tls_connections(pcap, log, {port})
    assert len(conns) == len(RUNS) + 4
    return d, pcap, client_keys, server_keys, log, conns, port


def test_every_suite_decrypts_like_tshark(real):
    _d, pcap, client_keys, _sk, _log, conns, port = real
    theirs = tshark_follow_tls(pcap, client_keys, len(conns), port)
    assert len(theirs) == len(conns)
    for i, (c, (_args, version, suite)) in enumerate(zip(conns, RUNS, strict=False)):
        r = c.session.report
        assert (r.version, r.cipher_suite, r.decryption) == (version, suite, "decrypted"), r
        assert c.to_server.bytes.startswith(b"GET /f%d.txt HTTP/1.1\r\nHost: shop.example.com:" % i)
        assert c.to_client.bytes.startswith(b"HTTP/1.0 200 ok\r\n") and c.to_client.bytes.endswith(_body(i))
        assert r.failed_records == 0 and r.lost_records == 0 and not r.problems
        assert r.sni == "shop.example.com" and r.alpn_offered == ["h2", "http/1.1"]
    for c in conns:  # every byte, both directions, every connection (resumed ones included)
        assert (c.to_server.bytes, c.to_client.bytes) == theirs[c.client[1]]


def test_certificates_and_resumption(real):
    conns = real[5]
    for c in conns[:len(RUNS)]:
        r = c.session.report
        assert not r.resumed and len(r.server_certificates) == 1  # TLS 1.3's arrives decrypted
    first13, again13, first12, again12 = conns[len(RUNS):]
    assert (first13.session.report.resumed, again13.session.report.resumed) == (False, True)
    assert (first12.session.report.resumed, again12.session.report.resumed) == (False, True)
    assert not again12.session.report.server_certificates  # an abbreviated handshake sends none
    for c, body in ((again13, _body(len(RUNS))), (again12, _body(len(RUNS) + 1))):
        assert c.session.report.decryption == "decrypted" and c.to_client.bytes.endswith(body)


def test_server_key_log_matches_curls(real):
    _d, pcap, _ck, server_keys, _log, conns, port = real
    again = tls_connections(pcap, KeyLog.from_files([server_keys]), {port})
    assert [(c.to_server.bytes, c.to_client.bytes) for c in again] == \
        [(c.to_server.bytes, c.to_client.bytes) for c in conns]


def test_pcapng_decryption_secrets_block(real):
    d, pcap, client_keys, _sk, log, conns, _port = real
    ng = d / "with-secrets.pcapng"
    subprocess.run([need_binary("editcap"), "--inject-secrets", f"tls,{client_keys}", str(pcap), str(ng)],
                   check=True, capture_output=True, timeout=60)
    stats = ReadStats()
    packets = sum(1 for _ in read_capture(ng, stats))
    assert packets > 50 and len(stats.tls_key_logs) == 1 and not stats.damage
    assert "CLIENT_RANDOM" not in repr(stats) and "TRAFFIC_SECRET" not in repr(stats)
    from_block = KeyLog()
    from_block.add_text(stats.tls_key_logs[0], "pcapng DSB")
    assert len(from_block) == len(log) == len(conns) and from_block.lines == log.lines
    for c in conns:
        cr = c.session.client_random
        assert from_block.has(cr) and from_block.master_secret(cr) == log.master_secret(cr)
        assert from_block.tls13_secrets(cr) == log.tls13_secrets(cr)


def _records(stream: bytes) -> list[tuple[int, int]]:
    """(start, end) of each TLS record in one direction's bytes."""
    out, pos = [], 0
    while pos + 5 <= len(stream):
        end = pos + 5 + int.from_bytes(stream[pos + 3:pos + 5], "big")
        out.append((pos, end))
        pos = end
    return out


def _cut(events, from_client: bool, start: int, end: int):
    """The events with bytes [start, end) of one direction replaced by one gap."""
    out, off, gapped = [], 0, False
    for fc, data in events:
        if fc != from_client:
            out.append((fc, data))
            continue
        a, b = off, off + len(data)
        off = b
        if a < start:
            out.append((fc, data[:start - a]))
        if b > start and a < end and not gapped:
            out.append((fc, end - start))
            gapped = True
        if b > end:
            out.append((fc, data[max(0, end - a):]))
    return out


@pytest.mark.parametrize("which", [0, 2, 3, 5])  # TLS 1.3 AES-GCM, 1.3 ChaCha, 1.2 GCM, 1.2 ChaCha
def test_records_split_into_tiny_segments(real, which):
    log, conns = real[4], real[5]
    c = conns[which]
    tiny = [(fc, data[i:i + 7]) for fc, data in c.events for i in range(0, len(data), 7)]
    again = replay(tiny, log)
    assert (again.to_server.bytes, again.to_client.bytes) == (c.to_server.bytes, c.to_client.bytes)
    assert again.session.report.records == c.session.report.records


@pytest.mark.parametrize("which", [1, 4])
def test_hole_inside_a_record_costs_that_record_only(real, which):
    log, conns = real[4], real[5]
    c = conns[which]
    server = b"".join(d for fc, d in c.events if not fc)
    recs = _records(server)
    start, end = recs[-6]  # an application-data record well inside the response
    overhead = 17 if c.session.tls13 else 24
    again = replay(_cut(c.events, False, start + 100, start + 400), log)
    r = again.session.report
    assert r.lost_records == 1 and again.to_client.gaps == 1
    assert r.decrypted_records == c.session.report.decrypted_records - 1
    full = c.to_client.bytes
    assert len(again.to_client.bytes) == len(full) - (end - start - 5 - overhead)
    before, after = again.to_client.pieces()
    assert full.startswith(before) and full.endswith(after)  # all but the lost record, in place


@pytest.mark.parametrize("which", [0, 5])
def test_hole_across_record_boundary_resynchronises(real, which):
    log, conns = real[4], real[5]
    c = conns[which]
    server = b"".join(d for fc, d in c.events if not fc)
    recs = _records(server)
    (s1, e1), (s2, e2) = recs[-6], recs[-5]
    again = replay(_cut(c.events, False, e1 - 50, s2 + 50), log)
    r = again.session.report
    assert r.decrypted_records == c.session.report.decrypted_records - 2
    assert r.lost_records >= 2 and any("resynchronised" in p for p in r.problems)
    before, after = again.to_client.pieces()
    overhead = 17 if c.session.tls13 else 16  # 1.3 AES-GCM, 1.2 ChaCha20
    assert c.to_client.bytes.startswith(before) and c.to_client.bytes.endswith(after)
    assert len(before) + len(after) == len(c.to_client.bytes) - (e1 - s1 + e2 - s2 - 10 - 2 * overhead)


def test_stream_ending_inside_a_record_is_reported(real):
    log, conns = real[4], real[5]
    c = conns[0]
    server = b"".join(d for fc, d in c.events if not fc)
    cut_at = _records(server)[-6][0] + 100  # inside a record: everything after it never arrives
    events = [e for e in _cut(c.events, False, cut_at, len(server)) if not isinstance(e[1], int)]
    again = replay(events, log)
    assert any("ends inside a TLS record" in p for p in again.session.report.problems)
    assert again.to_client.bytes and c.to_client.bytes.startswith(again.to_client.bytes)


def test_wrong_keys_and_other_sessions_keys(real, tmp_path):
    _d, _pcap, client_keys, _sk, log, conns, _port = real
    flipped = []
    for line in client_keys.read_text().splitlines():
        label, cr, secret = line.split()
        flipped.append(f"{label} {cr} {bytes(b ^ 1 for b in bytes.fromhex(secret)).hex()}")
    wrong = KeyLog()
    wrong.add_text("\n".join(flipped))
    other = KeyLog()
    other.add_text(f"CLIENT_RANDOM {'42' * 32} {'00' * 48}\n")
    for c in conns[:len(RUNS)]:
        bad = replay(c.events, wrong)
        assert bad.session.report.decryption == "wrong key" and not bad.to_client.bytes
        assert bad.session.report.failed_records > 0 and bad.session.report.decrypted_records == 0
        none = replay(c.events, other)
        assert none.session.report.decryption == "no key" and not none.to_server.bytes
        blind = replay(c.events, None)
        r = blind.session.report
        assert r.decryption == "no key log" and r.sni == "shop.example.com"
        assert r.version == c.session.report.version
        assert bool(r.server_certificates) == (r.version == "TLS 1.2")  # visible in 1.2 only


def test_no_key_material_in_any_report(real):
    client_keys, conns = real[2], real[5]
    secrets = [line.split()[2] for line in client_keys.read_text().splitlines()]
    for c in conns:
        text = repr(c.session.report) + str(c.session.report.problems) + repr(c.session)
        for s in secrets:
            assert s not in text and s[:16] not in text


def test_garbage_never_raises():
    import random
    rng = random.Random(7)
    log = KeyLog()
    for _ in range(300):
        s = TlsSession(log)
        for _ in range(5):
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            if rng.random() < 0.5:
                blob = bytes([rng.choice((20, 21, 22, 23)), 3, rng.randrange(5)]) + blob
            s.feed(rng.random() < 0.5, blob, 0.0)
            if rng.random() < 0.2:
                s.gap(rng.random() < 0.5, rng.randrange(1, 100), 0.0)
        s.finish()


def test_real_tls13_key_update(tmp_path):
    """`openssl s_client` sends a KeyUpdate on its `k` and `K` commands; the records after each are
    protected by the next application secret."""
    need_root()
    for tool in ("tcpdump", "openssl", "tshark"):
        need_binary(tool)
    for attempt in range(3):  # on a loaded machine s_client may read two stdin lines at once and
        # send "k" as data instead of a command: that run shows no KeyUpdate to test, so run again
        port = free_port()
        keys, pcap = tmp_path / f"ku{attempt}.keys", tmp_path / f"ku{attempt}.pcap"
        _key_update_session(tmp_path, port, keys, pcap)
        conns = tls_connections(pcap, KeyLog.from_files([keys]), {port})
        sent = conns[0].to_server.bytes if len(conns) == 1 else b""
        if sent and b"\nk\n" not in sent and b"\nK\n" not in sent:
            break
    assert len(conns) == 1
    c = conns[0]
    r = c.session.report
    assert r.key_updates == 2 and r.decryption == "decrypted" and r.failed_records == 0
    assert c.to_server.bytes == b"hello before\nafter one\nafter two\n"
    assert tshark_follow_tls(pcap, keys, 1, port)[c.client[1]][0] == c.to_server.bytes


def _key_update_session(tmp_path, port: int, keys, pcap) -> None:
    with openssl_server(tmp_path, port):
        pass  # only for the certificate
    cert, key = tmp_path / "certs" / "shop.example.com.crt", tmp_path / "certs" / "shop.example.com.key"
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
                               "-key", str(key), "-naccept", "1", "-keylogfile", str(keys)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with tcpdump_lo(pcap, [port]):
            client = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3"],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            for line in (b"hello before\n", b"k\n", b"after one\n", b"K\n", b"after two\n"):
                time.sleep(0.6)
                client.stdin.write(line)
                client.stdin.flush()
            time.sleep(0.5)
            client.stdin.close()
            client.wait(10)
    finally:
        server.kill()
        server.wait(5)
