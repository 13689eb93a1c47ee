"""TLS 1.2 / 1.3 record decryption for one connection, from a key log.

Both directions' in-order TCP bytes come in (``feed``/``gap``, as from tcp_reassembly); the
handshake is read in the clear as far as it goes (randoms, cipher suite, SNI, ALPN, TLS 1.2
certificates), the session's secrets are looked up by the ClientHello random, and application
data comes out, decrypted, to one sink per direction — the same ``data``/``gap`` interface the
cleartext analyzers read. A lost segment costs the record it fell in (the record's length is known,
so framing holds); when framing itself is lost, the next record is found by trying the AEAD, whose
tag says for certain. Nothing here raises on bad input, and nothing prints key material.

RFC 5246 section 6.2 (1.2 records), RFC 5288 (GCM), RFC 7905 (ChaCha20-Poly1305), RFC 8446
section 5 (1.3 records), 4.6.3 (KeyUpdate)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from meshscope.decoders.tls_hello import _extensions, parse_client_hello, parse_server_hello, version_name
from meshscope.decoders.tls_key_schedule import (
    SUITES,
    CipherSuite,
    suite_name,
    tls12_keys,
    tls13_next_secret,
    tls13_traffic_keys,
)
from meshscope.decoders.tls_keylog import KeyLog
from meshscope.decoders.wording import counted

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA = 20, 21, 22, 23
MAX_CIPHERTEXT = (1 << 14) + 2048  # RFC 5246: TLSCiphertext.length <= 2^14 + 2048
MAX_HANDSHAKE_MSG = 1 << 18  # certificate chains are the largest messages; bigger is damage
MAX_RESYNC_BUFFER = 1 << 17
MAX_SEQ_SKIP = 64  # records that may vanish in one hole before we stop guessing sequence numbers
MAX_FAILURES = 8  # consecutive records that do not authenticate before a direction gives up
# SHA-256("HelloRetryRequest"), the random a HelloRetryRequest carries (RFC 8446 section 4.1.3)
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
EXT_ALPN, EXT_PRE_SHARED_KEY = 16, 41


class PlainSink(Protocol):
    """Where one direction's decrypted application bytes go (tcp_reassembly.StreamSink's shape)."""

    def data(self, payload: bytes, ts: float) -> None: ...

    def gap(self, nbytes: int, ts: float) -> None: ...


@dataclass(slots=True)
class TlsReport:
    """What can be said about one TLS connection, with or without keys. Holds no key material."""

    version: str = ""
    cipher_suite: str = ""
    sni: str | None = None
    alpn_offered: list[str] = field(default_factory=list)
    alpn: str | None = None  # the server's choice (ServerHello in 1.2, EncryptedExtensions in 1.3)
    resumed: bool = False
    decryption: str = "no key log"  # decrypted | no key | wrong key | no key log | unsupported … | …
    records: int = 0
    decrypted_records: int = 0
    failed_records: int = 0
    lost_records: int = 0
    key_updates: int = 0
    server_certificates: list[bytes] = field(default_factory=list, repr=False)
    client_certificates: list[bytes] = field(default_factory=list, repr=False)
    problems: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.problems) < 20 and text not in self.problems:
            self.problems.append(text)


class _Cipher:
    """One direction's record protection: an AEAD, its IV and the record sequence number."""

    __slots__ = ("aead", "iv", "iv_int", "seq", "kind", "secret", "suite")

    def __init__(self, suite: CipherSuite, key: bytes, iv: bytes, kind: str, secret: bytes = b"") -> None:
        self.aead = suite.aead_for(key)
        self.iv = iv
        self.iv_int = int.from_bytes(iv, "big")
        self.seq = 0
        self.kind = kind  # "1.3", "1.2-gcm", "1.2-chacha"
        self.secret = secret  # 1.3 only: for KeyUpdate
        self.suite = suite

    def open(self, header: bytes, fragment: bytes, seq: int) -> bytes:
        """Decrypt one record's fragment at sequence number ``seq``; raises InvalidTag / ValueError."""
        if self.kind == "1.3":
            nonce = (self.iv_int ^ seq).to_bytes(12, "big")
            return self.aead.decrypt(nonce, fragment, header)
        if self.kind == "1.2-gcm":
            if len(fragment) < 24:
                raise ValueError("short")
            aad = seq.to_bytes(8, "big") + header[:3] + (len(fragment) - 24).to_bytes(2, "big")
            return self.aead.decrypt(self.iv + fragment[:8], fragment[8:], aad)
        if len(fragment) < 16:
            raise ValueError("short")
        aad = seq.to_bytes(8, "big") + header[:3] + (len(fragment) - 16).to_bytes(2, "big")
        return self.aead.decrypt((self.iv_int ^ seq).to_bytes(12, "big"), fragment, aad)

    def overhead(self) -> int:
        return 24 if self.kind == "1.2-gcm" else 17 if self.kind == "1.3" else 16


