"""A picture for every capture, as a ``Diagram``: its stitched flows when there are some; otherwise a
sequence diagram of its exchanges (a section per connection, as Wireshark's Flow Graph); and for a
capture too big to draw whole, an overview — hosts and the exchanges between them with counts,
error rates and median latency (Wireshark's Conversations, Kiali's graph edges). A filter
(decoders.exchange_filter) narrows what is drawn first."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshscope.decoders.diagram import Diagram, Message, Section
from meshscope.decoders.exchange_filter import ExchangeFilter, failure_of, protocol_of
from meshscope.decoders.pod_labels import endpoint_names
from meshscope.decoders.sequence import exchange_messages, flow_diagram
from meshscope.decoders.wording import counted as plural

from meshscope.model import Flow

MAX_EXCHANGES = 100  # drawn one by one up to this many; above, the overview
MAX_COLUMNS = 16  # hosts in a sequence diagram; above, the overview
OVERVIEW_COLUMNS = 12  # hosts the overview draws; the rest share one column
OVERVIEW_ROWS = 60  # conversations the overview draws, the busiest first
OTHERS = "other hosts"
PROTOCOL_NAMES = {"http": "HTTP/1", "h2": "HTTP/2", "grpc": "gRPC", "tls": "TLS", "quic": "QUIC",
                  "dns": "DNS"}


def _workload(ns: str | None, name: str | None) -> str | None:
    return (f"{ns}/{name}" if ns else name) if name else None


def _name_columns(diagram: Diagram, exchanges: Iterable[Any]) -> None:
    """Workload names (Istio peer metadata) on the columns of the hosts they were seen on; then pod and
    service names from the connections' labels (ptcpdump's comments, a kubectl listing)."""
    columns = set(diagram.participants)
    exchanges = list(exchanges)
    for ex in exchanges:
        c = ex.conn
        if c.src not in columns and c.dst not in columns:
            continue
        client = _workload(getattr(ex, "peer_namespace", None), getattr(ex, "peer_workload", None))
        server = _workload(getattr(ex, "server_peer_namespace", None),
                           getattr(ex, "server_peer_workload", None))
        for ip, name in ((c.src, client), (c.dst, server)):
            if name and ip in columns:
                diagram.labels.setdefault(ip, name)
    for ip, name in endpoint_names(exchanges).items():
        if ip in columns:
            diagram.labels.setdefault(ip, name)


def columns_of(c: Any) -> tuple[str, str]:
    """The two columns a connection is drawn between: its hosts; on one host (a loopback capture) the
    server's column also takes its port, so that services on one address stay apart."""
    return (c.src, c.dst) if c.src != c.dst else (c.src, f"{c.dst}:{c.dport}")


def _conn_key(ex: Any) -> tuple:
    c = ex.conn
    return (c.capture, c.interface, c.transport, c.src, c.sport, c.dst, c.dport, c.client_isn, c.syn_time)


def exchange_diagram(exchanges: Iterable[Any]) -> Diagram:
    """The exchanges as a sequence diagram: one column per host, a section per connection (in the order
    they began), its handshake, hellos, queries, requests and answers in time order."""
    by_conn: dict[tuple, list[Any]] = {}
    for ex in exchanges:
        by_conn.setdefault(_conn_key(ex), []).append(ex)
    sections = []
    many_captures = len({k[0] for k in by_conn}) > 1
    for group in by_conn.values():
        group.sort(key=lambda e: (e.request_time or e.response_time or 0.0, e.index))
        c = group[0].conn
        src, dst = columns_of(c)
        msgs: list[Message] = []
        if c.handshake_seen:  # once per connection (an HTTP/2 connection has no exchange at index 0)
            t = c.syn_time if c.syn_time is not None else (group[0].request_time or 0.0)
            msgs.append(Message(t, src, dst, f"TCP handshake → :{c.dport}", "handshake"))
        for ex in group:
            msgs += exchange_messages(ex, src, dst, True)
        msgs.sort(key=lambda m: m.t)
        where = f"  ({c.capture})" if many_captures and c.capture else ""
        title = (f"{c.transport.upper()} {c.src}:{c.sport} → {c.dst}:{c.dport}  "
                 f"{plural(len(group), 'exchange')}{where}")
        sections.append(Section(title, msgs[0].t if msgs else 0.0, msgs))
    sections.sort(key=lambda s: s.start)
    diagram = Diagram(section_name="connection")
    for s in sections:
        diagram.add(s)
    _name_columns(diagram, (ex for group in by_conn.values() for ex in group))
    return diagram


@dataclass(slots=True)
class Conversation:
    """The exchanges of one protocol from one host to another, counted for the overview."""

    src: str
    dst: str
    protocol: str
    first: float
    count: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)

    def label(self) -> str:
        parts = [f"{PROTOCOL_NAMES.get(self.protocol, self.protocol)} ×{self.count}"]
        failed = sum(self.failures.values())
        if failed:
            worst = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items(), key=lambda kv: -kv[1])[:2])
            parts.append(f"errors {100 * failed / self.count:.1f} % ({worst})")
        if self.durations:
            parts.append(f"p50 {statistics.median(self.durations) * 1000:.1f} ms")
        return ", ".join(parts)


