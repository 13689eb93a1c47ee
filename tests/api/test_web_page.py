"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by playwright) against one real
stack: ``meshscope up --traffic`` (the bundled Envoy, demo upstream, collector, pipeline, SQLite store,
alert engine), its demo traffic, and a real capture: tcpdump on loopback while requests with a known
x-request-id cross the proxy.

Every view is driven: Find by each filter (form and URL), histogram click-to-narrow, autocomplete; one
request's hops, waterfall, packets and flow graph; a capture uploaded through the page with its transfer
and analysis progress; the service map; proxies; an alert firing and then resolving (the demo's bursts
against spike rules with a 10 s timeframe: real records, real engine). Each view must log no console
error, keep every SVG text inside its box, and pass axe-core with nothing serious or critical, in light
and dark. Screenshots of each view go to a folder under pytest's tmp dir (its path is printed)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from meshscope.model import AccessRecord, normalize_request_id
from tests.api.conftest import write_records
from tests.conftest import free_port, need, need_binary, need_root
from tests.stack.test_up import _wait_for as wait_for
from tests.tcpdump import stop_tcpdump

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).resolve().parents[2] / "meshscope/api/static/vendor/axe-core/axe.min.js"
RULES = """
rules:
  - {name: upstream-5xx-spike, type: spike, filter: {status_class: 5}, query_key: upstream_cluster,
     timeframe: 10s, spike_height: 3, spike_type: up, threshold_ref: 0, threshold_cur: 10, realert: 5m,
     severity: critical, description: 5xx responses from an upstream cluster spiked}
  - {name: upstream-retry-spike, type: spike, filter: {retried: true}, query_key: upstream_cluster,
     timeframe: 10s, spike_height: 3, spike_type: up, threshold_ref: 0, threshold_cur: 10, realert: 5m,
     severity: warning, description: retried requests to an upstream cluster spiked}
"""
CAPTURED_RID = str(uuid.uuid4())
ZONE = "Europe/Berlin"

pytestmark = [pytest.mark.chromium, pytest.mark.envoy, pytest.mark.slow]


