"""Text that fits its box in a server-drawn SVG: widths estimated from Helvetica's metrics (AFM, in
thousandths of an em), widened to cover the wider sans-serif fonts browsers fall back to (DejaVu Sans
on Linux); a text cut with "…" keeps its whole self in a ``<title>`` (the tooltip)."""

from __future__ import annotations

from xml.sax.saxutils import escape

# Helvetica widths of the printable ASCII characters, space (32) to tilde (126)
_WIDTHS = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,  # ' ' .. '/'
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,  # '0' .. '?'
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,  # '@' .. 'O'
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,  # 'P' .. '_'
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,  # '`' .. 'o'
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,  # 'p' .. '~'
)
WIDEN = 1.16  # DejaVu Sans runs about 10 % wider than Helvetica; the rest is margin
BOLD = 1.1
ELLIPSIS = "…"


def text_width(text: str, size: float = 12.0, bold: bool = False) -> float:
    """The estimated rendered width of ``text`` in pixels (non-ASCII characters counted as 1 em)."""
    units = sum(_WIDTHS[o - 32] if 32 <= (o := ord(ch)) <= 126 else 1000 for ch in text)
    return units * size / 1000 * WIDEN * (BOLD if bold else 1.0)


def fit(text: str, room: float, size: float = 12.0, bold: bool = False) -> tuple[str, bool]:
    """``text`` cut (with "…") to at most ``room`` pixels, and whether it was cut."""
    if text_width(text, size, bold) <= room:
        return text, False
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if text_width(text[:mid] + ELLIPSIS, size, bold) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS, True


def svg_text(text: str, room: float, attrs: str, size: float = 12.0, bold: bool = False) -> str:
    """A ``<text {attrs}>`` element holding ``text`` fitted to ``room`` pixels, its full text as a
    ``<title>`` when it had to be cut."""
    shown, cut = fit(text, room, size, bold)
    title = f"<title>{escape(text)}</title>" if cut else ""
    return f"<text {attrs}>{escape(shown)}{title}</text>"
