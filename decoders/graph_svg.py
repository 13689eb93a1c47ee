"""A sequence diagram (``Diagram``) as SVG (hand-written SVG: no drawing library needed).

One column per host, arrows in time order: handshakes grey, ClientHellos purple, requests blue,
responses dashed green, NAT rewrites orange and dashed, proxy hops as notes on the proxy's column,
an overview's failing conversations red.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshscope.decoders.capture_picture import MAX_EXCHANGES, capture_diagram
from meshscope.decoders.diagram import Diagram, Message
from meshscope.decoders.exchange_filter import ExchangeFilter
from meshscope.decoders.svg_text import svg_text

from meshscope.model import Exchange, Flow

COL_W = 210
ROW_H = 26
TOP = 70
LEFT = 90
STYLE = {
    "handshake": ("#888888", ""),
    "hello": ("#7b3fb5", ""),
    "request": ("#1f5fbf", ""),
    "response": ("#2e8b57", "6,4"),
    "nat": ("#d2691e", "3,3"),
    "note": ("#444444", ""),
    "error": ("#c0392b", ""),
}


def render_svg(flows: Sequence[Flow], exchanges: Mapping[str, Exchange], max_flows: int = 20,
               flt: ExchangeFilter | None = None, max_exchanges: int = MAX_EXCHANGES) -> str:
    """The capture's picture (its flows, else its exchanges, else an overview) as an SVG document."""
    return diagram_svg(capture_diagram(flows, exchanges, flt, max_flows, max_exchanges))


def diagram_svg(diagram: Diagram) -> str:
    """The diagram as an SVG document: a column per participant, a titled block per section; every
    text cut to the room it has (its full text in a <title>)."""
    cols = {p: LEFT + COL_W // 2 + i * COL_W for i, p in enumerate(diagram.participants)}
    width = max(LEFT + COL_W * max(len(cols), 1) + 20, 600)
    rows: list[str] = []
    y = TOP + 20
    for n, section in enumerate(diagram.sections):
        if not section.messages:
            continue
        y += ROW_H
        rows.append(svg_text(f"{diagram.section_name} {n + 1}: {section.title}", width - 16,
                             f'x="8" y="{y}" class="flow"', size=13, bold=True))
        y += ROW_H // 2
        for m in section.messages:
            y += ROW_H
            rows.append(_message(m, cols, y, section.start))
    height = y + ROW_H * 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<style>.flow{font-weight:bold;font-size:13px}.head{font-weight:bold}.t{fill:#666;font-size:10px}"
        ".cap{fill:#333}.lbl{paint-order:stroke;stroke:#fff;stroke-width:3px}</style>",
        "<defs>" + "".join(
            f'<marker id="a-{k}" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
            f'<path d="M0,0 L10,4 L0,8 z" fill="{c}"/></marker>' for k, (c, _) in STYLE.items()) + "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    if diagram.caption:
        parts.append(svg_text(diagram.caption, width - 16, 'x="8" y="18" class="cap"'))
    room = COL_W - 24
    for p, x in cols.items():
        parts.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{height - ROW_H}" stroke="#bbb"/>')
        parts.append(f'<rect x="{x - COL_W // 2 + 8}" y="{TOP - 36}" width="{COL_W - 16}" height="30" rx="4" '
                     f'fill="#eef3fb" stroke="#6b8cc7"/>')
        name = diagram.labels.get(p)
        if name:
            parts.append(svg_text(name, room, f'x="{x}" y="{TOP - 24}" text-anchor="middle" class="head"',
                                  bold=True))
            parts.append(svg_text(p, room, f'x="{x}" y="{TOP - 11}" text-anchor="middle" class="t"', size=10))
        else:
            parts.append(svg_text(p, room, f'x="{x}" y="{TOP - 17}" text-anchor="middle" class="head"',
                                  bold=True))
    parts += rows
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _message(m: Message, cols: dict[str, int], y: int, start: float) -> str:
    color, dash = STYLE[m.style]
    x1, x2 = cols[m.src], cols[m.dst]
    ms = svg_text(f"+{(m.t - start) * 1000:.1f} ms", LEFT - 4, f'x="8" y="{y}" class="t"', size=10)
    if m.style == "note" or x1 == x2:
        return (ms + f'<rect x="{x1 - COL_W // 2 + 14}" y="{y - 14}" width="{COL_W - 28}" height="18" rx="3" '
                f'fill="#fff8dc" stroke="{color}"/>'
                + svg_text(m.label, COL_W - 36, f'x="{x1}" y="{y - 1}" text-anchor="middle"'))
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    mid = (x1 + x2) // 2
    return (ms + f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="1.5"'
            f'{dash_attr} marker-end="url(#a-{m.style})"/>'
            + svg_text(m.label, abs(x2 - x1) - 24,
                       f'x="{mid}" y="{y - 4}" text-anchor="middle" class="lbl" fill="{color}"'))
