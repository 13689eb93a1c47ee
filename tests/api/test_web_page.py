"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by playwright): load, upload a
capture and see its flow graph, search a request id and see hops, spans and packets, list alerts."""

from __future__ import annotations

import os

import pytest

from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, RID_SC, lab_records, write_records
from tests.conftest import need

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.chromium, pytest.mark.slow]


@pytest.fixture
def browser():
    need(os.path.exists(CHROMIUM), f"needs {CHROMIUM} (scripts/setup.sh installs chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_upload_search_and_alerts(api, browser, tmp_path):
    write_records(api.settings, lab_records())
    node, pod = lab_captures(tmp_path, RID, NOW)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(api.url + "/")
    assert page.title() == "meshscope"
    # alerts are listed on load
    page.wait_for_selector("#alerts tbody tr td.firing")
    assert "upstream_cluster=catalog" in page.inner_text("#alerts")

    # upload both capture points together; the flow graph appears
    page.set_input_files("#pcap-file", [str(node), str(pod)])
    page.click("#upload")
    page.wait_for_function("document.querySelector('#upload-graph').naturalWidth > 0", timeout=60_000)
    assert "1 flows, 3 exchanges" in page.inner_text("#upload-status")
    assert "nat-dnat" in page.inner_text("#flows") and "l7-proxy" in page.inner_text("#flows")
    assert page.locator("#captures tbody tr").count() == 2
    page.wait_for_selector("#uploads li")
    assert "node-eth0.pcap, pod-veth.pcap" in page.inner_text("#uploads")

    # search the request by the id the sidecar logged: hops, spans and packets on one page
    page.fill("#rid", RID_SC)
    page.click("#search")
    page.wait_for_function("document.querySelector('#trace-graph').naturalWidth > 0", timeout=30_000)
    assert page.locator("#hops tbody tr").count() == 2
    assert page.locator("#spans tbody tr").count() == 2
    assert page.locator("#packets tbody tr").count() == 3
    packets = page.inner_text("#packets")
    assert "node-eth0.pcap" in packets and "pod-veth.pcap" in packets
    hops = page.inner_text("#hops")
    assert "gateway" in hops and "sidecar" in hops
    assert "2 hops, 2 spans, 3 packet exchanges" in page.inner_text("#trace-status")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    # the screenshot shows the expected elements: each is visible and inside the captured page
    for sel in ("#trace-graph", "#upload-graph", "#hops", "#alerts", "#search", "#upload"):
        box = page.locator(sel).bounding_box()
        assert box and box["width"] > 50 and box["height"] > 10, sel
    if os.environ.get("MESHSCOPE_KEEP_SCREENSHOT"):
        shot.replace(os.environ["MESHSCOPE_KEEP_SCREENSHOT"])

    # a bad id shows a message instead of breaking the page
    page.fill("#rid", "no-such-request")
    page.click("#search")
    page.wait_for_function("document.querySelector('#trace-status').classList.contains('error')")
    assert "nothing known" in page.inner_text("#trace-status")
    assert errors == []


def test_exposed_api_page_asks_for_the_token(data_dir, browser):
    from tests.api.conftest import serve, settings_for

    running = serve(settings_for(data_dir, host="0.0.0.0", api_token="page-token"))
    try:
        page = browser.new_page()
        page.goto(running.url + "/")
        page.wait_for_selector("#token-box:not([hidden])")
        assert "needs a token" in page.inner_text("#alerts")
        page.fill("#token", "page-token")
        page.dispatch_event("#token", "change")
        page.wait_for_selector("#alerts tbody tr td:text('no alerts')")
    finally:
        running.stop()