def conversations(exchanges: Iterable[Any]) -> list[Conversation]:
    """Exchanges counted per (client host, server host, protocol): counts, failures by kind, latencies."""
    found: dict[tuple[str, str, str], Conversation] = {}
    for ex in exchanges:
        c, proto = ex.conn, protocol_of(ex)
        t0, t1 = ex.request_time, ex.response_time
        t = t0 or t1 or c.syn_time or 0.0
        src, dst = (c.src, c.dst) if c.src != c.dst else columns_of(c)
        key = (src, dst, proto)
        conv = found.get(key)
        if conv is None:
            conv = found[key] = Conversation(src, dst, proto, t)
        conv.count += 1
        if t < conv.first:
            conv.first = t
        status = ex.status
        if status is None or status >= 400 or proto == "grpc":  # else an HTTP answer below 400: no failure
            why = failure_of(ex)
            if why is not None:
                conv.failures[why] = conv.failures.get(why, 0) + 1
        if t0 is not None and t1 is not None and t1 >= t0:
            conv.durations.append(t1 - t0)
    return list(found.values())


def overview_diagram(exchanges: Sequence[Any], columns: int = OVERVIEW_COLUMNS,
                     rows: int = OVERVIEW_ROWS) -> Diagram:
    """Hosts and the exchanges between them: one arrow per (client, server, protocol) with its count,
    error rate and median latency, the busiest ``rows`` of them first, each at the time it was first
    seen. Beyond ``columns`` busiest hosts the rest share one column."""
    convs = conversations(exchanges)
    traffic: dict[str, int] = {}
    for cv in convs:
        traffic[cv.src] = traffic.get(cv.src, 0) + cv.count
        traffic[cv.dst] = traffic.get(cv.dst, 0) + cv.count
    ranked = sorted(traffic, key=lambda h: -traffic[h])
    kept = set(ranked if len(ranked) <= columns else ranked[: columns - 1])
    merged: dict[tuple[str, str, str], Conversation] = {}
    for cv in convs:  # hosts beyond the busiest share one column: their conversations add up
        src = cv.src if cv.src in kept else OTHERS
        dst = cv.dst if cv.dst in kept else OTHERS
        m = merged.get((src, dst, cv.protocol))
        if m is None:
            merged[(src, dst, cv.protocol)] = m = Conversation(src, dst, cv.protocol, cv.first)
        m.count += cv.count
        m.first = min(m.first, cv.first)
        m.durations += cv.durations
        for k, v in cv.failures.items():
            m.failures[k] = m.failures.get(k, 0) + v
    busiest = sorted(merged.values(), key=lambda cv: (-cv.count, cv.first))  # as Wireshark's Conversations
    shown, hidden = busiest[:rows], busiest[rows:]
    msgs = [Message(cv.first, cv.src, cv.dst, cv.label(), "error" if cv.failures else "request")
            for cv in shown]
    if hidden:
        last = shown[-1]
        msgs.append(Message(last.first, last.src, last.src,
                            f"… {plural(len(hidden), 'more conversation')}, "
                            f"{plural(sum(cv.count for cv in hidden), 'exchange')}", "note"))
    diagram = Diagram(section_name="overview")
    title = f"{plural(len(traffic), 'host')}, {plural(len(convs), 'conversation')}"
    diagram.add(Section(title, min((cv.first for cv in shown), default=0.0), msgs))  # times: first seen
    _name_columns(diagram, exchanges)
    if OTHERS in diagram.participants:
        diagram.labels[OTHERS] = f"{len(ranked) - len(kept)} more"
    return diagram


def capture_diagram(flows: Sequence[Flow], exchanges: Mapping[str, Any], flt: ExchangeFilter | None = None,
                    max_flows: int = 20, max_exchanges: int = MAX_EXCHANGES) -> Diagram:
    """The picture of a capture (see the module's docstring), with a caption saying what is drawn and
    why: the filter, the flows left out, an overview's threshold."""
    flt = flt or ExchangeFilter()
    narrowed = f" matching {flt.describe()}" if flt else ""
    shown_flows = flt.flows(flows, exchanges)
    if shown_flows:
        diagram = flow_diagram(shown_flows, exchanges, max_flows)
        if flt or len(shown_flows) > max_flows:
            drawn = min(len(shown_flows), max_flows)
            diagram.caption = (f"{plural(len(shown_flows), 'flow')}{narrowed}"
                               + (f", the first {drawn} drawn" if drawn < len(shown_flows) else ""))
        return diagram
    chosen = flt.exchanges(exchanges.values())
    if not chosen:
        what = "no exchange" + (narrowed or " in this capture")
        return Diagram(caption=what)
    hosts = {h for ex in chosen for h in columns_of(ex.conn)}
    counted = f"{plural(len(chosen), 'exchange')}{narrowed} between {plural(len(hosts), 'host')}"
    if len(chosen) <= max_exchanges and len(hosts) <= MAX_COLUMNS:
        diagram = exchange_diagram(chosen)
        diagram.caption = f"{counted}; no multi-hop flow stitched: each exchange drawn"
        return diagram
    diagram = overview_diagram(chosen)
    diagram.caption = (f"{counted}: more than {max_exchanges} exchanges or {MAX_COLUMNS} hosts to draw one "
                       f"by one, so an overview; narrow it by host, port, protocol, status or request id")
    return diagram
