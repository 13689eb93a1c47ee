"""Capture uploads over real HTTP: analysis in the background, flows, graph, bad input, limits, restart."""

from __future__ import annotations

import httpx

from meshscope.api.schemas import UploadFlows
from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, serve, wait_done


def upload_lab(client: httpx.Client, tmp_path) -> dict:
    node, pod = lab_captures(tmp_path, RID, NOW)
    files = [
        ("file", ("node eth0.pcap", node.read_bytes(), "application/vnd.tcpdump.pcap")),
        ("file", ("../../etc/pod.pcap", pod.read_bytes(), "application/octet-stream")),
    ]
    r = client.post("/api/pcaps", files=files, data={"note": "two capture points"})
    assert r.status_code == 202, r.text
    return r.json()


def test_two_captures_of_one_nat_hop_become_one_flow(api, tmp_path):
    with api.client() as c:
        accepted = upload_lab(c, tmp_path)
        assert accepted["state"] == "queued"
        assert [f["name"] for f in accepted["files"]] == ["node eth0.pcap", "pod.pcap"]  # no directories kept
        status = wait_done(c, accepted["id"])
        assert status["state"] == "done", status
        assert status["progress"] is None  # only while analysing
        assert status["counts"]["flows"] == 1 and status["counts"]["exchanges"] == 3
        assert {cap["name"] for cap in status["captures"]} == {"node eth0.pcap", "pod.pcap"}
        assert all(cap["damage"] == [] for cap in status["captures"])
        flows = c.get(f"/api/pcaps/{accepted['id']}/flows").json()
        # served from disk as written by the worker: exactly what the response model makes of it
        assert flows["id"] == accepted["id"] and len(flows["exchanges"]) == 3
        assert UploadFlows.model_validate(flows).model_dump(mode="json") == flows
        (flow,) = flows["flows"]
        assert [h["kind"] for h in flow["hops"]] == ["nat-dnat", "l7-proxy"]
        assert flow["hops"][0]["nodeport"] == 30000
        svg = c.get(f"/api/pcaps/{accepted['id']}/graph.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert svg.text.startswith("<svg") and "NodePort 30000" in svg.text and "10.10.0.9" in svg.text
        listed = c.get("/api/pcaps").json()
        assert [u["id"] for u in listed] == [accepted["id"]]
    # stored files are named from the generated id, never from the request
    folder = api.settings.data_dir / "pcaps" / accepted["id"]
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".cap") == [
        f"{accepted['id'][:12]}-1.cap",
        f"{accepted['id'][:12]}-2.cap",
    ]


