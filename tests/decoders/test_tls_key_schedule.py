"""The TLS 1.2 PRF and TLS 1.3 key derivation against published test vectors."""

from __future__ import annotations

from meshscope.decoders.tls_key_schedule import (
    SUITES,
    hkdf_expand_label,
    prf_tls12,
    suite_name,
    tls12_keys,
    tls13_next_secret,
    tls13_traffic_keys,
)


def test_tls12_prf_sha256_vector():
    """The P_SHA256 vector circulated on the IETF TLS list (also used by Go's and OpenSSL's tests)."""
    out = prf_tls12(bytes.fromhex("9bbe436ba940f017b17652849a71db35"), b"test label",
                    bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100)
    assert out.hex() == (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af"
        "0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701"
        "87347b66")


def test_tls13_traffic_keys_rfc8448():
    """RFC 8448 section 3 (simple 1-RTT handshake): the server handshake traffic secret's key and iv."""
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    key, iv = tls13_traffic_keys(secret, SUITES[0x1301])
    assert key.hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert iv.hex() == "5d313eb2671276ee13000b30"


def test_key_update_is_expand_label_traffic_upd():
    s = SUITES[0x1302]
    secret = bytes(range(48))
    assert tls13_next_secret(secret, s) == hkdf_expand_label(secret, b"traffic upd", b"", 48, "sha384")
    assert len(tls13_traffic_keys(secret, s)[0]) == 32


def test_tls12_key_block_lengths_and_repr():
    gcm, chacha = SUITES[0xC02F], SUITES[0xCCA8]
    k = tls12_keys(bytes(48), bytes(32), bytes(32), gcm)
    assert (len(k.client_key), len(k.client_iv)) == (16, 4) and k.client_key != k.server_key
    k2 = tls12_keys(bytes(48), bytes(32), bytes(32), chacha)
    assert (len(k2.client_key), len(k2.server_iv)) == (32, 12)
    assert repr(k) == "Tls12Keys(…)"
    assert suite_name(0x1303) == "TLS_CHACHA20_POLY1305_SHA256" and suite_name(0x000A) == "0x000a"
