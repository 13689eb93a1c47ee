"""The analysis worker writes to the store and the upload's folder itself: it must not outlive the
server, an upload it left half written is analysed again at the next start without duplicates, and
uploads analysed by an earlier version (analysis.json only) are still served."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import httpx
import pytest
from meshscope.decoders.analysis import analyze

from benchmarks.make_capture import write_http_tls
from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, serve, settings_for, wait_done
from tests.api.test_upload_memory import api_process, stored_counts  # noqa: F401 - fixture


def children_of(pid: int) -> list[int]:
    """The pids of a process's children (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_stopping_the_server_ends_the_worker_and_the_next_start_finishes(data_dir, tmp_path):
    settings = settings_for(data_dir, upload_max_bytes=200 * 2**20)
    capture = tmp_path / "big.pcap"
    write_http_tls(capture, 300_000)
    first = serve(settings)
    try:
        with first.client() as c:
            r = c.post("/api/pcaps", content=capture.read_bytes())
            assert r.status_code == 202
            upload_id = r.json()["id"]
            deadline = time.monotonic() + 60
            while not 0 < (c.get(f"/api/pcaps/{upload_id}").json().get("progress") or 0) < 0.8:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            # mid-decoding: the worker and the decoders' processes it started
            workers = multiprocessing.active_children()
            assert workers
            pids = [w.pid for w in workers]
            pids += [p for w in workers for p in children_of(w.pid)]
    finally:
        first.stop()
    deadline = time.monotonic() + 10
    while alive := [p for p in pids if running(p)]:
        assert time.monotonic() < deadline, f"processes {alive} outlived the server"
        time.sleep(0.05)
    folder = data_dir / "pcaps" / upload_id
    time.sleep(1)
    assert json.loads((folder / "status.json").read_text())["state"] == "analysing"
    assert not (folder / "flows.json").exists()
    second = serve(settings)
    try:
        with second.client() as c:
            status = wait_done(c, upload_id, timeout=180)
            assert status["state"] == "done", status
            assert status["counts"]["exchanges"] == 42_000
    finally:
        second.stop()
    assert stored_counts(settings) == {"exchange": 42_000, "flow": 0}
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{upload_id[:12]}-1.cap", "flows.json", "graph.svg", "progress.json", "status.json"
    ]


def test_upload_analysed_by_an_earlier_version_is_still_served(api_settings, tmp_path):
    """Folders written before flows.json existed hold the whole analysis in analysis.json."""
    node, pod = lab_captures(tmp_path, RID, NOW)
    upload_id = "cd" * 16
    folder = api_settings.data_dir / "pcaps" / upload_id
    folder.mkdir(parents=True)
    analysis = analyze([node, pod])
    (folder / "analysis.json").write_bytes(analysis.to_json())
    status = {
        "id": upload_id, "state": "done", "created": time.time(), "finished": time.time(),
        "files": [], "bytes": 0, "error": None, "counts": {"exchanges": 3, "flows": 1}, "captures": [],
    }
    (folder / "status.json").write_text(json.dumps(status))
    running = serve(api_settings)
    try:
        with running.client() as c:
            flows = c.get(f"/api/pcaps/{upload_id}/flows").raise_for_status().json()
            assert flows["id"] == upload_id
            assert len(flows["flows"]) == 1 and len(flows["exchanges"]) == 3
            assert flows["flows"][0]["id"] == analysis.flows[0].id
    finally:
        running.stop()


@pytest.mark.slow
def test_worker_ends_with_a_server_killed_outright(api_process, tmp_path):  # noqa: F811 - fixture
    """SIGKILL gives the server no chance to stop its worker: the worker ends by itself (and the
    decoders' processes with it) instead of writing on for a server that is gone."""
    capture = tmp_path / "big.pcap"
    write_http_tls(capture, 300_000)
    with httpx.Client(base_url=api_process.url, timeout=60) as c:
        r = c.post("/api/pcaps", content=capture.read_bytes())
        assert r.status_code == 202, r.text
        upload_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while not 0 < (c.get(f"/api/pcaps/{upload_id}").json().get("progress") or 0) < 0.8:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    workers = children_of(api_process.proc.pid)
    pids = workers + [p for w in workers for p in children_of(w)]
    assert workers
    api_process.proc.kill()
    api_process.proc.wait(10)
    deadline = time.monotonic() + 10
    while alive := [p for p in pids if running(p)]:
        assert time.monotonic() < deadline, f"processes {alive} outlived the killed server"
        time.sleep(0.05)
    assert not (api_process.data_dir / "pcaps" / upload_id / "flows.json").exists()
