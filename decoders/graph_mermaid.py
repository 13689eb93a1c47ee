"""A sequence diagram (``Diagram``) as a Mermaid ``sequenceDiagram``: the same messages as the SVG."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from meshscope.decoders.capture_picture import MAX_EXCHANGES, capture_diagram
from meshscope.decoders.diagram import Diagram
from meshscope.decoders.exchange_filter import ExchangeFilter

from meshscope.model import Exchange, Flow

ARROW = {"handshake": "->>", "hello": "->>", "request": "->>", "response": "-->>", "nat": "--)",
         "note": "->>", "error": "-x"}


def _alias(i: int) -> str:
    return f"P{i}"


def _text(label: str) -> str:
    # Mermaid reads ';' and '#' as syntax and has no escape for a newline inside a message
    return re.sub(r"[;#\n]", " ", label)


def render_mermaid(flows: Sequence[Flow], exchanges: Mapping[str, Exchange], max_flows: int = 20,
                   flt: ExchangeFilter | None = None, max_exchanges: int = MAX_EXCHANGES) -> str:
    """The capture's picture (its flows, else its exchanges, else an overview) as Mermaid text."""
    return diagram_mermaid(capture_diagram(flows, exchanges, flt, max_flows, max_exchanges))


def diagram_mermaid(diagram: Diagram) -> str:
    """The diagram as Mermaid text: a participant per column, a shaded block per section."""
    alias = {p: _alias(i) for i, p in enumerate(diagram.participants)}
    lines = ["sequenceDiagram"]
    if not diagram.participants:  # nothing to draw: say so on a column of its own
        lines.append("    participant C as capture")
        lines.append(f"    Note over C: {_text(diagram.caption or 'nothing to draw')}")
        return "\n".join(lines) + "\n"
    for p in diagram.participants:
        lines.append(f"    participant {alias[p]} as {_text(diagram.title(p))}")
    if diagram.caption:
        span = alias[diagram.participants[0]] + (f",{alias[diagram.participants[-1]]}"
                                                 if len(diagram.participants) > 1 else "")
        lines.append(f"    Note over {span}: {_text(diagram.caption)}")
    for n, section in enumerate(diagram.sections):
        if not section.messages:
            continue
        lines.append("    rect rgb(245, 245, 250)")
        first = alias[diagram.participants[0]]
        lines.append(f"    Note over {first}: {diagram.section_name} {n + 1} {_text(section.title)}")
        for m in section.messages:
            if m.style == "note" or m.src == m.dst:
                lines.append(f"    Note over {alias[m.src]}: {_text(m.label)}")
            else:
                ms = (m.t - section.start) * 1000
                arrow = f"{alias[m.src]}{ARROW[m.style]}{alias[m.dst]}"
                lines.append(f"    {arrow}: {_text(m.label)} (+{ms:.1f} ms)")
        lines.append("    end")
    return "\n".join(lines) + "\n"
