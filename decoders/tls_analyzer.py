"""TLS connections: the ClientHello and ServerHello (decoders.tls_hello), paired into one Exchange
with SNI, ALPN and versions. Nothing after the hellos is read."""

from __future__ import annotations

import struct

from meshscope.decoders.analyzer import Analyzer, Host
from meshscope.decoders.tls_hello import HelloAssembler, parse_client_hello, parse_server_hello
from meshscope.decoders.wording import counted

from meshscope.model import Exchange


class _HelloSide:
    """One direction's bytes into the analyzer."""

    __slots__ = ("analyzer", "from_client", "hello")

    def __init__(self, analyzer: TlsAnalyzer, from_client: bool) -> None:
        self.analyzer = analyzer
        self.from_client = from_client
        self.hello = HelloAssembler()

    def data(self, payload: bytes, ts: float) -> None:
        if not self.analyzer.done:
            self.analyzer.hello_data(self, payload, ts)

    def gap(self, nbytes: int, ts: float) -> None:
        side = self.hello
        if not self.analyzer.done and not side.done and not side.failed:
            read = self.analyzer.cut_hello(self, nbytes)
            side.failed = f"{counted(nbytes, 'byte')} lost inside the hello{read}"
            self.analyzer.damage(self.analyzer.tls, self.from_client, side.failed)
            self.analyzer.check_done()


class TlsAnalyzer(Analyzer):
    protocol = "tls"
    __slots__ = ("tls",)

    def __init__(self, host: Host, client_hello_seen: bool = True) -> None:
        super().__init__(host)
        self.tls: Exchange | None = None
        self.client = client = _HelloSide(self, True)
        self.server = _HelloSide(self, False)
        if not client_hello_seen:
            client.hello.failed = "ClientHello not captured"
            self.damage(None, True, "ClientHello not captured")

    def held(self) -> int:
        c, s = self.client.hello, self.server.hello  # type: ignore[attr-defined]
        return len(c.records) + len(c.handshake) + len(s.records) + len(s.handshake)

    def busy(self) -> bool:
        return self.tls is not None

    def cut_short(self, text: str) -> None:
        self.damage(self.tls, True, text)

    def hello_data(self, side: _HelloSide, payload: bytes, ts: float) -> None:
        hello, from_client = side.hello, side.from_client
        if hello.done or hello.failed:
            return
        first = not hello.records and not hello.handshake
        if self.tls is None and first:
            self.tls = self.new_exchange("tls", ts if from_client else None)
        if not from_client and first:
            self.tls.response_time = ts  # type: ignore[union-attr]
        msg = hello.feed(payload)
        ex = self.tls
        if msg is not None and ex is not None:
            mtype, body = msg
            try:
                if from_client and mtype == 1:
                    ch = parse_client_hello(body)
                    ex.sni, ex.alpn, ex.tls_offered_versions = ch.sni, ch.alpn, ch.versions
                elif not from_client and mtype == 2:
                    ex.tls_version = parse_server_hello(body).version
                else:
                    hello.failed = f"handshake message type {mtype} where a hello should be"
            except (ValueError, IndexError) as e:
                hello.failed = f"bad {'Client' if from_client else 'Server'}Hello: {e}"
        if hello.failed:
            self.damage(self.tls, from_client, hello.failed)
        self.check_done()

    def cut_hello(self, side: _HelloSide, nbytes: int) -> str:
        """A hello cut short (a small snaplen keeps each segment's first bytes): what the kept bytes
        still tell, the extensions kept whole (SNI, ALPN, versions). Returns a note for the damage."""
        kept, ex = side.hello.kept(), self.tls
        if kept is None or ex is None:
            return ""
        mtype, body = kept
        try:
            if side.from_client and mtype == 1:
                ch = parse_client_hello(body, whole_only=True)
                ex.sni, ex.alpn, ex.tls_offered_versions = ch.sni, ch.alpn, ch.versions
                found = [what for what, v in (("SNI", ch.sni), ("ALPN", ch.alpn)) if v]
            elif not side.from_client and mtype == 2:
                ex.tls_version = parse_server_hello(body, whole_only=True).version
                found = ["version"]
            else:
                return ""
        except (ValueError, IndexError, struct.error):
            return ""
        return f"; {' and '.join(found)} read from the {counted(len(body), 'byte')} kept" if found else ""

    def check_done(self) -> None:
        c, s = self.client.hello, self.server.hello  # type: ignore[attr-defined]
        if (c.done or c.failed) and (s.done or s.failed):
            self.done = True
            if self.tls is not None:
                self.emit(self.tls)
                self.tls = None

    def close(self, ts: float, why: str = "capture-end") -> None:
        if self.tls is not None:
            self.emit(self.tls)
            self.tls = None
        self.done = True
