"""A sequence diagram (``Diagram``) as a Mermaid ``sequenceDiagram``: the same messages as the SVG."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from meshscope.decoders.diagram import Diagram
from meshscope.decoders.sequence import flow_diagram

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
    return diagram_mermaid(flow_diagram(flows, exchanges, max_flows))


def diagram_mermaid(diagram: Diagram) -> str:
    """The diagram as Mermaid text: a participant per column, a shaded block per section."""
    alias = {p: _alias(i) for i, p in enumerate(diagram.participants)}
    lines = ["sequenceDiagram"]
    for p in diagram.participants:
        lines.append(f"    participant {alias[p]} as {_text(diagram.title(p))}")
    for n, section in enumerate(diagram.sections):
        if not section.messages:
            continue
        lines.append("    rect rgb(245, 245, 250)")
        first = alias[diagram.participants[0]]
        lines.append(f"    Note over {first}: flow {n + 1} {_text(section.title)}")
        for m in section.messages:
            if m.style == "note" or m.src == m.dst:
                lines.append(f"    Note over {alias[m.src]}: {_text(m.label)}")
            else:
                ms = (m.t - section.start) * 1000
                arrow = f"{alias[m.src]}{ARROW[m.style]}{alias[m.dst]}"
                lines.append(f"    {arrow}: {_text(m.label)} (+{ms:.1f} ms)")
        lines.append("    end")
    return "\n".join(lines) + "\n"
