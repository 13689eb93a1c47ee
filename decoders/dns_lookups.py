"""DNS queries and answers (over UDP or TCP) paired into lookups, each one Exchange.

A client's resolver may try several names for one lookup: with a search path (Kubernetes:
``<ns>.svc.cluster.local svc.cluster.local cluster.local``) ``catalog`` is asked as
``catalog.web.svc.cluster.local`` (NXDOMAIN), then ``catalog.svc.cluster.local`` … until one
answers. A query from the same client, of the same type, that follows an NXDOMAIN within
FOLLOW_WINDOW and starts with the same label(s) continues that lookup as its next attempt; the
lookup ends with the first answer that is not NXDOMAIN (or when nothing follows). The same query
sent again before its answer (same id, or same name and type) is a retry of its attempt.
State is bounded: MAX_OPEN lookups and MAX_PENDING queries awaiting an answer."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from meshscope.decoders.dns_message import DnsMessage

from meshscope.model import Connection, DnsAttempt, DnsQuery, Exchange

FOLLOW_WINDOW = 2.0  # s after an NXDOMAIN within which the next expansion is expected
IDLE = 12.0  # s after which an unanswered lookup is given up (resolvers retry after 5 s)
MAX_OPEN = 10_000
MAX_PENDING = 50_000
MAX_ANSWERED = 4096  # recently answered queries remembered, to know a second answer for a duplicate
_NXDOMAIN = "NXDOMAIN"


@dataclass(slots=True)
class _Attempt:
    name: str
    qtype: str
    query_time: float
    id: int
    conn: Connection
    rcode: str | None = None
    answer_time: float | None = None
    answers: list[str] = field(default_factory=list)
    retries: int = 0
    truncated: bool = False


@dataclass(slots=True)
class _Lookup:
    key: tuple[str, str, str | None]  # (client address, query type, interface)
    attempts: list[_Attempt]
    last: float  # time of its last query or answer
    index: int = 0  # the client's n-th lookup seen on this interface


def _common_start(a: str, b: str) -> str:
    """The leading labels two names share ("catalog.web.svc…", "catalog.svc…" → "catalog")."""
    la, lb = a.lower().split("."), b.lower().split(".")
    n = 0
    while n < len(la) and n < len(lb) and la[n] == lb[n]:
        n += 1
    return ".".join(a.split(".")[:n])


class DnsLookups:
    """Feed every DNS message of a capture with ``message()``; finished lookups are appended to
    ``ready`` as Exchanges (exchange_type "dns"); ``finish()`` emits what is still open."""

    def __init__(self, capture: str, ready: list[Exchange]) -> None:
        self.capture = capture
        self.ready = ready
        # open lookups, least recently active first
        self.open: OrderedDict[tuple[str, str, str | None], _Lookup] = OrderedDict()
        self.pending: OrderedDict[tuple, tuple[_Lookup, _Attempt]] = OrderedDict()  # awaiting answers
        self.answered: OrderedDict[tuple, str] = OrderedDict()  # query key → name, recently answered
        self.counts: dict[tuple[str, str | None], int] = {}  # (client, interface) → lookups begun
        self.lookups = 0  # emitted
        self.unmatched_answers = 0
        self.duplicate_answers = 0
        self.names = None  # decoders.pod_labels.K8sNames: pod and service names by IP, for new lookups

    def message(self, msg: DnsMessage, ts: float, src: str, sport: int, dst: str, dport: int,
                transport: str = "udp", interface: str | None = None) -> None:
        self._expire(ts)
        if msg.response:
            self._answer(msg, ts, dst, dport, src, sport, transport, interface)
        else:
            self._query(msg, ts, src, sport, dst, dport, transport, interface)

    def _query(self, msg: DnsMessage, ts: float, client: str, cport: int, server: str, sport: int,
               transport: str, interface: str | None) -> None:
        qkey = (client, cport, msg.id, interface)
        known = self.pending.get(qkey)
        if known is not None and known[1].name.lower() == msg.name.lower() and known[1].qtype == msg.qtype:
            known[1].retries += 1  # the same query again, same id
            known[0].last = ts
            return
        key = (client, msg.qtype, interface)
        lookup = self.open.get(key)
        if lookup is not None:
            last = lookup.attempts[-1]
            same = last.name.lower() == msg.name.lower()
            if same and (last.rcode is None or last.truncated):
                # sent again (new id, or over TCP after a truncated answer): a retry of that attempt
                last.retries += 1
                last.id, last.truncated, lookup.last = msg.id, False, ts
                if transport != last.conn.transport or cport != last.conn.sport:
                    last.conn = self._conn(client, cport, server, sport, transport, interface)
                self._await(qkey, lookup, last)
                self.open.move_to_end(key)
                return
            if (last.rcode == _NXDOMAIN and ts - lookup.last <= FOLLOW_WINDOW and not same
                    and _common_start(last.name, msg.name)):
                attempt = _Attempt(msg.name, msg.qtype, ts, msg.id,
                                   self._conn(client, cport, server, sport, transport, interface))
                lookup.attempts.append(attempt)
                lookup.last = ts
                self._await(qkey, lookup, attempt)
                self.open.move_to_end(key)
                return
            self._emit(self.open.pop(key))  # something else: that lookup is over
        attempt = _Attempt(msg.name, msg.qtype, ts, msg.id,
                           self._conn(client, cport, server, sport, transport, interface))
        lookup = _Lookup(key, [attempt], ts, self._next_index(client, interface))
        self.open[key] = lookup
        if len(self.open) > MAX_OPEN:
            self._emit(self.open.popitem(last=False)[1])
        self._await(qkey, lookup, attempt)

    def _await(self, qkey: tuple, lookup: _Lookup, attempt: _Attempt) -> None:
        self.pending[qkey] = (lookup, attempt)
        self.pending.move_to_end(qkey)
        if len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def _answer(self, msg: DnsMessage, ts: float, client: str, cport: int, server: str, sport: int,
                transport: str, interface: str | None) -> None:
        qkey = (client, cport, msg.id, interface)
        found = self.pending.pop(qkey, None)
        if found is None or found[1].name.lower() != msg.name.lower():
            if found is not None:
                self.pending[qkey] = found
            if self.answered.get(qkey) == msg.name.lower():
                self.duplicate_answers += 1  # a second answer to a query already answered (a retry's)
                return
            # an answer to a query not captured stands alone
            self.unmatched_answers += 1
            attempt = _Attempt(msg.name, msg.qtype, ts, msg.id,
                               self._conn(client, cport, server, sport, transport, interface))
            attempt.query_time = None  # type: ignore[assignment]
            self._settle(attempt, msg, ts)
            index = self._next_index(client, interface)
            alone = _Lookup((client, msg.qtype, interface), [attempt], ts, index)
            self._emit(alone, "answer without a captured query")
            return
        lookup, attempt = found
        self.answered[qkey] = msg.name.lower()
        if len(self.answered) > MAX_ANSWERED:
            self.answered.popitem(last=False)
        self._settle(attempt, msg, ts)
        lookup.last = ts
        if msg.rcode != _NXDOMAIN and not msg.truncated and attempt is lookup.attempts[-1]:
            if self.open.get(lookup.key) is lookup:
                del self.open[lookup.key]
            self._emit(lookup)

    def _next_index(self, client: str, interface: str | None) -> int:
        """Lookups are numbered per client and interface in the order they begin: unique on any
        5-tuple (a resolver's socket reuses transaction ids), and the same for every copy of the
        client's traffic (tcpdump -i any), so that copies fold and nothing else does."""
        n = self.counts.get((client, interface), 0)
        self.counts[(client, interface)] = n + 1
        return n

    @staticmethod
    def _settle(attempt: _Attempt, msg: DnsMessage, ts: float) -> None:
        attempt.rcode, attempt.answer_time, attempt.answers = msg.rcode, ts, msg.answers
        attempt.truncated = msg.truncated

    def _conn(self, client: str, cport: int, server: str, sport: int, transport: str,
              interface: str | None) -> Connection:
        conn = Connection(src=client, sport=cport, dst=server, dport=sport, capture=self.capture,
                          interface=interface, transport=transport)
        return conn if self.names is None else self.names.label(conn)

    def _expire(self, now: float) -> None:
        """Emit the lookups nothing more can join: an NXDOMAIN FOLLOW_WINDOW ago, or idle for IDLE."""
        open_ = self.open
        while open_:
            key, lookup = next(iter(open_.items()))
            last = lookup.attempts[-1]
            idle = now - lookup.last
            if idle > IDLE or (last.rcode is not None and idle > FOLLOW_WINDOW):
                del open_[key]
                self._emit(lookup)
            else:
                break

    def _emit(self, lookup: _Lookup, damage: str | None = None) -> None:
        for a in lookup.attempts:  # forget the queries still awaiting an answer
            qkey = (a.conn.src, a.conn.sport, a.id, a.conn.interface)
            if self.pending.get(qkey, (None, None))[1] is a:
                del self.pending[qkey]
        first, last = lookup.attempts[0], lookup.attempts[-1]
        ex = Exchange(exchange_type="dns", conn=last.conn, index=lookup.index,
                      request_time=first.query_time if first.query_time is not None else None,
                      response_time=last.answer_time)
        stem = last.name
        for a in lookup.attempts[:-1]:
            stem = _common_start(stem, a.name)
        ex.dns = DnsQuery(
            id=last.id, name=last.name, qtype=last.qtype, rcode=last.rcode, answers=last.answers,
            retries=last.retries, lookup=stem,
            attempts=[DnsAttempt(name=a.name, qtype=a.qtype, rcode=a.rcode, query_time=a.query_time,
                                 answer_time=a.answer_time, retries=a.retries) for a in lookup.attempts[:-1]])
        if last.rcode is None:
            ex.damage.append("no answer captured")
        if damage:
            ex.damage.append(damage)
        self.lookups += 1
        self.ready.append(ex)

    def finish(self) -> None:
        while self.open:
            self._emit(self.open.popitem(last=False)[1])