@dataclass
class RunningStack:
    url: str
    proxy: str
    log: Path
    data_dir: Path
    pcap: Path
    process: subprocess.Popen
    request_ids: dict[str, str] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`meshscope up --traffic` with 10-second spike rules, plus a tcpdump capture of requests carrying
    CAPTURED_RID through its proxy."""
    need(os.path.exists(CHROMIUM), f"needs {CHROMIUM} (scripts/setup.sh installs chromium)")
    need_root()
    tcpdump = need_binary("tcpdump")
    from tests.collector.envoy_lab import need_envoy

    need_envoy()
    tmp = tmp_path_factory.mktemp("web-stack")
    ports = {
        k: free_port()
        for k in (
            "api_port",
            "zipkin_port",
            "als_port",
            "envoy_admin_port",
            "proxy_port",
            "demo_upstream_port",
        )
    }
    (tmp / "rules.yaml").write_text(RULES)
    config = tmp / "meshscope.yaml"
    config.write_text(
        yaml.safe_dump({**ports, "data_dir": str(tmp / "data"), "alert_rules": str(tmp / "rules.yaml")})
    )
    log = tmp / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshscope.cli", "--config", str(config), "up", "--traffic"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    running = RunningStack(
        f"http://127.0.0.1:{ports['api_port']}",
        f"http://127.0.0.1:{ports['proxy_port']}",
        log,
        tmp / "data",
        tmp / "lo.pcap",
        proc,
    )
    try:
        wait_for(lambda: "meshscope is up" in running.output(), 150, "the stack and its first demo traffic")
        running.request_ids = dict(re.findall(r"^\s+(\w+)\s+meshscope trace (\S+)", running.output(), re.M))
        dump = subprocess.Popen(
            [
                tcpdump,
                "-i",
                "lo",
                "-U",
                "--immediate-mode",  # each packet handed over at once: SIGINT must not strand a buffer block
                "-s",
                "0",
                "-w",
                str(running.pcap),
                f"tcp port {ports['proxy_port']} or tcp port {ports['demo_upstream_port']}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            listening = select.select([dump.stderr], [], [], 20)[0]  # "listening on lo": it captures now
            assert listening and b"listening" in dump.stderr.readline()
            with httpx.Client(timeout=10) as client:
                for path in ("/headers", "/status/503"):
                    client.get(
                        running.proxy + path, headers={"x-request-id": CAPTURED_RID, "host": "shop.local"}
                    )
        finally:
            counts = stop_tcpdump(dump)
        assert CAPTURED_RID.encode() in running.pcap.read_bytes(), counts
        with running.api() as api:
            wait_for(
                lambda: len(api.get(f"/api/traces/{CAPTURED_RID}").json().get("hops", [])) >= 2,
                30,
                "the captured request's access records",
            )
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("web-ui-screenshots")
    yield folder
    print(f"\nscreenshots of every view: {folder}")
    keep = os.environ.get("MESHSCOPE_SCREENSHOTS")
    if keep:
        shutil.copytree(folder, keep, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A playwright page on the stack that records console errors and waits for views to finish."""

    def __init__(self, browser, stack: RunningStack, shots: Path, scheme: str = "light") -> None:
        self.context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, color_scheme=scheme, timezone_id=ZONE
        )
        self.page = self.context.new_page()
        self.stack, self.shots, self.scheme = stack, shots, scheme
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(stack.url + "/#/find")
        self.ready()

    def ready(self, timeout: float = 30_000) -> None:
        self.page.wait_for_selector("#view[data-ready]", timeout=timeout)

    def then_ready(self, action, timeout: float = 30_000) -> None:
        """Do something that redraws the view, and wait until the new drawing is done."""
        self.page.evaluate("document.querySelector('#view').removeAttribute('data-ready')")
        action()
        self.ready(timeout)

    def go(self, hash_: str) -> None:
        self.page.evaluate(
            "h => { document.querySelector('#view').removeAttribute('data-ready');"
            " if (location.hash === h) window.dispatchEvent(new HashChangeEvent('hashchange'));"
            " else location.hash = h; }",
            hash_,
        )
        self.ready()

    def rows(self, selector: str) -> list[list[str]]:
        return self.page.eval_on_selector_all(
            selector + " tbody tr",
            "trs => trs.map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))",
        )

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}-{self.scheme}.png"), full_page=True)

    def svg_problems(self, selector: str) -> list[str]:
        """Texts outside the box they sit in, or overlapping another text (both measured by the browser)."""
        return self.page.evaluate(SVG_CHECK, selector)

    def axe_serious(self) -> list[str]:
        if not self.page.evaluate("typeof window.axe !== 'undefined'"):
            self.page.add_script_tag(path=str(AXE))
        found = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | '))"
        )
        return found

    def close(self) -> None:
        self.context.close()


SVG_CHECK = (Path(__file__).parent / "svg_text_check.js").read_text()


@pytest.fixture(scope="module")
def pages(browser, stack, shots):
    """One light page for the whole module (views keep state in the URL only), console errors checked."""
    light = Page(browser, stack, shots)
    yield light
    light.close()


@pytest.fixture
def page(pages):
    pages.errors.clear()
    yield pages
    assert pages.errors == [], pages.errors


def as_ms(text: str) -> float:
    """A duration as the page shows it ("7.0 ms", "1.00 s") in milliseconds."""
    value, unit = text.split()
    return float(value) * (1000 if unit == "s" else 1)


def node_ids(p: Page) -> list[str]:
    return p.page.eval_on_selector_all(
        "#find-results tbody tr td:nth-child(2)", "tds => tds.map(td => td.title)"
    )


