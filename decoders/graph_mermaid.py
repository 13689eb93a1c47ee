"""Flow graph as a Mermaid ``sequenceDiagram``: the same messages as the SVG."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from meshscope.decoders.sequence import build_sequence

from meshscope.model import Exchange, Flow

ARROW = {"handshake": "->>", "hello": "->>", "request": "->>", "response": "-->>", "nat": "--)",
         "note": "->>"}


def _alias(i: int) -> str:
    return f"P{i}"


def _text(label: str) -> str:
    # Mermaid reads ';' and '#' as syntax and has no escape for a newline inside a message
    return re.sub(r"[;#\n]", " ", label)


def render_mermaid(flows: Iterable[Flow], exchanges: Mapping[str, Exchange], max_flows: int = 20) -> str:
    """The flows' sequence diagram as Mermaid text."""
    seq = build_sequence(flows, exchanges, max_flows)
    alias = {p: _alias(i) for i, p in enumerate(seq.participants)}
    lines = ["sequenceDiagram"]
    for p in seq.participants:
        lines.append(f"    participant {alias[p]} as {_text(seq.title(p))}")
    current = -1
    for m in seq.messages:
        if m.flow != current:
            if current >= 0:
                lines.append("    end")
            current = m.flow
            lines.append("    rect rgb(245, 245, 250)")
            first = alias[seq.participants[0]]
            lines.append(f"    Note over {first}: flow {m.flow + 1} {_text(seq.titles[m.flow])}")
        ms = (m.t - seq.starts[m.flow]) * 1000
        if m.style == "note" or m.src == m.dst:
            lines.append(f"    Note over {alias[m.src]}: {_text(m.label)}")
        else:
            lines.append(f"    {alias[m.src]}{ARROW[m.style]}{alias[m.dst]}: {_text(m.label)} (+{ms:.1f} ms)")
    if current >= 0:
        lines.append("    end")
    return "\n".join(lines) + "\n"
