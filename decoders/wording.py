"""Counts in messages meant for people: "1 exchange", "3 exchanges", never "1 exchanges"."""

from __future__ import annotations

from collections.abc import Sequence

EXAMPLES = 5  # damage lines shown before "… and N more"


def counted(n: int, word: str, plural: str | None = None) -> str:
    """``n`` and the word, plural unless n is 1 ("-es" after s and x; ``plural`` for irregular words:
    "copy" → "copies")."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {plural or word + ('es' if word.endswith(('s', 'x')) else 's')}"


def examples(lines: Sequence[str], total: int | None = None, shown: int = EXAMPLES) -> list[str]:
    """The first ``shown`` lines, then "… and N more" for the rest of ``total`` (default: all lines)."""
    total = len(lines) if total is None else max(total, len(lines))
    out = list(lines[:shown])
    if total > len(out):
        out.append(f"… and {total - len(out)} more")
    return out