def test_find_by_each_filter_histogram_and_autocomplete(page, stack):
    p = page
    p.go("#/find?range=1h")
    everything = p.rows("#find-results")
    assert len(everything) >= 50  # the demo traffic
    p.page.wait_for_selector("#histogram rect.bar")
    assert p.page.locator("#histogram a").count() >= 1
    p.shot("find")

    # through the form: request id with another sampling digit, Enter submits
    rid = stack.request_ids["normal"]
    p.page.fill("#f-id", rid[:14] + "b" + rid[15:])
    p.then_ready(lambda: p.page.press("#f-id", "Enter"))
    rows = p.rows("#find-results")
    assert rows and {normalize_request_id(r[8]) for r in rows} == {normalize_request_id(rid)}
    assert "id=" in p.page.evaluate("location.hash")  # the search has a URL
    p.then_ready(lambda: p.page.click("#find-clear"))

    p.page.select_option("#f-status_class", "5")
    p.then_ready(lambda: p.page.click("#find-submit"))
    rows = p.rows("#find-results")
    assert rows and all(r[3].startswith("5") for r in rows)
    p.page.check("#f-retried")
    p.page.select_option("#f-status_class", "")
    p.then_ready(lambda: p.page.click("#find-submit"))
    rows = p.rows("#find-results")
    assert rows and all(int(r[5]) > 1 or "URX" in r[4] for r in rows)
    p.go("#/find?range=1h&min_ms=900")
    rows = p.rows("#find-results")
    assert rows and all(as_ms(r[6]) >= 900 for r in rows)  # the /delay timeouts

    # every other filter through the URL (what the form writes)
    with stack.api() as api:
        trace_id = api.get(f"/api/traces/{rid}").json()["trace_ids"][0]
    checks = {
        f"id={trace_id}": lambda r: normalize_request_id(r[8]) == normalize_request_id(rid),
        "service=" + everything[0][1]: lambda r: r[1] == everything[0][1],
        "cluster=catalog": lambda r: r[7] == "catalog",
        "path=/flaky/": lambda r: "/flaky/" in r[2],
        "authority=shop.local": lambda r: "shop.local/" in r[2],
        "method=GET": lambda r: r[2].startswith("GET "),
        "status=503": lambda r: r[3] == "503",
        "flag=UT": lambda r: "UT" in r[4].split(","),
    }
    for query, ok in checks.items():
        p.go("#/find?range=1h&" + query)
        rows = p.rows("#find-results")
        assert rows, query
        assert all(ok(r) for r in rows), (query, rows[:3])
    p.go("#/find?range=1h&proxy=meshscope-gateway")
    assert node_ids(p) and set(node_ids(p)) == {"meshscope-gateway"}
    with stack.api() as api:
        routes = api.get("/api/search/values", params={"field": "route_name"}).json()
    if routes:  # the lab's routes carry names only where the routes file gives them
        p.go("#/find?range=1h&route=" + routes[0])
        assert p.rows("#find-results")

    # histogram: a bar narrows the range to itself
    p.go("#/find?range=1h")
    before = p.page.inner_text("#find-total")
    bar = p.page.locator("#histogram a").first
    bar.focus()
    p.then_ready(lambda: p.page.keyboard.press("Enter"))
    narrowed = dict(x.split("=") for x in p.page.evaluate("location.hash").split("?")[1].split("&"))
    assert "range" not in narrowed and float(narrowed["end"]) - float(narrowed["start"]) <= 60
    assert p.page.inner_text("#find-total") != before and p.rows("#find-results")

    # autocomplete from the store
    p.go("#/find?range=1h")
    p.page.focus("#f-cluster")
    p.page.wait_for_function("document.querySelectorAll('#dl-cluster option').length >= 3")
    options = p.page.eval_on_selector_all("#dl-cluster option", "os => os.map(o => o.value)")
    assert {"webapp", "catalog", "inventory"} <= set(options)

    # a row opens its request; the keyboard reaches it as a link
    p.go("#/find?range=1h&id=" + CAPTURED_RID)
    p.then_ready(lambda: p.page.locator("#find-results tbody tr").first.click())
    assert p.page.evaluate("location.hash").startswith("#/request/")


