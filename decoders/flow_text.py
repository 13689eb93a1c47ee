"""Flows as plain text: one header line per flow, one line per hop with the evidence that links it
(for a hop inferred without keys: "inferred", its confidence and evidence, any rival candidates)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meshscope.decoders.istio_mtls import exchange_leg, parse_istio_sni
from meshscope.decoders.sequence import request_label, response_label, tls_label
from meshscope.decoders.wording import counted

from meshscope.model import Exchange, Flow, Hop


def _who(endpoint: str, name: str | None) -> str:
    return f"{name} ({endpoint})" if name else endpoint


def _ms(a: float | None, b: float | None) -> str:
    return f"{(b - a) * 1000:.1f} ms" if a is not None and b is not None else "?"


def hop_lines(n: int, hop: Hop) -> list[str]:
    """Two lines per hop: what it is (kind, endpoints, NodePort/SNI/retries, time), then its evidence."""
    ev = hop.evidence
    head = [f"{n:>3} {hop.kind:<15} {_who(hop.src, hop.src_name)} → {_who(hop.dst, hop.dst_name)}"]
    why: list[str] = []
    if hop.nodeport:
        head.append(f"NodePort {hop.nodeport}")
    if hop.sni:
        dest = parse_istio_sni(hop.sni)
        head.append(f"SNI {hop.sni}" + (f" (→ {dest.label})" if dest is not None else ""))
    if hop.retries:
        head.append(f"retries {hop.retries}")
    if hop.start is not None and hop.end is not None:
        head.append(_ms(hop.start, hop.end))
    if hop.kind.startswith("nat-"):
        isn = f" (client ISN {ev['client_isn']})" if ev.get("client_isn") is not None else ""
        caps = ", ".join(ev.get("captures", []))
        why += [f"before {ev.get('pre')}", f"after {ev.get('post')}", f"matched by {ev.get('match')}{isn}",
                "one capture" if ev.get("same_capture") else f"captures {caps}"]
    elif hop.kind == "dns-lookup":
        why.append(f"{ev.get('qtype')} {ev.get('name')} {ev.get('rcode') or 'not answered'}")
        if ev.get("tried"):
            why.append("tried " + ", ".join(ev["tried"]))
        if ev.get("retries"):
            why.append(f"sent {ev['retries'] + 1} times")
    elif ev.get("inferred"):  # a TLS-terminating gateway seen without keys: a judgement, said so
        why.append(f"inferred (confidence {ev.get('confidence', 0):.2f}) from "
                   + ", ".join(ev.get("evidence", [])))
        if ev.get("ambiguous"):
            why.append("ambiguous: one of " + ", ".join(
                f"{c['client']} ({c['confidence']:.2f})" for c in ev.get("candidates", [])))
    else:
        why.append(f"matched by {', '.join(ev.get('matched_by', []))}")
        if hop.request_ids:
            why.append("x-request-id " + " / ".join(hop.request_ids))
        if ev.get("x_forwarded_for"):
            why.append(f"x-forwarded-for {ev['x_forwarded_for']}")
        if ev.get("downstream"):
            why.append(f"for {ev['downstream']}")
        attempts = ev.get("attempts", [])
        if any("stream_id" in a or "grpc_status" in a for a in attempts):  # HTTP/2, gRPC
            why.append("attempts " + ", ".join(
                " ".join(x for x in (f"stream {a['stream_id']}" if "stream_id" in a else "",
                                     str(a.get("status") or "?"), a.get("grpc_status") or "") if x)
                for a in attempts))
    return ["  ".join(head), " " * 20 + "; ".join(why)]


def flow_lines(flow: Flow, exchanges: Mapping[str, Exchange]) -> list[str]:
    root = exchanges.get(flow.exchange_ids[0]) if flow.exchange_ids else None
    if root is None:
        what = ""
    elif root.exchange_type == "tls":
        leg = exchange_leg(root.sni, root.alpn, root.tls_client_identity, root.tls_server_identity)
        ends = [f"{end} {i.label}" for end, i in (("client", leg.client), ("server", leg.server)) if i]
        what = f"TLS {tls_label(root)}" + (f" ({'; '.join(ends)})" if ends else "")
    elif getattr(root, "stream_id", None) is not None:  # an HTTP/2 stream (a gRPC call)
        what = f"{request_label(root)} {root.host or ''} → {response_label(root) or '?'}"
    else:
        status = root.status if root.status is not None else "?"
        what = f"{root.method} {root.host or ''}{root.uri or ''} → {status}"
    rid = f"  x-request-id {flow.request_id}" if flow.request_id else ""
    head = (f"flow {flow.id[:12]}  {what}  {flow.client} → {flow.server}  {counted(len(flow.hops), 'hop')}  "
            f"{_ms(flow.start, flow.end)}{rid}")
    return [head] + [line for i, h in enumerate(flow.hops, 1) for line in hop_lines(i, h)]


def render_text(flows: Iterable[Flow], exchanges: Mapping[str, Exchange]) -> str:
    """All flows, blank line between them."""
    return "\n".join("\n".join(flow_lines(f, exchanges)) + "\n" for f in flows)
