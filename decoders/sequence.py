"""Flows as a sequence diagram (``Diagram``, one section per flow): what the flow graphs draw.

One column per host (workload name where known), and in time order: TCP handshakes, TLS
ClientHellos (with SNI; on Istio mesh legs the destination service and the mTLS mark) and
ServerHellos (with the SPIFFE identity of each end, where seen), HTTP requests and responses, NAT
rewrites and proxy hops (an inferred one with its confidence).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from meshscope.decoders.diagram import Diagram, Message, Section
from meshscope.decoders.istio_mtls import exchange_leg, parse_istio_sni
from meshscope.decoders.pod_labels import endpoint_names

from meshscope.model import Exchange, Flow, Hop

MAX_LABEL = 48


def _ip(endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0]
    return host.strip("[]")


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def request_label(ex: Exchange) -> str:
    """What a request is called in the graphs: method and path; a gRPC call by its service's short name
    and method; an HTTP/2 stream with its stream id."""
    call = getattr(ex, "grpc", None)
    if call is not None and call.method:
        what = f"gRPC {(call.service or '').rsplit('.', 1)[-1]}/{call.method}"
    else:
        what = f"{ex.method or '?'} {ex.uri or ''}"
    sid = getattr(ex, "stream_id", None)
    return what if sid is None else f"{what} stream {sid}"


def response_label(ex: Exchange) -> str | None:
    """The status, and a gRPC call's status by name ("200 UNAVAILABLE")."""
    call = getattr(ex, "grpc", None)
    grpc = f" {call.status}" if call is not None and call.status else ""
    if ex.status is None:
        return f"gRPC{grpc}" if grpc else None
    return f"{ex.status} {ex.reason or ''}".strip() + grpc


def tls_label(ex: Exchange) -> str:
    """A TLS leg in a few words: ``SNI shop.lab``; an Istio leg by its destination service and, when
    its ALPN (or a SPIFFE certificate) says so, ``mesh mTLS``."""
    leg = exchange_leg(ex.sni, ex.alpn, ex.tls_client_identity, ex.tls_server_identity)
    what = f"→ {leg.destination.label}" if leg.destination is not None else f"SNI {ex.sni or '-'}"
    return f"{what} mesh mTLS" if leg.mesh_mtls else what


def hop_note(hop: Hop) -> str:
    """What a proxy hop's note says: its kind, attempts, SNI (an Istio one as its service), and for a
    hop inferred without keys "inferred (confidence)", "ambiguous" when two connections explain it."""
    what = hop.kind + (f" ×{hop.retries + 1} attempts" if hop.retries else "")
    if hop.sni:
        dest = parse_istio_sni(hop.sni)
        what += f" → {dest.label}" if dest is not None else f" SNI {hop.sni}"
    ev = hop.evidence
    if ev.get("inferred"):
        what += (" ambiguous," if ev.get("ambiguous") else "") + f" inferred ({ev.get('confidence', 0):.2f})"
    return what


def flow_title(flow: Flow, root: Exchange | None) -> str:
    what = ""
    if root is not None:
        what = request_label(root) if root.exchange_type == "http" else f"TLS {tls_label(root)}"
    rid = f"  x-request-id {flow.request_id}" if flow.request_id else ""
    return f"{_short(what)}{rid}".strip()


def flow_diagram(flows: Iterable[Flow], exchanges: Mapping[str, Exchange], max_flows: int = 20) -> Diagram:
    """The messages of (at most max_flows) flows, one section per flow, each in time order."""
    diagram = Diagram()
    for n, flow in enumerate(flows):
        if n >= max_flows:
            break
        root = exchanges.get(flow.exchange_ids[0]) if flow.exchange_ids else None
        msgs = _flow_messages(flow, exchanges, diagram.labels)
        name_columns(diagram.labels, (exchanges[x] for x in flow.exchange_ids if x in exchanges))
        msgs.sort(key=lambda m: m.t)
        # a handshake drawn before the flow's first request (one host, a fresh connection): times from it
        start = min(flow.start or 0.0, msgs[0].t) if msgs and flow.start else flow.start or 0.0
        diagram.add(Section(flow_title(flow, root), start, msgs))
    return diagram


def name_columns(labels: dict[str, str], exchanges: Iterable[Exchange]) -> None:
    """Columns not yet named by a hop get the pod (or service) name their connections' labels carry
    (ptcpdump's comments, a kubectl listing): the naming hook of every sequence diagram."""
    for ip, name in endpoint_names(exchanges).items():
        labels.setdefault(ip, name)


def _flow_messages(flow: Flow, exchanges: Mapping[str, Exchange], labels: dict[str, str]) -> list[Message]:
    msgs: list[Message] = []
    ends: dict[str, tuple[str, str]] = {}  # exchange id → (sender ip, receiver ip) across NAT
    drawn_syn: set[str] = set()
    for hop in flow.hops:
        _name(labels, hop)
        if hop.kind.startswith("nat-"):
            msgs += _nat_messages(hop, exchanges, drawn_syn, labels)
            for xid in hop.exchange_ids:
                ends[xid] = (_ip(hop.src), _ip(hop.dst))
        elif hop.kind != "dns-lookup":  # a lookup is drawn by its exchange's arrows
            proxy = _ip(hop.src)
            what = hop_note(hop)
            # the note goes before the upstream connection's handshake
            up = exchanges.get(hop.exchange_ids[1]) if len(hop.exchange_ids) > 1 else None
            syn = up.conn.syn_time if up is not None and up.index == 0 else None  # pooled: drawn before
            t = min(x for x in (hop.start, syn, float("inf")) if x is not None)
            msgs.append(Message(t - 1e-6 if t != float("inf") else 0.0, proxy, proxy, what, "note"))
    hellos: set[tuple] = set()  # decrypted connections whose handshake is drawn
    for xid in dict.fromkeys(flow.exchange_ids):
        ex = exchanges.get(xid)
        if ex is None or (xid in ends and xid != _first_mirror(flow, xid)):
            continue
        src, dst = ends.get(xid, (ex.conn.src, ex.conn.dst))
        msgs += exchange_messages(ex, src, dst, xid in drawn_syn)
        c = ex.conn
        if ex.tls_decryption == "decrypted" and (c.src, c.sport, c.dst, c.dport) not in hellos:
            # a request read through TLS: its leg's handshake (SNI, mesh mark, identities) just before it
            hellos.add((c.src, c.sport, c.dst, c.dport))
            t = (ex.request_time or 0.0) - 2e-6
            msgs += [dataclasses.replace(m, t=t) for m in _tls_messages(ex, src, dst, t)]
    return msgs


