"""Uploads as they come from the field: compressed captures (sniffed, not named), a capture that turns
out unreadable reported while the others are analysed, and a kubectl listing naming pods and services."""

from __future__ import annotations

import gzip
import json

import zstandard
from meshscope.decoders.samples import NODEPORT_LAB

from tests.api.conftest import wait_done


def test_a_compressed_capture_is_analysed_like_the_plain_one(api):
    with api.client() as c:
        ids = {}
        raw = NODEPORT_LAB.read_bytes()
        for kind, body in (("plain", raw), ("gzip", gzip.compress(raw)),
                           ("zstd", zstandard.ZstdCompressor().compress(raw))):
            r = c.post("/api/pcaps", content=body, headers={"content-type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            ids[kind] = r.json()["id"]
        done = {kind: wait_done(c, upload_id) for kind, upload_id in ids.items()}
        for kind, status in done.items():
            assert status["state"] == "done", status
            (cap,) = status["captures"]
            assert cap["compression"] == (None if kind == "plain" else kind)
            assert cap["error"] is None and cap["damage"] == []
            assert (status["counts"]["flows"], cap["packets"], cap["exchanges"]) == (
                done["plain"]["counts"]["flows"], done["plain"]["captures"][0]["packets"],
                done["plain"]["captures"][0]["exchanges"])


def test_an_unreadable_capture_is_reported_and_the_others_analysed(api):
    files = [
        ("file", ("lab.pcap.gz", gzip.compress(NODEPORT_LAB.read_bytes()), "application/gzip")),
        # gzip on the outside (accepted on upload), no capture inside: found out by the analysis
        ("file", ("notes.txt.gz", gzip.compress(b"meeting notes, not packets\n" * 20), "application/gzip")),
    ]
    with api.client() as c:
        r = c.post("/api/pcaps", files=files)
        assert r.status_code == 202, r.text
        status = wait_done(c, r.json()["id"])
        assert status["state"] == "done", status
        lab, notes = status["captures"]
        assert lab["name"] == "lab.pcap.gz" and lab["error"] is None and lab["compression"] == "gzip"
        assert notes["name"] == "notes.txt.gz"
        assert "not a pcap or pcapng file inside its gzip" in notes["error"]
        assert "/" not in notes["error"].split(":")[0]  # the stored name, not a path on the server
        assert status["counts"]["flows"] == 4


def test_a_kubectl_listing_labels_the_uploaded_capture(api):
    listing = {"kind": "List", "items": [
        {"kind": "Pod", "metadata": {"name": "loadgen-7d9f", "namespace": "default"},
         "status": {"podIP": "172.18.0.1"}},
        {"kind": "Service", "metadata": {"name": "ingress", "namespace": "istio-system"},
         "spec": {"clusterIP": "10.10.0.6"}},
    ]}
    files = [("file", ("lab.pcap", NODEPORT_LAB.read_bytes(), "application/vnd.tcpdump.pcap")),
             ("k8s-names", ("pods.json", json.dumps(listing).encode(), "application/json"))]
    with api.client() as c:
        r = c.post("/api/pcaps", files=files)
        assert r.status_code == 202, r.text
        assert [f["name"] for f in r.json()["files"]] == ["lab.pcap"]  # the listing is not a capture
        status = wait_done(c, r.json()["id"])
        assert status["state"] == "done", status
        doc = c.get(f"/api/pcaps/{status['id']}/flows").json()
        labelled = [e["conn"] for e in doc["exchanges"] if e["conn"]["src"] == "172.18.0.1"]
        assert labelled and all(x["labels"]["client.pod"] == "loadgen-7d9f" for x in labelled)
        to_gateway = [e["conn"]["labels"] for e in doc["exchanges"] if e["conn"]["dst"] == "10.10.0.6"]
        assert to_gateway and all(x["server.service"] == "ingress" for x in to_gateway)
        assert "default/loadgen-7d9f" in c.get(f"/api/pcaps/{status['id']}/graph.svg").text


def test_a_listing_that_names_nothing_is_refused_at_once(api):
    files = [("file", ("lab.pcap", NODEPORT_LAB.read_bytes(), "application/vnd.tcpdump.pcap")),
             ("k8s-names", ("pods.json", b"<html>not a listing</html>", "application/json"))]
    with api.client() as c:
        r = c.post("/api/pcaps", files=files)
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert detail.startswith("k8s-names: not JSON") and "/" not in detail.split("(")[0]
