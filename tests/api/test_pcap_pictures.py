"""An uploaded capture with nothing to stitch still gets a picture, and the capture routes take the
command line's filters: ``GET /api/pcaps/{id}/graph.svg`` and ``/flows`` with host, port, protocol,
status and request_id."""

from __future__ import annotations

import io

import httpx
import orjson
import pytest
from meshscope.decoders import analyze

from meshscope.api import capture_view
from meshscope.api.schemas import UploadFlows
from tests.api.conftest import serve, settings_for, wait_done
from tests.decoders.picture_captures import RID, busy_capture, ordinary_capture
from tests.decoders.test_capture_pictures import arrows, svg_texts


def upload(c: httpx.Client, path) -> str:
    r = c.post("/api/pcaps", content=path.read_bytes(), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    status = wait_done(c, r.json()["id"], timeout=240)  # a shared machine under load can be slow
    assert status["state"] == "done", status
    return status["id"]


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory):
    """One server for the module, holding the two uploads (the busy one takes seconds to craft)."""
    tmp = tmp_path_factory.mktemp("pictures-api")
    api = serve(settings_for(tmp / "data", upload_max_bytes=200_000, upload_max_count=5))
    try:
        with api.client() as c:
            ordinary = upload(c, ordinary_capture(tmp / "ordinary.pcap"))
            busy = upload(c, busy_capture(tmp / "busy.pcap", clients=20, per_client=6))
            yield c, ordinary, busy
    finally:
        api.stop()


def test_graph_of_an_ordinary_upload_draws_its_exchanges_and_filters_narrow_it(uploaded):
    c, ordinary, _ = uploaded
    r = c.get(f"/api/pcaps/{ordinary}/graph.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert arrows(r.text) == {"handshake": 3, "hello": 1, "request": 3, "response": 4, "error": 0}
    assert "ClientHello SNI secure.example.com" in "\n".join(svg_texts(r.text))
    grpc = c.get(f"/api/pcaps/{ordinary}/graph.svg", params={"protocol": "grpc"})
    assert grpc.status_code == 200 and "Content-Security-Policy" in grpc.headers
    texts = svg_texts(grpc.text)
    assert "gRPC Catalog/List stream 1" in texts and "ClientHello" not in "\n".join(texts)
    assert arrows(grpc.text)["request"] == 1 and texts[0].startswith("1 exchange matching protocol grpc")
    none = c.get(f"/api/pcaps/{ordinary}/graph.svg", params={"host": "10.9.9.9"})
    assert "no exchange matching host 10.9.9.9" in svg_texts(none.text)


def test_flows_route_filters_its_document(uploaded):
    c, ordinary, _ = uploaded
    whole = c.get(f"/api/pcaps/{ordinary}/flows").json()
    assert len(whole["exchanges"]) == 4 and "filter" not in whole  # served from disk as it was
    doc = c.get(f"/api/pcaps/{ordinary}/flows", params={"status": "5xx"}).json()
    assert doc["filter"] == "status 5xx" and [e["status"] for e in doc["exchanges"]] == [503]
    assert UploadFlows.model_validate(doc).model_dump(mode="json") == doc
    by_rid = c.get(f"/api/pcaps/{ordinary}/flows", params={"request_id": RID[:8], "port": 80}).json()
    assert [e["uri"] for e in by_rid["exchanges"]] == ["/products"]
    either_end = c.get(f"/api/pcaps/{ordinary}/flows", params={"host": "10.0.0.1"}).json()
    assert len(either_end["exchanges"]) == 4


@pytest.mark.parametrize("params, code, words", [
    ({"protocol": "smtp"}, 400, "protocol 'smtp' is none of"),
    ({"status": "6xx"}, 400, "status '6xx'"),
    ({"port": "http"}, 422, ""),
    ({"port": 0}, 422, ""),
])
def test_bad_filters_get_a_clear_4xx(uploaded, params, code, words):
    c, ordinary, _ = uploaded
    for route in ("flows", "graph.svg"):
        r = c.get(f"/api/pcaps/{ordinary}/{route}", params=params)
        assert r.status_code == code, r.text
        assert words in r.text


def test_a_busy_upload_gets_an_overview(uploaded):
    c, _, busy = uploaded
    svg = c.get(f"/api/pcaps/{busy}/graph.svg").text
    texts = svg_texts(svg)
    assert texts[0].startswith("120 exchanges between 23 hosts: more than 100 exchanges")
    assert "overview 1: 23 hosts, 60 conversations" in texts and arrows(svg)["error"] > 0
    one = c.get(f"/api/pcaps/{busy}/graph.svg", params={"host": "10.1.0.1"}).text
    assert sum(t.startswith("connection ") for t in svg_texts(one)) == 6


def test_the_document_is_read_as_a_stream_whatever_the_chunk_size(tmp_path, monkeypatch):
    """Filtered views read flows.json an exchange at a time: the same objects as loading it whole, even
    when a chunk ends inside an object, a string or a multi-byte character."""
    a = analyze([ordinary_capture(tmp_path / "ordinary.pcap")])
    out = io.BytesIO()
    a.exchanges = list(a.exchanges)
    for ex in a.exchanges:  # not ASCII, as a header off the wire may be
        ex.uri = (ex.uri or "") + "/é→ü"
    a.write_json(out, lead={"id": "u1"})
    assert "/é→ü".encode() in out.getvalue()
    path = tmp_path / "flows.json"
    path.write_bytes(out.getvalue())
    whole = orjson.loads(out.getvalue())
    for chunk in (1, 7, 64, 1 << 20):
        monkeypatch.setattr(capture_view, "CHUNK", chunk)
        head, exchanges = capture_view.read_document(path)
        assert {**head, "exchanges": list(exchanges)} == whole
    path.write_bytes(out.getvalue()[:-40])
    head, exchanges = capture_view.read_document(path)
    with pytest.raises(ValueError, match="end mid-object"):
        list(exchanges)
