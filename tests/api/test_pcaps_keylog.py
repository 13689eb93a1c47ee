"""A TLS key log sent beside the captures (multipart part ``keylog``): the analysis reads through TLS
with it, the upload's status says only that one came, and the file is gone once the analysis ends.
Real traffic: curl and `openssl s_server` on loopback, captured with real tcpdump."""

from __future__ import annotations

import pytest

from tests.api.conftest import wait_done
from tests.conftest import free_port, need_binary, need_root
from tests.decoders.tls_lab import curl, openssl_server, tcpdump_lo

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def tls_capture(tmp_path_factory):
    need_root()
    for tool in ("tcpdump", "openssl", "curl"):
        need_binary(tool)
    d = tmp_path_factory.mktemp("tlsup")
    port = free_port()
    keys, pcap = d / "curl.keys", d / "tls.pcap"
    with openssl_server(d, port) as www:
        (www / "a.txt").write_text("through TLS\n")
        with tcpdump_lo(pcap, [port]):
            for v in (["--tlsv1.3"], ["--tlsv1.2", "--tls-max", "1.2"]):
                curl(f"https://shop.example.com:{port}/a.txt", keys, *v, port=port)
    return pcap, keys


def test_keylog_part_decrypts_and_is_deleted(api, tls_capture):
    pcap, keys = tls_capture
    secrets = [line.split()[2] for line in keys.read_text().splitlines() if line.strip()]
    with api.client() as c:
        r = c.post("/api/pcaps", files=[("file", ("tls.pcap", pcap.read_bytes(), "application/octet-stream")),
                                        ("keylog", ("curl.keys", keys.read_bytes(), "text/plain"))])
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["keylog"] is True and [f["name"] for f in accepted["files"]] == ["tls.pcap"]
        status = wait_done(c, accepted["id"])
        assert status["state"] == "done", status
        flows = c.get(f"/api/pcaps/{accepted['id']}/flows")
        http = [e for e in flows.json()["exchanges"] if e["exchange_type"] == "http"]
        assert sorted((e["uri"], e["tls_version"], e["tls_decryption"]) for e in http) == [
            ("/a.txt", "TLS 1.2", "decrypted"), ("/a.txt", "TLS 1.3", "decrypted")]
        texts = [r.text, flows.text, c.get(f"/api/pcaps/{accepted['id']}").text, c.get("/api/pcaps").text]
    folder = api.settings.data_dir / "pcaps" / accepted["id"]
    assert not (folder / "keylog.secret").exists()
    on_disk = [p.read_bytes().decode("utf-8", "replace") for p in folder.iterdir() if p.suffix != ".cap"]
    for text in texts + on_disk:
        for s in secrets:
            assert s not in text


def test_without_keylog_tls_stays_a_handshake(api, tls_capture):
    pcap, _keys = tls_capture
    with api.client() as c:
        part = ("file", ("tls.pcap", pcap.read_bytes(), "application/octet-stream"))
        r = c.post("/api/pcaps", files=[part])
        assert r.status_code == 202 and r.json()["keylog"] is False
        wait_done(c, r.json()["id"])
        ex = c.get(f"/api/pcaps/{r.json()['id']}/flows").json()["exchanges"]
        assert {e["exchange_type"] for e in ex} == {"tls"} and all(e["tls_decryption"] is None for e in ex)


def test_keylog_alone_or_twice_is_refused(api, tls_capture):
    pcap, keys = tls_capture
    with api.client() as c:
        r = c.post("/api/pcaps", files=[("keylog", ("k", keys.read_bytes(), "text/plain"))])
        assert r.status_code == 400 and "no capture" in r.text
        r = c.post("/api/pcaps", files=[("file", ("t.pcap", pcap.read_bytes(), "application/octet-stream")),
                                        ("keylog", ("k", keys.read_bytes(), "text/plain")),
                                        ("keylog", ("k2", keys.read_bytes(), "text/plain"))])
        assert r.status_code == 400 and "one key-log part" in r.text
    assert not any((api.settings.data_dir / "pcaps").glob("*/keylog.secret"))