def _first_mirror(flow: Flow, xid: str) -> str:
    """Of the copies of one request on the two sides of a NAT, draw only the first."""
    for hop in flow.hops:
        if xid in hop.exchange_ids and hop.kind.startswith("nat-"):
            return hop.exchange_ids[0]
    return xid


def _name(labels: dict[str, str], hop: Hop) -> None:
    for endpoint, name in ((hop.src, hop.src_name), (hop.dst, hop.dst_name)):
        if name:
            labels[_ip(endpoint)] = name


def _nat_messages(hop: Hop, exchanges: Mapping[str, Exchange], drawn_syn: set[str],
                  labels: dict[str, str]) -> list[Message]:
    pre = exchanges.get(hop.exchange_ids[0]) if hop.exchange_ids else None
    ev = hop.evidence
    node = _ip(ev.get("pre", "").split(" → ")[-1]) if ev.get("pre") else _ip(hop.dst)
    if hop.nodeport:
        labels.setdefault(node, "node")
    t = hop.start or 0.0
    out = []
    if pre is not None and pre.index == 0 and pre.conn.handshake_seen:
        out.append(Message(pre.conn.syn_time or t, _ip(hop.src), node,
                           f"TCP handshake → {ev.get('pre', '').split(' → ')[-1]}", "handshake"))
        drawn_syn.update(hop.exchange_ids)
    label = "DNAT" if ev.get("dnat") else ""
    if ev.get("snat"):
        label = (label + "+SNAT" if label else "SNAT") + f" src→{ev.get('source_rewritten_to', '')}"
    if hop.nodeport:
        label += f" NodePort {hop.nodeport} → {ev.get('destination_rewritten_to', hop.dst)}"
    out.append(Message(hop.end or t, node, _ip(hop.dst), _short(label.strip()), "nat"))
    return out


def exchange_messages(ex: Exchange, src: str, dst: str, syn_drawn: bool) -> list[Message]:
    """One exchange's arrows from ``src`` to ``dst``: its connection's handshake (first exchange, unless
    drawn already), then the hello or query or request, then the answer."""
    out = []
    c = ex.conn
    if ex.index == 0 and c.handshake_seen and not syn_drawn:
        out.append(Message(c.syn_time or ex.request_time or 0.0, src, dst, f"TCP handshake → :{c.dport}",
                           "handshake"))
    t0 = ex.request_time or c.syn_time or 0.0
    dns = getattr(ex, "dns", None)
    if dns is not None:  # a lookup: its question, and its answer after any NXDOMAIN attempts
        asked = _short(f"DNS {dns.qtype} {dns.lookup or dns.name}")
        out.append(Message(t0 or ex.response_time or 0.0, src, dst, asked, "request"))
        if ex.response_time is not None:
            tried = f" after {len(dns.attempts)} NXDOMAIN" if dns.attempts else ""
            answer = _short(f"{dns.rcode}{tried} {' '.join(dns.answers)}".strip())
            out.append(Message(ex.response_time, dst, src, answer, "response"))
        return out
    if ex.exchange_type == "tls":
        return out + _tls_messages(ex, src, dst, t0)
    rid = ex.request_id
    label = request_label(ex)
    if rid and len(rid) > 14:  # enough of the id to tell requests apart, and its sampling digit
        label += f" rid {rid[:8]}…v{rid[14]}"
    out.append(Message(t0, src, dst, _short(label), "request"))
    status = response_label(ex)
    if status is not None:
        out.append(Message(ex.response_time or t0, dst, src, status, "response"))
    return out


def _tls_messages(ex: Exchange, src: str, dst: str, t0: float) -> list[Message]:
    """A ClientHello (SNI or Istio destination, mesh mark, else the ALPN offered), the ServerHello, and
    a note on each end with its SPIFFE identity where a certificate showed one."""
    quic = getattr(ex, "quic", None)
    what = f"QUIC v{quic.version} ClientHello" if quic is not None else "ClientHello"
    label = tls_label(ex)
    if ex.alpn and not label.endswith("mesh mTLS"):
        label += f" ALPN {','.join(ex.alpn)}"
    out = [Message(t0, src, dst, _short(f"{what} {label}"), "hello")]
    t1 = ex.response_time or t0
    if ex.tls_version:
        out.append(Message(t1, dst, src, f"ServerHello {ex.tls_version}", "response"))
    leg = exchange_leg(ex.sni, ex.alpn, ex.tls_client_identity, ex.tls_server_identity)
    for who, identity in ((src, leg.client), (dst, leg.server)):
        if identity is not None:
            out.append(Message(t1, who, who, identity.label, "note"))
    return out