def test_upload_a_real_capture_and_watch_progress_to_the_flow_graph(page, stack):
    p = page
    p.go("#/captures")
    p.page.set_input_files("#pcap-file", str(stack.pcap))
    # record what the bars show while it runs (polled in the page: a small capture is quick)
    p.page.evaluate("""() => { window.__seen = []; const t = setInterval(() => {
        const a = document.querySelector('#transfer-progress');
        const b = document.querySelector('#analysis-progress');
        if (a) window.__seen.push([a.value, b.value]); else clearInterval(t); }, 5); }""")
    p.then_ready(lambda: p.page.click("#upload"), 90_000)  # then the page moves on to the upload's view
    assert p.page.evaluate("location.hash").startswith("#/captures/")
    seen = p.page.evaluate("window.__seen || []")
    assert seen and max(s[0] for s in seen) == 1  # the transfer bar reached the end
    p.page.wait_for_selector("#upload-graph")
    flows = p.rows("#flows")
    assert flows and all(r[5] != "-" for r in flows)  # each flow names its request
    # the two captured requests, client → proxy → upstream all on one loopback, each its own flow
    assert [r[3] for r in flows if r[5] == normalize_request_id(CAPTURED_RID)] == ["200", "503"]
    assert p.rows("#captures")[0][1] in ("pcap", "pcapng")
    assert p.svg_problems("#upload-graph") == []
    p.shot("capture")
    # one flow's graph on its own, with a URL of its own; then back to all flows
    button = p.page.locator("#flows button[data-graph]").last
    flow_id = button.get_attribute("data-graph")
    button.click()
    p.page.wait_for_selector(f"#upload-graph[data-flow='{flow_id}'] text")
    assert f"flow={flow_id}" in p.page.evaluate("location.hash")
    assert "flow " + str(len(flows)) in p.page.inner_text("#fg-which")
    assert p.svg_problems("#upload-graph") == []
    texts = p.page.eval_on_selector_all("#upload-graph text", "ts => ts.map(t => t.textContent)")
    assert not [t for t in texts if t.startswith("+-")]  # no time before its section's start
    p.shot("capture-one-flow")
    upload_view = p.page.evaluate("location.hash")
    p.page.click("#fg-all")
    p.page.wait_for_selector("#upload-graph:not([data-flow]) text")
    assert "flow=" not in p.page.evaluate("location.hash")
    p.go(upload_view)  # the one-flow URL opens that flow's graph again
    p.page.wait_for_selector(f"#upload-graph[data-flow='{flow_id}'] text")
    p.go(upload_view.split("?")[0])
    # the flow filters
    p.page.fill("#flow-rid", CAPTURED_RID[:8])
    assert [r[3] for r in p.rows("#flows")] == ["200", "503"]  # the captured request's two flows only
    p.page.fill("#flow-rid", "")
    p.page.fill("#flow-nodeport", "1")
    assert p.rows("#flows") == []
    p.page.fill("#flow-nodeport", "")
    p.page.fill("#flow-host", "127.0.0.1")
    assert len(p.rows("#flows")) >= 1
    p.page.fill("#flow-status", "503")
    assert all("503" in r[3] for r in p.rows("#flows"))
    assert "status=503" in p.page.evaluate("location.hash")  # the filtered list has a URL
    # the uploads list shows it done, without damage
    p.go("#/captures")
    row = next(r for r in p.rows("#uploads") if "lo.pcap" in r[1])
    assert row[3] == "done" and row[5] == "none"


