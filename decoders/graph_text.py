"""A sequence diagram (``Diagram``) as plain text for a terminal: the same sections and messages as the
SVG and Mermaid renderers, one line per message."""

from __future__ import annotations

from meshscope.decoders.diagram import Diagram

ARROW = {"handshake": "->", "hello": "->", "request": "->", "response": "<-", "nat": "~>", "note": "::",
         "error": "-x"}


def diagram_text(diagram: Diagram) -> str:
    """The caption, then each section's title and its messages: time from the section's start, who, what."""
    lines: list[str] = [diagram.caption] if diagram.caption else []
    for n, section in enumerate(diagram.sections):
        if not section.messages:
            continue
        lines.append(f"{diagram.section_name} {n + 1}: {section.title}")
        for m in section.messages:
            ms = f"+{(m.t - section.start) * 1000:.1f} ms"
            if m.style == "note" or m.src == m.dst:
                lines.append(f"  {ms:>12}  [{diagram.title(m.src)}] {m.label}")
            elif m.style == "response":  # drawn from the answering side, arrow pointing back
                lines.append(f"  {ms:>12}  {diagram.title(m.dst)} <- {diagram.title(m.src)}: {m.label}")
            else:
                lines.append(f"  {ms:>12}  {diagram.title(m.src)} {ARROW[m.style]} {diagram.title(m.dst)}: "
                             f"{m.label}")
    return "\n".join(lines) + "\n" if lines else ""