def test_raw_body_upload_and_damage_report(api, tmp_path):
    node, _ = lab_captures(tmp_path, RID, NOW)
    truncated = node.read_bytes()[:-7]
    with api.client() as c:
        r = c.post("/api/pcaps", content=truncated, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        status = wait_done(c, r.json()["id"])
        assert status["state"] == "done"
        (cap,) = status["captures"]
        assert cap["format"] == "pcap" and cap["truncated"] and cap["damage"]


def test_tunnelled_capture_reports_what_it_did_not_decode(api, tmp_path):
    from tests.decoders.capture_builders import Conversation, http_request, http_response
    from tests.decoders.tunnel_builders import UNDECODABLE, undecodable_frames, wrapped, write_tunnelled

    c = Conversation().handshake()
    c.send(True, http_request("GET", "/through-l2tp"))
    c.send(False, http_response(200, b"inner"))
    frames = wrapped(c.close().packets, "l2tp") + undecodable_frames(1.0)
    data = write_tunnelled(tmp_path / "access.pcap", frames).read_bytes()
    with api.client() as client:
        r = client.post("/api/pcaps", files=[("file", ("access.pcap", data, "application/octet-stream"))])
        assert r.status_code == 202, r.text
        status = wait_done(client, r.json()["id"])
        assert status["state"] == "done" and status["counts"]["exchanges"] == 1
        (cap,) = status["captures"]
        assert cap["not_decoded"] == UNDECODABLE


def test_bad_uploads_get_clear_4xx_json(api, tmp_path):
    node, _ = lab_captures(tmp_path, RID, NOW)
    with api.client() as c:
        cases = [
            (dict(content=b"GET / HTTP/1.1\r\n\r\n" * 10), 415, "not a pcap or pcapng"),
            (dict(content=b""), 400, "empty file"),
            (dict(files=[("file", ("empty.pcap", b"", "application/octet-stream"))]), 400, "empty file"),
            (
                dict(files=[("file", ("short.pcap", b"\xd4\xc3", "application/octet-stream"))]),
                415,
                "too short",
            ),
            (
                dict(
                    content=b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--x--\r\n',
                    headers={"content-type": "multipart/form-data; boundary=x"},
                ),
                400,
                "no capture",
            ),
            (
                dict(content=b"\xd4\xc3\xb2\xa1", headers={"content-type": "multipart/form-data"}),
                400,
                "boundary",
            ),
            (
                dict(
                    content=b'--x\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nzz',
                    headers={"content-type": "multipart/form-data; boundary=x"},
                ),
                415,
                None,
            ),
            (dict(content=b"x" * 300_000), 413, "limit"),
            (
                dict(files=[("file", ("big.pcap", node.read_bytes() * 400, "application/octet-stream"))]),
                413,
                "limit",
            ),
        ]
        for kwargs, code, words in cases:
            r = c.post("/api/pcaps", **kwargs)
            assert r.status_code == code, (kwargs.keys(), r.status_code, r.text)
            assert "detail" in r.json()
            if words:
                assert words in r.json()["detail"]
        assert c.get("/api/pcaps").json() == []  # nothing refused was kept
        assert not any((api.settings.data_dir / "pcaps").iterdir())
        assert c.get("/api/pcaps/" + "0" * 32).status_code == 404
        assert c.get("/api/pcaps/../../etc/passwd").status_code == 404
        assert c.get("/api/pcaps/not-an-id").status_code == 422
        assert "healthz" in c.get("/healthz").text or c.get("/healthz").json()["status"] == "ok"


def test_count_limit(api, tmp_path):
    node, _ = lab_captures(tmp_path, RID, NOW)
    with api.client() as c:
        ids = []
        for _ in range(api.settings.upload_max_count):
            r = c.post("/api/pcaps", content=node.read_bytes())
            assert r.status_code == 202
            ids.append(r.json()["id"])
        r = c.post("/api/pcaps", content=node.read_bytes())
        assert r.status_code == 429 and "limit" in r.json()["detail"]
        for i in ids:
            wait_done(c, i)
        # deleting one frees a place
        assert c.delete(f"/api/pcaps/{ids[0]}").status_code == 204
        assert c.get(f"/api/pcaps/{ids[0]}").status_code == 404
        assert c.delete(f"/api/pcaps/{ids[0]}").status_code == 404
        assert c.post("/api/pcaps", content=node.read_bytes()).status_code == 202


def test_results_survive_a_restart(api_settings, tmp_path):
    first = serve(api_settings)
    try:
        with first.client() as c:
            accepted = upload_lab(c, tmp_path)
            wait_done(c, accepted["id"])
            before = c.get(f"/api/pcaps/{accepted['id']}/flows").json()
    finally:
        first.stop()
    second = serve(api_settings)  # a new app instance on the same data dir
    try:
        with second.client() as c:
            assert c.get(f"/api/pcaps/{accepted['id']}").json()["state"] == "done"
            assert c.get(f"/api/pcaps/{accepted['id']}/flows").json() == before
            assert c.get(f"/api/pcaps/{accepted['id']}/graph.svg").status_code == 200
            # the exchanges went to the store: the request's trace carries them
            trace = c.get(f"/api/traces/{RID}").json()
            assert len(trace["exchanges"]) == 3 and len(trace["flows"]) == 1
    finally:
        second.stop()


def test_bundled_lab_capture_real_tcpdump(api):
    """The decoders' sample: `tcpdump -i any` on the NodePort lab (real Envoy gateway, real iptables DNAT)."""
    from meshscope.decoders.samples import NODEPORT_LAB

    with api.client() as c:
        r = c.post(
            "/api/pcaps",
            content=NODEPORT_LAB.read_bytes(),
            headers={"content-type": "application/vnd.tcpdump.pcap"},
        )
        assert r.status_code == 202
        status = wait_done(c, r.json()["id"])
        assert status["state"] == "done" and status["counts"]["flows"] == 4
        flows = c.get(f"/api/pcaps/{status['id']}/flows").json()["flows"]
        kinds = sorted(tuple(h["kind"] for h in f["hops"]) for f in flows)
        assert kinds.count(("nat-dnat", "l7-proxy", "app-call")) == 3
        assert ("nat-dnat", "tls-passthrough") in kinds
        # the gateway rewrote the sampling digit (4 → 9); the trace is found by either
        for rid in ("a065da82-4ada-4242-bf01-dfe6fbc11330", "a065da82-4ada-9242-bf01-dfe6fbc11330"):
            trace = c.get(f"/api/traces/{rid}").json()
            assert len(trace["flows"]) == 1 and len(trace["exchanges"]) >= 3
        assert "secure.lab" in c.get(f"/api/pcaps/{status['id']}/graph.svg").text


def test_upload_left_queued_by_a_crash_is_analysed_at_next_start(api_settings, tmp_path):
    """The on-disk state a crash leaves (capture stored, status still "queued") resumes at start-up."""
    import json
    import time as clock

    node, pod = lab_captures(tmp_path, RID, NOW)
    upload_id = "ab" * 16
    folder = api_settings.data_dir / "pcaps" / upload_id
    folder.mkdir(parents=True)
    files = []
    for i, src in enumerate((node, pod), 1):
        stored = f"{upload_id[:12]}-{i}.cap"
        (folder / stored).write_bytes(src.read_bytes())
        files.append({"name": src.name, "stored": stored, "size": src.stat().st_size, "format": "pcap"})
    status = {
        "id": upload_id,
        "state": "analysing",
        "created": clock.time(),
        "finished": None,
        "files": files,
        "bytes": sum(f["size"] for f in files),
        "error": None,
        "counts": None,
        "captures": [],
    }
    (folder / "status.json").write_text(json.dumps(status))
    running = serve(api_settings)
    try:
        with running.client() as c:
            done = wait_done(c, upload_id)
            assert done["state"] == "done" and done["counts"]["flows"] == 1
            assert len(c.get(f"/api/traces/{RID}").json()["exchanges"]) == 3
    finally:
        running.stop()


def test_progress_file_is_throttled(tmp_path):
    import json

    from meshscope.api.upload_status import ProgressFile

    progress = ProgressFile(tmp_path / "progress.json")
    progress(10, 100)
    progress(50, 100)  # within the interval: not written
    assert json.loads((tmp_path / "progress.json").read_text()) == {"done": 10, "total": 100}
    progress.last -= ProgressFile.INTERVAL
    progress(60, 100)
    assert json.loads((tmp_path / "progress.json").read_text()) == {"done": 60, "total": 100}


def test_client_that_hangs_up_mid_upload_leaves_nothing(api, tmp_path):
    import socket
    import time as clock
    from urllib.parse import urlparse

    node, _ = lab_captures(tmp_path, RID, NOW)
    url = urlparse(api.url)
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall(
            b"POST /api/pcaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 150000\r\n\r\n" + node.read_bytes()
        )
        clock.sleep(0.3)
        assert any((api.settings.data_dir / "pcaps").iterdir())  # the server has started writing it
    deadline = clock.monotonic() + 10
    while any((api.settings.data_dir / "pcaps").iterdir()) and clock.monotonic() < deadline:
        clock.sleep(0.05)
    assert not any((api.settings.data_dir / "pcaps").iterdir())
    with api.client() as c:
        assert c.get("/api/pcaps").json() == []
        assert c.post("/api/pcaps", content=node.read_bytes()).status_code == 202
