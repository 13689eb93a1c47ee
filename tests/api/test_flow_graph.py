"""One flow's graph of an upload (GET /api/pcaps/{id}/flows/{flow_id}/graph.svg) over real HTTP, from
the NAT-hop lab's two real captures."""

from __future__ import annotations

from tests.api.conftest import wait_done
from tests.api.test_pcaps import upload_lab


def test_one_flow_of_an_upload_as_its_own_graph(api, tmp_path):
    with api.client() as c:
        accepted = upload_lab(c, tmp_path)
        assert wait_done(c, accepted["id"])["state"] == "done"
        (flow,) = c.get(f"/api/pcaps/{accepted['id']}/flows").json()["flows"]
        svg = c.get(f"/api/pcaps/{accepted['id']}/flows/{flow['id']}/graph.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert svg.text.startswith("<svg") and "NodePort 30000" in svg.text and "10.10.0.9" in svg.text
        assert "default-src 'none'" in svg.headers["content-security-policy"]
        missing = c.get(f"/api/pcaps/{accepted['id']}/flows/no-such-flow/graph.svg")
        assert missing.status_code == 404 and "no-such-flow" in missing.json()["detail"]
        assert c.get(f"/api/pcaps/{'0' * 32}/flows/{flow['id']}/graph.svg").status_code == 404