class _Direction:
    __slots__ = ("from_client", "buf", "skip", "framing_lost", "cipher", "pending", "hs", "encrypted",
                 "failures", "dead", "decrypted", "sink", "next_secret")

    def __init__(self, from_client: bool, sink: PlainSink | None) -> None:
        self.from_client = from_client
        self.buf = bytearray()
        self.skip = 0  # bytes of a lost record still to come
        self.framing_lost = False
        self.cipher: _Cipher | None = None
        self.pending: _Cipher | None = None  # 1.2: activated by ChangeCipherSpec
        self.next_secret: bytes | None = None  # 1.3: the application secret after Finished
        self.hs = bytearray()  # handshake messages being assembled
        self.encrypted = False
        self.failures = 0
        self.dead = False
        self.decrypted = 0
        self.sink = sink


class TlsSession:
    """One TLS connection seen from both directions."""

    def __init__(self, keylog: KeyLog | None, client_sink: PlainSink | None = None,
                 server_sink: PlainSink | None = None) -> None:
        self.keylog = keylog
        self.report = TlsReport()
        self.client = _Direction(True, client_sink)
        self.server = _Direction(False, server_sink)
        self.client_random: bytes | None = None  # public (it is on the wire), the key-log index
        self.server_random: bytes | None = None
        self.suite: CipherSuite | None = None
        self.suite_code: int | None = None
        self.tls13 = False
        self._session_id = b""
        self._keyed = False

    # -- input ------------------------------------------------------------------------------------
    def feed(self, from_client: bool, data: bytes, ts: float) -> None:
        d = self.client if from_client else self.server
        if d.skip:
            if len(data) <= d.skip:
                d.skip -= len(data)
                return
            data = data[d.skip:]
            d.skip = 0
        if d.buf or d.framing_lost:
            d.buf += data
            if d.framing_lost:
                self._resync(d, ts)
            if not d.framing_lost:
                self._records(d, ts)
            return
        # the common case: whole records straight from the segment, only an unfinished tail is kept
        pos = self._scan(d, data, ts)
        if pos is not None and pos < len(data):
            d.buf += data[pos:]

    def gap(self, from_client: bool, nbytes: int, ts: float) -> None:
        """``nbytes`` of this direction were lost from the capture."""
        d = self.client if from_client else self.server
        if d.framing_lost:
            d.buf.clear()
            self._plain_gap(d, nbytes, ts)
            return
        if d.skip:
            if nbytes < d.skip:
                d.skip -= nbytes
                return
            nbytes -= d.skip
            d.skip = 0
            if nbytes == 0:
                return
            self._lose_framing(d, nbytes, ts)
            return
        if len(d.buf) >= 5:
            rlen = struct.unpack_from("!H", d.buf, 3)[0]
            remaining = 5 + rlen - len(d.buf)
            if nbytes <= remaining:  # the hole is inside this record: it is lost, framing holds
                d.skip = remaining - nbytes
                d.buf.clear()
                self._lost_record(d, rlen, ts)
                return
        self._lose_framing(d, nbytes, ts)

    def finish(self) -> TlsReport:
        r = self.report
        for d in (self.client, self.server):
            if d.buf and not d.framing_lost:
                r.note(f"{'client' if d.from_client else 'server'} stream ends inside a TLS record "
                       f"({counted(len(d.buf), 'byte')} held)")
                d.buf.clear()
        if r.decryption == "decrypted" and r.failed_records and not r.decrypted_records:
            r.decryption = "wrong key"
        return r

    # -- records --------------------------------------------------------------------------------
    def _records(self, d: _Direction, ts: float) -> None:
        pos = self._scan(d, d.buf, ts)
        if pos:
            del d.buf[:pos]

    def _scan(self, d: _Direction, src: bytes | bytearray, ts: float) -> int | None:
        """Handle the whole records in ``src``; how far that got (None: framing was lost, and what
        was left is in the direction's buffer, being resynchronised)."""
        pos = 0
        n = len(src)
        record = self._record
        while n - pos >= 5:
            ctype = src[pos]
            rlen = (src[pos + 3] << 8) | src[pos + 4]
            if not (20 <= ctype <= 24 and src[pos + 1] == 3 and rlen <= MAX_CIPHERTEXT):
                if src is d.buf:
                    del d.buf[:pos]
                else:
                    d.buf += src[pos:]
                self.report.note(f"{'client' if d.from_client else 'server'} bytes are not TLS records")
                self._lose_framing(d, 0, ts)
                return None
            end = pos + 5 + rlen
            if end > n:
                break
            record(d, ctype, bytes(src[pos:pos + 5]), bytes(src[pos + 5:end]), ts)
            pos = end
        return pos

    def _record(self, d: _Direction, ctype: int, header: bytes, fragment: bytes, ts: float) -> None:
        r = self.report
        r.records += 1
        if ctype == CT_CCS:
            if not self.tls13:  # TLS 1.3 sends one only for middleboxes
                d.encrypted = True
                d.hs.clear()
                d.cipher, d.pending = d.pending, None
            return
        if ctype == CT_APPDATA and self.tls13:
            d.encrypted = True
        if not d.encrypted:
            if ctype == CT_HANDSHAKE:
                self._handshake_bytes(d, fragment)
            elif ctype == CT_APPDATA:
                r.note("application data before any handshake was seen (capture started mid-connection)")
                if r.decryption == "no key log" and self.keylog is not None:
                    r.decryption = "handshake not captured"
            return
        c = d.cipher
        if c is None or d.dead:
            return
        try:
            plain = c.open(header, fragment, c.seq)
        except (InvalidTag, ValueError):
            plain = self._retry(d, header, fragment)
            if plain is None:
                c.seq += 1
                r.failed_records += 1
                d.failures += 1
                if d.failures >= MAX_FAILURES:
                    d.dead = True
                    r.note(f"{'client' if d.from_client else 'server'} records stopped authenticating; "
                           "gave up decrypting that direction")
                if not d.decrypted:
                    r.decryption = "wrong key"
                return
            c = d.cipher
        else:
            c.seq += 1
        d.failures = 0
        d.decrypted += 1
        r.decrypted_records += 1
        if r.decryption == "wrong key" and self.client.decrypted + self.server.decrypted:
            r.decryption = "decrypted"
        if c.kind == "1.3":
            end = len(plain)
            while end and plain[end - 1] == 0:
                end -= 1
            if not end:
                r.note("TLS 1.3 record without a content type")
                return
            ctype = plain[end - 1]
            plain = plain[:end - 1]
        if ctype == CT_APPDATA:
            if d.sink is not None and plain:
                d.sink.data(plain, ts)
        elif ctype == CT_HANDSHAKE:
            self._handshake_bytes(d, plain)
        # alerts (close_notify) carry nothing for the analyzers

    def _retry(self, d: _Direction, header: bytes, fragment: bytes) -> bytes | None:
        """TLS 1.3: a record that fails under the handshake key may be the first under the application
        key (the Finished was lost); switch if it authenticates there."""
        if self.tls13 and d.next_secret is not None and self.suite is not None:
            nxt = self._cipher13(d.next_secret)
            try:
                plain = nxt.open(header, fragment, 0)
            except (InvalidTag, ValueError):
                return None
            nxt.seq = 1
            d.cipher, d.next_secret = nxt, None
            self.report.note("switched to application keys without seeing a Finished")
            return plain
        return None

    def _lost_record(self, d: _Direction, rlen: int, ts: float) -> None:
        self.report.lost_records += 1
        if d.encrypted and d.cipher is not None:
            d.cipher.seq += 1
            self._plain_gap(d, max(0, rlen - d.cipher.overhead()), ts)

    def _plain_gap(self, d: _Direction, nbytes: int, ts: float) -> None:
        if d.sink is not None and d.encrypted and nbytes:
            d.sink.gap(nbytes, ts)

    def _lose_framing(self, d: _Direction, nbytes: int, ts: float) -> None:
        d.framing_lost = True
        self.report.lost_records += 1
        self._plain_gap(d, nbytes or 1, ts)
        if d.buf:
            self._resync(d, ts)
            if not d.framing_lost:
                self._records(d, ts)

    def _resync(self, d: _Direction, ts: float) -> None:
        """Find the next record boundary: a plausible header whose record authenticates (with keys),
        or a chain of two plausible headers (without)."""
        buf = d.buf
        start = 0
        while True:
            i = buf.find(b"\x17\x03\x03", start)
            if i < 0 or len(buf) - i < 5:
                break
            rlen = (buf[i + 3] << 8) | buf[i + 4]
            end = i + 5 + rlen
            if rlen <= MAX_CIPHERTEXT and rlen >= 17:
                if end > len(buf):
                    if len(buf) > MAX_RESYNC_BUFFER:
                        start = i + 1
                        continue
                    del buf[:i]
                    return  # wait for the rest of this candidate
                if self._accepts(d, bytes(buf[i:i + 5]), bytes(buf[i + 5:end]), end):
                    del buf[:i]
                    d.framing_lost = False
                    self.report.note("resynchronised on a TLS record boundary after lost bytes")
                    return
            start = i + 1
        keep = 4 if len(buf) > 4 else len(buf)
        del buf[:len(buf) - keep]

    def _accepts(self, d: _Direction, header: bytes, fragment: bytes, end: int) -> bool:
        c = d.cipher
        if c is None or d.dead:
            nxt = d.buf[end:end + 3]
            return len(nxt) == 0 or nxt in (b"\x17\x03\x03", b"\x15\x03\x03")
        for seq in range(c.seq, c.seq + MAX_SEQ_SKIP):
            try:
                c.open(header, fragment, seq)
            except (InvalidTag, ValueError):
                continue
            self.report.lost_records += seq - c.seq
            c.seq = seq  # _record decrypts it again at this number
            return True
        return False

    # -- handshake ------------------------------------------------------------------------------
    def _handshake_bytes(self, d: _Direction, data: bytes) -> None:
        hs = d.hs
        hs += data
        while len(hs) >= 4:
            mlen = int.from_bytes(hs[1:4], "big")
            if mlen > MAX_HANDSHAKE_MSG:
                self.report.note(f"handshake message claims {counted(mlen, 'byte')}")
                hs.clear()
                return
            if len(hs) < 4 + mlen:
                return
            mtype, body = hs[0], bytes(hs[4:4 + mlen])
            del hs[:4 + mlen]
            try:
                self._message(d, mtype, body)
            except (ValueError, IndexError, struct.error) as e:
                self.report.note(f"handshake message {mtype} unreadable: {e}")

    def _message(self, d: _Direction, mtype: int, body: bytes) -> None:
        r = self.report
        if mtype == 1 and d.from_client:  # ClientHello
            hello = parse_client_hello(body)
            self.client_random = body[2:34]
            self._session_id = body[35:35 + body[34]]
            r.sni, r.alpn_offered = hello.sni, hello.alpn
        elif mtype == 2 and not d.from_client:  # ServerHello
            self._server_hello(body)
        elif mtype == 8:  # EncryptedExtensions (1.3): the chosen ALPN lives here
            r.alpn = _alpn_choice(_extensions(body, 0)) or r.alpn
        elif mtype == 11:  # Certificate
            certs = _certificates(body, self.tls13)
            if d.from_client:
                r.client_certificates = certs
            else:
                r.server_certificates = certs
        elif mtype == 20 and self.tls13:  # Finished: the next record uses the application secret
            if d.next_secret is not None:
                d.cipher, d.next_secret = self._cipher13(d.next_secret), None
        elif mtype == 24 and self.tls13 and d.cipher is not None:  # KeyUpdate
            d.cipher = self._cipher13(tls13_next_secret(d.cipher.secret, d.cipher.suite))
            r.key_updates += 1

    def _server_hello(self, body: bytes) -> None:
        r = self.report
        if body[2:34] == HRR_RANDOM:
            r.note("HelloRetryRequest")
            return
        self.server_random = body[2:34]
        sid_end = 35 + body[34]
        self.suite_code = struct.unpack_from("!H", body, sid_end)[0]
        exts = _extensions(body, sid_end + 3)
        r.version = parse_server_hello(body).version
        r.cipher_suite = suite_name(self.suite_code)
        self.tls13 = r.version == "TLS 1.3"
        r.alpn = _alpn_choice(exts)
        if self.tls13:
            r.resumed = EXT_PRE_SHARED_KEY in exts
        else:
            sid = body[35:sid_end]
            r.resumed = bool(sid) and sid == self._session_id
        self._keys()

    def _keys(self) -> None:
        """Look the session up in the key log and arm both directions."""
        r = self.report
        if self.keylog is None:
            r.decryption = "no key log"
            return
        if r.version not in ("TLS 1.2", "TLS 1.3"):
            r.decryption = f"unsupported version {r.version}"
            return
        suite = SUITES.get(self.suite_code or 0)
        if suite is None or suite.tls13 != self.tls13:
            r.decryption = f"unsupported cipher suite {r.cipher_suite}"
            return
        self.suite = suite
        cr = self.client_random
        if cr is None:
            r.decryption = "handshake not captured"
            r.note("ServerHello without a ClientHello: the session cannot be looked up")
            return
        if self.tls13:
            secrets = self.keylog.tls13_secrets(cr)
            if not any(k in secrets for k in ("CLIENT_TRAFFIC_SECRET_0", "CLIENT_HANDSHAKE_TRAFFIC_SECRET")):
                r.decryption = "no key"
                return
            if any(len(s) != suite.hash_len for s in secrets.values()):
                r.decryption = "wrong key"
                r.note("secret length does not match the cipher suite's hash")
                return
            for d, side in ((self.client, "CLIENT"), (self.server, "SERVER")):
                hs_secret = secrets.get(f"{side}_HANDSHAKE_TRAFFIC_SECRET")
                app_secret = secrets.get(f"{side}_TRAFFIC_SECRET_0")
                if hs_secret is not None:
                    d.cipher, d.next_secret = self._cipher13(hs_secret), app_secret
                elif app_secret is not None:  # handshake secrets not logged: skip the handshake
                    d.cipher = None
                    d.next_secret = app_secret
                    d.cipher = self._cipher13(app_secret)
                    r.note(f"{side.lower()} handshake secret not in the key log")
        else:
            master = self.keylog.master_secret(cr)
            if master is None:
                r.decryption = "no key"
                return
            k = tls12_keys(master, cr, self.server_random or b"", suite)
            kind = "1.2-chacha" if suite.aead == "ChaCha20-Poly1305" else "1.2-gcm"
            self.client.pending = _Cipher(suite, k.client_key, k.client_iv, kind)
            self.server.pending = _Cipher(suite, k.server_key, k.server_iv, kind)
        self._keyed = True
        r.decryption = "decrypted"

    def _cipher13(self, secret: bytes) -> _Cipher:
        assert self.suite is not None
        key, iv = tls13_traffic_keys(secret, self.suite)
        return _Cipher(self.suite, key, iv, "1.3", secret)


def _alpn_choice(exts: dict[int, bytes]) -> str | None:
    al = exts.get(EXT_ALPN)
    if al and len(al) >= 3:
        return al[3:3 + al[2]].decode("ascii", "replace")
    return None


def _certificates(body: bytes, tls13: bool) -> list[bytes]:
    """DER certificates of a Certificate message, leaf first (RFC 5246 7.4.2 / RFC 8446 4.4.2)."""
    pos = 1 + body[0] if tls13 else 0  # 1.3: certificate_request_context
    total = int.from_bytes(body[pos:pos + 3], "big")
    pos += 3
    end = min(len(body), pos + total)
    out: list[bytes] = []
    while pos + 3 <= end and len(out) < 16:
        n = int.from_bytes(body[pos:pos + 3], "big")
        out.append(body[pos + 3:pos + 3 + n])
        pos += 3 + n
        if tls13:
            pos += 2 + int.from_bytes(body[pos:pos + 2], "big")  # per-certificate extensions
    return out


__all__ = ["TlsSession", "TlsReport", "PlainSink", "version_name"]