def test_request_hops_waterfall_packets_and_graph(page, stack):
    p = page
    p.go("#/request/" + CAPTURED_RID)
    hops = p.rows("#hops")
    assert hops and hops[0][1] in ("gateway", "proxy", "sidecar")
    assert p.page.locator("#waterfall .span").count() >= len(hops)
    assert p.page.locator("#waterfall .span:not(.hop)").count() >= 1  # the proxy's Zipkin spans
    packets = p.rows("#packets")
    assert packets and all(r[0] == "lo.pcap" for r in packets)
    assert p.page.locator("#packets a[href^='#/captures/']").count() == len(packets)
    p.page.wait_for_selector("#request-graph text")
    assert p.svg_problems("#request-graph") == []
    texts = p.page.eval_on_selector_all("#request-graph text", "ts => ts.map(t => t.textContent)")
    assert not [t for t in texts if t.startswith("+-")]
    assert p.page.locator("#request-ids button.copy").count() >= 2
    link = p.page.inner_text("#request-ids dd:last-of-type .mono")
    assert link.endswith("#/request/" + normalize_request_id(CAPTURED_RID))
    # zoom: bigger, then back
    width = p.page.eval_on_selector("#request-graph", "s => s.getBoundingClientRect().width")
    p.page.click("button[aria-label='zoom in']")
    assert p.page.eval_on_selector("#request-graph", "s => s.getBoundingClientRect().width") > width * 1.2
    p.shot("request")
    # the header box opens a request by trace id too
    with stack.api() as api:
        trace_id = api.get(f"/api/traces/{CAPTURED_RID}").json()["trace_ids"][0]
    p.page.fill("#goto-id", trace_id)
    p.then_ready(lambda: p.page.press("#goto-id", "Enter"))
    assert len(p.rows("#hops")) == len(hops)


def test_map_shows_the_mesh_and_opens_requests(page, stack):
    p = page
    p.go("#/map?range=1h")
    nodes = p.page.eval_on_selector_all(
        "#map-svg a.node", "as => as.map(a => a.querySelector('title').textContent)"
    )
    assert any("catalog" in n for n in nodes) and any("inventory" in n for n in nodes)
    edges = p.rows("#map-edges")
    catalog = next(r for r in edges if r[2] == "catalog")
    assert catalog[8] in ("degraded", "failing") and catalog[5] != "0.0 %"  # the 503s
    assert p.svg_problems("#map-svg") == []
    p.shot("map")
    p.then_ready(lambda: p.page.locator("#map-svg a.node", has_text="catalog").first.click())
    rows = p.rows("#find-results")
    assert rows and all(r[7] == "catalog" for r in rows)


def test_proxies_with_loss_accounting_and_a_quiet_proxy(page, stack):
    p = page
    # a second proxy that went quiet an hour ago: one access record written through the store writer
    settings = _settings(stack)
    write_records(
        settings,
        [
            AccessRecord(
                start_time=time.time() - 3600,
                node_id="quiet-proxy",
                node_cluster="legacy",
                request_id=str(uuid.uuid4()),
                response_code=200,
            )
        ],
    )
    p.go("#/proxies")
    rows = {r[1]: r for r in p.rows("#proxies")}
    gateway = rows["meshscope-gateway"]
    assert gateway[0] == "sending" and int(gateway[3].replace(",", "")) >= 50
    assert gateway[6].isdigit() and gateway[8].isdigit()  # written, arrived from the admin stats
    assert rows["quiet-proxy"][0] == "quiet"
    assert "quiet-proxy" in p.page.inner_text(".warnbox")
    p.shot("proxies")


