"""Mermaid's own parser (its one-file build, in Chromium) as the judge of the Mermaid text we write."""

from __future__ import annotations

import sys
from pathlib import Path

MERMAID_JS = sorted((Path(sys.prefix) / "js").glob("mermaid-*.min.js"))  # scripts/setup.sh test fetches it
PARSE = ("async t => { try { await mermaid.parse(t); return 'ok'; } "
         "catch (e) { return String(e.message || e); } }")


def mermaid_parse(texts: list[str]) -> list[str]:
    """For each text "ok", or Mermaid's error message (skips where Chromium or the build is missing)."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import need, need_binary

    need_binary("/usr/bin/chromium")
    need(bool(MERMAID_JS), "needs Mermaid's build in .venv/js (scripts/setup.sh test fetches it with npm)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_content("<!doctype html><html><body></body></html>")
            page.add_script_tag(path=str(MERMAID_JS[-1]))
            return [page.evaluate(PARSE, t) for t in texts]
        finally:
            browser.close()
