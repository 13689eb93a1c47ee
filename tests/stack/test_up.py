"""`meshscope up --traffic` end to end: a newcomer's five minutes, checked through the API over HTTP,
then a clean shutdown that leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def _children(pid: int) -> set[int]:
    """Every live descendant of pid (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_with_traffic_then_clean_shutdown(tmp_path):
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(tmp_path / "data")}))
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen([*MESHSCOPE, "--config", str(config), "up", "--traffic"], stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    api = httpx.Client(base_url=f"http://127.0.0.1:{ports['api_port']}", timeout=10)
    try:
        output = _wait_for(lambda: "meshscope is up" in Path(log.name).read_text()
                           and Path(log.name).read_text(), 120, "the stack and its demo traffic")
        envoys = [p for p in _children(proc.pid) if "envoy" in Path(f"/proc/{p}/cmdline").read_text()]
        assert envoys, "the bundled Envoy runs under meshscope up"

        # a traced request: its access record resolves through the API
        rid = re.search(r"normal\s+meshscope trace (\S+)", output).group(1)
        trace = _wait_for(lambda: (t := api.get(f"/api/traces/{rid}").json()).get("hops") and t,
                          30, "the trace of a demo request")
        assert trace["hops"][0]["upstream_cluster"] == "webapp"
        assert trace["hops"][0]["node_id"] == "meshscope-gateway"

        # after the rules' reference window, the 5xx burst on catalog and the retry burst on inventory
        # fire the default spike rules, for those clusters only
        _wait_for(lambda: "demo bursts sent" in Path(log.name).read_text(), 100, "the demo bursts")
        want = {("upstream-5xx-spike", "upstream_cluster=catalog"),
                ("upstream-retry-spike", "upstream_cluster=inventory")}
        groups = _wait_for(lambda: want <= (g := {(a["rule"], a["group_key"]) for a in api.get(
            "/api/alerts", params={"state": "firing"}).json()["items"]}) and g, 15, "both alerts")
        assert groups == want

        # the sample capture of the NodePort lab path was uploaded and analysed into flows with a NAT hop
        upload = re.search(r"/api/pcaps/(\w+)/graph.svg", output).group(1)
        _wait_for(lambda: api.get(f"/api/pcaps/{upload}").json().get("state") == "done", 60, "analysis")
        flows = api.get(f"/api/pcaps/{upload}/flows").json()
        flows = flows["flows"] if isinstance(flows, dict) else flows
        kinds = {hop["kind"] for flow in flows for hop in flow["hops"]}
        assert "nat-dnat" in kinds and "l7-proxy" in kinds
        assert api.get(f"/api/pcaps/{upload}/graph.svg").text.lstrip().startswith(("<svg", "<?xml"))
    finally:
        descendants = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        api.close()
    assert code == 0, Path(log.name).read_text()[-3000:]
    # helpers such as multiprocessing's resource tracker exit on their own a moment after their parent
    deadline = time.monotonic() + 10
    while (left := [p for p in descendants if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind after shutdown: {left}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['api_port']}/healthz", timeout=2)


def test_second_up_reuses_the_stored_data(tmp_path):
    """Records stored by one run are there for the next (same data dir)."""
    ports = {k: free_port() for k in ("api_port", "zipkin_port", "als_port", "envoy_admin_port",
                                      "proxy_port", "demo_upstream_port", "otlp_grpc_port",
                                      "otlp_http_port")}
    config = tmp_path / "meshscope.yaml"
    config.write_text(yaml.safe_dump({**ports, "data_dir": str(tmp_path / "data")}))
    base = f"http://127.0.0.1:{ports['api_port']}"

    def one_run(send: bool) -> int:
        proc = subprocess.Popen([*MESHSCOPE, "--config", str(config), "up"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_for(lambda: _healthy(base), 60, "the API")
            if send:
                _wait_for(lambda: _healthy(f"http://127.0.0.1:{ports['proxy_port']}", "/headers"), 30,
                          "the proxy")
                for _ in range(5):
                    httpx.get(f"http://127.0.0.1:{ports['proxy_port']}/headers", timeout=5)
                return _wait_for(lambda: _count(base) >= 5 and _count(base), 30, "stored records")
            return _count(base)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    stored = one_run(send=True)
    assert one_run(send=False) == stored


def _healthy(base: str, path: str = "/healthz") -> bool:
    try:
        return httpx.get(base + path, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _count(base: str) -> int:
    page = httpx.get(base + "/api/records", params={"limit": 1000}, timeout=5).json()
    return len(page["items"])
