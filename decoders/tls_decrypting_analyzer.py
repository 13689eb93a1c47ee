"""TLS connections when a key log was given: the hellos become a TLS Exchange as without keys, and the
records are decrypted (decoders.tls_decrypt) and handed to the same analyzers cleartext gets
(HTTP/1, HTTP/2 + gRPC, chosen by decoders.detect from the first decrypted bytes), whose Exchanges
then say they were decrypted, with TLS version and cipher suite.

A session the key log has no secrets for stays one TLS Exchange saying "no key", and its bytes are
not reassembled any further."""

from __future__ import annotations

from meshscope.decoders.analyzer import Analyzer, Host
from meshscope.decoders.istio_mtls import leaf_identity
from meshscope.decoders.tls_decrypt import TlsSession
from meshscope.decoders.tls_keylog import KeyLog

from meshscope.model import Connection, Exchange

SETTLED = ("no key", "no key log", "handshake not captured")  # nothing more to read: stop early


class _Feed:
    """One direction's ciphertext into the session; then whatever the session produced moves on."""

    __slots__ = ("analyzer", "from_client")

    def __init__(self, analyzer: DecryptingTlsAnalyzer, from_client: bool) -> None:
        self.analyzer = analyzer
        self.from_client = from_client

    def data(self, payload: bytes, ts: float) -> None:
        a = self.analyzer
        if a.done:
            return
        if a.tls.request_time is None and self.from_client:
            a.tls.request_time = ts
        elif a.tls.response_time is None and not self.from_client:
            a.tls.response_time = ts
        a.session.feed(self.from_client, payload, ts)
        a.moved_on()

    def gap(self, nbytes: int, ts: float) -> None:
        a = self.analyzer
        if not a.done:
            a.session.gap(self.from_client, nbytes, ts)
            a.moved_on()


class _Plain:
    """The first decrypted bytes of either direction choose the inner analyzer (decoders.detect)."""

    __slots__ = ("analyzer", "from_client")

    def __init__(self, analyzer: DecryptingTlsAnalyzer, from_client: bool) -> None:
        self.analyzer = analyzer
        self.from_client = from_client

    def data(self, payload: bytes, ts: float) -> None:
        from meshscope.decoders.detect import choose_analyzer

        inner_host = self.analyzer.inner_host
        inner = choose_analyzer(inner_host, self.from_client, payload)
        inner_host.hand_over(inner)
        if not inner.done:
            (inner.client if self.from_client else inner.server).data(payload, ts)

    def gap(self, nbytes: int, ts: float) -> None:
        pass


class _InnerHost:
    """The host the inner (plaintext) analyzer runs on: same connection, its own outbox, so that its
    Exchanges can be marked decrypted before they leave."""

    __slots__ = ("outer", "conn", "ready", "keylog")

    def __init__(self, outer: DecryptingTlsAnalyzer, conn: Connection) -> None:
        self.outer = outer
        self.conn = conn
        self.ready: list[Exchange] = []
        self.keylog = None  # TLS inside TLS is only read as hellos

    def note_damage(self, text: str) -> None:
        self.outer.host.note_damage(text)

    def hand_over(self, analyzer: Analyzer) -> None:
        outer = self.outer
        old, outer.inner = outer.inner, analyzer
        if old is not None:
            old.release()
        outer.session.client.sink = analyzer.client
        outer.session.server.sink = analyzer.server


class DecryptingTlsAnalyzer(Analyzer):
    protocol = "tls"
    __slots__ = ("session", "tls", "inner", "inner_host", "settled", "identities")

    def __init__(self, host: Host, keylog: KeyLog, client_hello_seen: bool = True) -> None:
        super().__init__(host)
        self.tls: Exchange = self.new_exchange("tls", None)
        self.inner: Analyzer | None = None
        self.inner_host = _InnerHost(self, host.conn)
        self.session = TlsSession(keylog, _Plain(self, True), _Plain(self, False))
        self.client = _Feed(self, True)
        self.server = _Feed(self, False)
        self.settled = False
        self.identities: tuple[str | None, str | None] | None = None  # SPIFFE ids, read once
        if not client_hello_seen:
            self.damage(self.tls, True, "ClientHello not captured")

    def held(self) -> int:
        """Unfinished records (handshake messages are small and short-lived: not counted)."""
        s, inner = self.session, self.inner
        n = len(s.client.buf) + len(s.server.buf)
        return n if inner is None else n + inner.held()

    def busy(self) -> bool:
        return True

    def cut_short(self, text: str) -> None:
        if self.inner is not None and self.inner.busy():
            self.inner.cut_short(text)
            self._pass_inner()
        self.damage(self.tls, True, text)

    def moved_on(self) -> None:
        """After the session read more: hellos into the TLS Exchange, inner Exchanges out, marked."""
        r = self.session.report
        if not self.settled and (r.version or r.decryption == "handshake not captured"):
            self.settled = True
            self._fill_tls()
            if r.decryption in SETTLED or r.decryption.startswith("unsupported"):
                self._finish()  # nothing to decrypt: say so now, and stop reading this connection
                return
        if self.inner_host.ready:
            self._pass_inner()
        if self.session.client.dead and self.session.server.dead:
            self._finish()

    def _fill_tls(self) -> None:
        r, ex = self.session.report, self.tls
        ex.sni, ex.alpn = r.sni, list(r.alpn_offered)
        ex.tls_version, ex.tls_cipher_suite = r.version or None, r.cipher_suite or None
        ex.tls_decryption = r.decryption
        if not ex.tls_offered_versions:
            ex.tls_offered_versions = [r.version] if r.version else []

    def _pass_inner(self) -> None:
        r = self.session.report
        # the leg's marks go on every request read inside it: the graphs label a mesh leg from them
        client, server = self._identities()
        for ex in self.inner_host.ready:
            ex.tls_version = r.version or None
            ex.tls_cipher_suite = r.cipher_suite or None
            ex.tls_decryption = "decrypted"
            ex.sni = ex.sni or r.sni
            ex.alpn = self.tls.alpn
            ex.tls_client_identity, ex.tls_server_identity = client, server
            self.emit(ex)
        self.inner_host.ready.clear()

    def _identities(self) -> tuple[str | None, str | None]:
        """The SPIFFE ids of both ends from the handshake's certificates, parsed once per connection
        (application data follows the handshake: by then they have been read)."""
        if self.identities is None:
            r = self.session.report
            client, server = leaf_identity(r.client_certificates), leaf_identity(r.server_certificates)
            self.identities = (client.uri if client else None, server.uri if server else None)
        return self.identities

    def _finish(self) -> None:
        if self.done:
            return
        r = self.session.finish()
        self._fill_tls()
        ex = self.tls
        if ex.tls_version is None and ex.sni is None and not r.records:
            ex.tls_decryption = None
        ex.tls_client_identity, ex.tls_server_identity = self._identities()
        if r.lost_records:
            ex.damage.append(f"{r.lost_records} TLS records lost in gaps")
        for p in r.problems[:5]:
            ex.damage.append(p)
        self.emit(ex)
        self.done = True

    def close(self, ts: float, why: str = "capture-end") -> None:
        if self.done:
            return
        if self.inner is not None:
            self.inner.close(ts, why)
            self._pass_inner()
        self._finish()

    def release(self) -> None:
        if self.inner is not None:
            self.inner.release()
            self.inner = None
        self.session.client.sink = self.session.server.sink = None
        self.inner_host.outer = None  # type: ignore[assignment]
        super().release()
