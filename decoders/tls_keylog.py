"""NSS key-log files (``SSLKEYLOGFILE``: what Envoy's ``key_log``, curl, browsers, Go and BoringSSL
write): secrets indexed by the ClientHello's random.

Key material is a secret: nothing here prints, logs or reprs it. Problems name a line number and a
reason, never the line's content."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshscope.errors import UserError

# TLS 1.3 labels, as NSS spells them; CLIENT_RANDOM carries a TLS 1.2 (or earlier) master secret
TLS13_LABELS = frozenset({
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET", "CLIENT_EARLY_TRAFFIC_SECRET", "EARLY_EXPORTER_SECRET",
})
KNOWN_UNUSED = frozenset({"RSA"})  # RSA pre-master secrets indexed by encrypted PMS: not supported
MAX_KEYLOG_BYTES = 64 << 20
MAX_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class KeyLogProblem:
    """A line that was skipped: where and why (never what it said)."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(slots=True, repr=False)
class KeyLog:
    """Secrets from one or more key logs. ``len()`` counts sessions (client randoms)."""

    _master: dict[bytes, bytes] = field(default_factory=dict)
    _tls13: dict[bytes, dict[str, bytes]] = field(default_factory=dict)
    problems: list[KeyLogProblem] = field(default_factory=list)
    lines: int = 0  # secret lines accepted
    sources: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"KeyLog(sessions={len(self)}, lines={self.lines}, problems={len(self.problems)})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self._master.keys() | self._tls13.keys())

    def __bool__(self) -> bool:
        return True  # an empty key log is still a key log (it says "no key" for every session)

    # -- reading --------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, paths: list[Path] | tuple[Path, ...]) -> KeyLog:
        log = cls()
        for p in paths:
            log.add_file(Path(p))
        return log

    def add_file(self, path: Path) -> None:
        """Read a key-log file; UserError (one line, no content) if it cannot be read at all."""
        try:
            size = path.stat().st_size
            if size > MAX_KEYLOG_BYTES:
                raise UserError(f"{path}: key log of {size} bytes is larger than {MAX_KEYLOG_BYTES}")
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"{path}: cannot read key log: {e.strerror or e}") from None
        if b"\0" in data[:4096]:
            raise UserError(f"{path}: not a key log (binary data)")
        self.add_text(data, str(path))

    def add_text(self, data: bytes | str, source: str = "keylog") -> None:
        """Add the lines of a key log (LF or CRLF, ``#`` comments); bad lines become problems."""
        if isinstance(data, bytes):
            data = data.decode("ascii", "replace")
        self.sources.append(source)
        for n, raw in enumerate(data.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            reason = self._add_line(line)
            if reason and len(self.problems) < MAX_PROBLEMS:
                self.problems.append(KeyLogProblem(source, n, reason))

    def _add_line(self, line: str) -> str | None:
        parts = line.split()
        if len(parts) != 3:
            return f"expected 'LABEL CLIENT_RANDOM SECRET', got {len(parts)} fields"
        label, crandom_hex, secret_hex = parts
        if label in KNOWN_UNUSED:
            return f"{label} lines (RSA key exchange) are not supported"
        if label != "CLIENT_RANDOM" and label not in TLS13_LABELS:
            return "unknown label" if label.isupper() else "not a key-log line"
        try:
            crandom, secret = bytes.fromhex(crandom_hex), bytes.fromhex(secret_hex)
        except ValueError:
            return "not hexadecimal"
        if len(crandom) != 32:
            return f"client random of {len(crandom)} bytes (expected 32)"
        if label == "CLIENT_RANDOM":
            if len(secret) != 48:
                return f"master secret of {len(secret)} bytes (expected 48)"
            self._master[crandom] = secret
        else:
            if len(secret) not in (32, 48):
                return f"{label} of {len(secret)} bytes (expected 32 or 48)"
            self._tls13.setdefault(crandom, {})[label] = secret
        self.lines += 1
        return None

    # -- lookup ---------------------------------------------------------------------------------
    def master_secret(self, client_random: bytes) -> bytes | None:
        """The TLS 1.2 master secret of the session that ClientHello random opened."""
        return self._master.get(client_random)

    def tls13_secrets(self, client_random: bytes) -> dict[str, bytes]:
        """The TLS 1.3 traffic secrets logged for that ClientHello random (label → secret)."""
        return self._tls13.get(client_random, {})

    def has(self, client_random: bytes) -> bool:
        return client_random in self._master or client_random in self._tls13
