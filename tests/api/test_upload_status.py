"""An upload's typed status (a state machine saved as status.json, progress joined while analysing) and
the one analysis document: what the upload job writes is what ``meshscope pcap analyze --json`` prints."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from meshscope.decoders import analyze
from meshscope.pipelines import make_store

from meshscope.api.upload_status import BadTransition, ProgressFile, UploadState, UploadStatus
from meshscope.api.upload_store import FLOWS_FILE, run_analysis
from tests.api.captures import lab_captures
from tests.api.conftest import NOW, RID, settings_for

FILES = [{"name": "node.pcap", "stored": "ab12-1.cap", "size": 10, "format": "pcap"}]


def test_an_upload_moves_queued_analysing_done(tmp_path):
    status = UploadStatus.queued("ab" * 16, FILES, 10)
    status.save(tmp_path)
    assert UploadStatus.read(tmp_path) == status and status.state is UploadState.QUEUED
    status.start()
    status.save(tmp_path)
    ProgressFile(tmp_path / "progress.json")(25, 100)
    seen = UploadStatus.read(tmp_path)
    assert seen.state is UploadState.ANALYSING and seen.to_dict()["progress"] == 0.25
    seen.start()  # an analysis interrupted by a stop starts again
    seen.finish({"exchanges": 3, "flows": 1}, [])
    seen.save(tmp_path)
    stored = json.loads((tmp_path / "status.json").read_text())
    assert stored["state"] == "done" and stored["finished"] and "progress" not in stored
    done = UploadStatus.read(tmp_path)
    assert done.progress is None and "progress" not in done.to_dict()  # only while analysing
    with pytest.raises(BadTransition):
        done.fail("late")
    with pytest.raises(BadTransition):
        UploadStatus.queued("cd" * 16, FILES, 10).finish({}, [])


def test_status_json_of_another_version_is_read_and_kept(tmp_path):
    written = {"id": "ab" * 16, "state": "failed", "created": 1.5, "finished": 2.5, "files": FILES,
               "bytes": 10, "error": "bad capture", "counts": None, "captures": [], "note": "from v2"}
    (tmp_path / "status.json").write_text(json.dumps(written))
    status = UploadStatus.read(tmp_path)
    assert status.state is UploadState.FAILED and status.error == "bad capture"
    assert status.to_dict() == written  # nothing lost, the same key order
    (tmp_path / "status.json").write_text('{"id": "x"}')
    assert UploadStatus.read(tmp_path) is None  # not a status: unreadable, never a crash
    (tmp_path / "status.json").write_text(json.dumps({**written, "state": "bogus"}))
    assert UploadStatus.read(tmp_path) is None


def test_the_upload_job_writes_the_cli_document(tmp_path, data_dir):
    node, pod = lab_captures(tmp_path, RID, NOW)
    settings = settings_for(data_dir)
    folder = data_dir / "pcaps" / ("ef" * 16)
    folder.mkdir(parents=True)
    paths = [str(node), str(pod)]
    result = run_analysis(settings, paths, str(folder))
    served = orjson.loads((folder / FLOWS_FILE).read_bytes())
    cli = analyze(paths)
    assert served == {"id": folder.name, **cli.to_dict()}
    assert list(served) == ["id", "captures", "duplicates", "flows", "exchanges"]
    assert result.counts == {"exchanges": 3, "flows": 1, "packets": sum(r.packets for r in cli.reports),
                             "duplicates": cli.duplicates}

    async def stored() -> int:
        async with make_store(settings) as store:
            return await store.count("exchange")

    assert asyncio.run(stored()) == 3
