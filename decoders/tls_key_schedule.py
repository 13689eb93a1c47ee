"""From logged secrets to record keys: the TLS 1.2 PRF (RFC 5246 section 5, 6.3) and the TLS 1.3 key
schedule's traffic-key and KeyUpdate steps (RFC 8446 section 7.1-7.3), for the AEAD suites Envoy
(BoringSSL), Go and OpenSSL negotiate by default."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """An AEAD suite: its IANA code and name, the AEAD, key and fixed-IV lengths, and the hash."""

    code: int
    name: str
    aead: str  # "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305"
    key_len: int
    hash: str  # "sha256" / "sha384": the PRF or HKDF hash
    tls13: bool

    @property
    def fixed_iv_len(self) -> int:
        """TLS 1.2 GCM keeps 4 implicit bytes and sends 8 (RFC 5288); ChaCha20 and TLS 1.3 use 12."""
        return 4 if (not self.tls13 and self.aead != "ChaCha20-Poly1305") else 12

    @property
    def hash_len(self) -> int:
        return 48 if self.hash == "sha384" else 32

    def aead_for(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return ChaCha20Poly1305(key) if self.aead == "ChaCha20-Poly1305" else AESGCM(key)


def _suites(*rows: tuple) -> dict[int, CipherSuite]:
    return {r[0]: CipherSuite(*r) for r in rows}


SUITES = _suites(
    (0x1301, "TLS_AES_128_GCM_SHA256", "AES-128-GCM", 16, "sha256", True),
    (0x1302, "TLS_AES_256_GCM_SHA384", "AES-256-GCM", 32, "sha384", True),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305", 32, "sha256", True),
    (0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "AES-128-GCM", 16, "sha256", False),
    (0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "AES-256-GCM", 32, "sha384", False),
    (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "AES-128-GCM", 16, "sha256", False),
    (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "AES-256-GCM", 32, "sha384", False),
    (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305", 32, "sha256", False),
    (0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305", 32, "sha256", False),
    (0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", "AES-128-GCM", 16, "sha256", False),
    (0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384", "AES-256-GCM", 32, "sha384", False),
)


def suite_name(code: int) -> str:
    s = SUITES.get(code)
    return s.name if s else f"0x{code:04x}"


# -- TLS 1.2 -------------------------------------------------------------------------------------
def prf_tls12(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str = "sha256") -> bytes:
    """PRF(secret, label, seed) = P_hash(secret, label + seed), RFC 5246 section 5."""
    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return bytes(out[:length])


@dataclass(frozen=True, slots=True)
class Tls12Keys:
    client_key: bytes
    server_key: bytes
    client_iv: bytes
    server_iv: bytes

    def __repr__(self) -> str:
        return "Tls12Keys(…)"


def tls12_keys(master: bytes, client_random: bytes, server_random: bytes, suite: CipherSuite) -> Tls12Keys:
    """Split the key block (RFC 5246 section 6.3; AEAD suites have no MAC keys)."""
    k, iv = suite.key_len, suite.fixed_iv_len
    block = prf_tls12(master, b"key expansion", server_random + client_random, 2 * (k + iv), suite.hash)
    return Tls12Keys(block[:k], block[k:2 * k], block[2 * k:2 * k + iv], block[2 * k + iv:])


# -- TLS 1.3 -------------------------------------------------------------------------------------
def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int, hash_name: str) -> bytes:
    """HKDF-Expand-Label, RFC 8446 section 7.1 (``tls13 `` prefix added here)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(_HASHES[hash_name](), length, info).derive(secret)


def tls13_traffic_keys(secret: bytes, suite: CipherSuite) -> tuple[bytes, bytes]:
    """(key, iv) for records protected by a traffic secret, RFC 8446 section 7.3."""
    return (hkdf_expand_label(secret, b"key", b"", suite.key_len, suite.hash),
            hkdf_expand_label(secret, b"iv", b"", 12, suite.hash))


def tls13_next_secret(secret: bytes, suite: CipherSuite) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate, RFC 8446 section 7.2."""
    return hkdf_expand_label(secret, b"traffic upd", b"", suite.hash_len, suite.hash)