def test_alert_fires_then_resolves(page, stack):
    p = page
    with stack.api() as api:

        def alerts(state):
            return {
                (a["rule"], a["group_key"])
                for a in api.get("/api/alerts", params={"state": state}).json()["items"]
            }

        wait_for(
            lambda: ("upstream-5xx-spike", "upstream_cluster=catalog") in alerts("firing"),
            120,
            "the 5xx alert",
        )
    p.go("#/alerts")
    cards = p.page.locator("#firing article.alert-group")
    if ("upstream-5xx-spike", "upstream_cluster=catalog") not in _resolved(stack):
        assert p.page.locator("#firing article[data-group='upstream_cluster=catalog']").count() == 1
        assert cards.first.locator("a[href^='#/request/']").count() >= 1  # sample requests link to traces
        p.shot("alerts-firing")
    zone = p.page.evaluate(
        "z => new Intl.DateTimeFormat('en', {timeZone: z, timeZoneName: 'short'}).formatToParts("
        "new Date()).find(x => x.type === 'timeZoneName').value",
        ZONE,
    )
    assert all(r[5].endswith(" " + zone) for r in p.rows("#alert-history"))  # times say their zone
    wait_for(
        lambda: ("upstream-5xx-spike", "upstream_cluster=catalog") in _resolved(stack), 120, "its resolution"
    )
    p.go("#/alerts")
    assert p.page.locator("#firing article[data-group='upstream_cluster=catalog']").count() == 0
    history = [
        r
        for r in p.rows("#alert-history")
        if r[1] == "upstream-5xx-spike" and r[2] == "upstream_cluster=catalog"
    ]
    assert {r[0] for r in history} == {"resolved", "firing, since resolved"}
    assert p.page.locator("#alert-history .pill.firing").count() == len(
        [a for a in p.rows("#alert-history") if a[0] == "firing"]
    )  # red only for what still fires
    p.shot("alerts-resolved")


def test_every_view_accessible_in_light_and_dark(browser, stack, shots, pages):
    with stack.api() as api:
        upload = api.get("/api/pcaps").json()[0]["id"]
    views = [
        "#/find?range=1h",
        "#/map?range=1h",
        f"#/request/{CAPTURED_RID}",
        "#/captures",
        f"#/captures/{upload}",
        "#/alerts",
        "#/proxies",
    ]
    dark = Page(browser, stack, shots, "dark")
    try:
        for p in (pages, dark):
            p.errors.clear()
            for i, view in enumerate(views):
                p.go(view)
                p.page.wait_for_timeout(100)
                assert p.axe_serious() == [], (p.scheme, view)
                if p is dark:
                    p.shot(f"{i}-" + view.split("?")[0].strip("#/").split("/")[0])
            assert p.errors == [], p.errors
        # the keyboard alone: Tab reaches the nav, Enter follows it
        pages.go("#/find")
        pages.page.focus("nav a[data-view='alerts']")
        pages.then_ready(lambda: pages.page.keyboard.press("Enter"))
        assert pages.page.evaluate("location.hash") == "#/alerts"
    finally:
        dark.close()


def test_unknown_request_shows_a_message(page):
    p = page
    p.go("#/request/no-such-request")
    assert "nothing known" in p.page.inner_text("#view .status")
    p.errors[:] = [e for e in p.errors if "404" not in e]  # the API's answer, logged by Chromium


def _settings(stack: RunningStack):
    from meshscope.settings import Settings

    return Settings(data_dir=stack.data_dir)


def _resolved(stack: RunningStack) -> set:
    with stack.api() as api:
        items = api.get("/api/alerts", params={"state": "resolved"}).json()["items"]
    return {(a["rule"], a["group_key"]) for a in items}


def test_exposed_api_page_asks_for_the_token(data_dir, browser):
    from tests.api.conftest import serve, settings_for

    running = serve(settings_for(data_dir, host="0.0.0.0", api_token="page-token"))
    try:
        page = browser.new_page()
        page.goto(running.url + "/#/alerts")
        page.wait_for_selector("#token-box:not([hidden])")
        assert "needs a token" in page.inner_text("#view")
        page.fill("#token", "page-token")
        page.dispatch_event("#token", "change")
        page.wait_for_selector("#alert-history, #firing .empty")
        assert "nothing is firing" in page.inner_text("#firing")
        page.close()
    finally:
        running.stop()
