"""`meshscope pcap analyze`: text, --json, --svg, --mermaid, the progress bar only on a terminal, and
bad input as one line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from meshscope.decoders.samples import NODEPORT_LAB

from meshscope.cli import main

MESHSCOPE = [sys.executable, "-m", "meshscope.cli"]


def test_text_lists_the_flows_with_their_hops(capsys):
    assert main(["pcap", "analyze", str(NODEPORT_LAB)]) == 0
    out = capsys.readouterr().out
    assert out.count("nat-dnat") == 4 and out.count("l7-proxy") == 3 and out.count("tls-passthrough") == 1
    assert "NodePort 30000" in out and "NodePort 30443" in out and "SNI secure.lab" in out
    assert "retries 1" in out and "default/webapp (10.10.0.9:8080)" in out
    assert "4 flows" in out


def test_json_carries_flows_exchanges_and_reports(capsys):
    assert main(["pcap", "analyze", "--json", str(NODEPORT_LAB)]) == 0
    doc = json.loads(capsys.readouterr().out)
    kinds = sorted(tuple(h["kind"] for h in f["hops"]) for f in doc["flows"] if f["hops"])
    assert kinds == [("nat-dnat", "l7-proxy", "app-call")] * 3 + [("nat-dnat", "tls-passthrough")]
    assert doc["captures"][0]["capture"] == "nodeport-lab.pcap" and doc["captures"][0]["packets"] > 200
    ex = doc["exchanges"][0]
    assert {"src", "sport", "dst", "dport", "client_isn"} <= set(ex["conn"]) and "headers" in ex
    assert any(e.get("sni") == "secure.lab" for e in doc["exchanges"])


def test_svg_and_mermaid(tmp_path, capsys):
    out = tmp_path / "flows.svg"
    assert main(["pcap", "analyze", "--svg", str(out), "--mermaid", str(NODEPORT_LAB)]) == 0
    assert out.read_text().startswith("<svg") and "ClientHello SNI secure.lab" in out.read_text()
    assert capsys.readouterr().out.startswith("sequenceDiagram")


def test_two_captures_analysed_together(tmp_path, capsys):
    # the same capture under two names: every connection is a copy, folded, no new hops
    other = tmp_path / "copy.pcap"
    shutil.copy(NODEPORT_LAB, other)
    assert main(["pcap", "analyze", "--json", str(NODEPORT_LAB), str(other)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len([f for f in doc["flows"] if f["hops"]]) == 4 and doc["duplicates"] == len(doc["exchanges"])


def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(os.urandom(3000))
    return {
        "missing": [str(tmp_path / "nope.pcap")],
        "empty": [str(empty)],
        "garbage": [str(garbage)],
        "unwritable svg": ["--svg", str(tmp_path / "no" / "such" / "dir.svg"), str(NODEPORT_LAB)],
    }


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "unwritable svg"])
def test_bad_input_is_one_line_and_non_zero(tmp_path, case):
    argv = _bad_inputs(tmp_path)[case]
    r = subprocess.run([*MESHSCOPE, "pcap", "analyze", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("meshscope: ")


def test_truncated_capture_is_a_best_effort_result(tmp_path, capsys):
    cut = tmp_path / "cut.pcap"
    data = NODEPORT_LAB.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert main(["pcap", "analyze", "--json", str(cut)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["captures"][0]["truncated"] and any(f["hops"] for f in doc["flows"])


def _run_with_stderr_on_a_terminal(argv: list[str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    p = subprocess.Popen([*MESHSCOPE, *argv], stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return p.wait(60), b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(tmp_path):
    code, tty_err = _run_with_stderr_on_a_terminal(["pcap", "analyze", str(NODEPORT_LAB)])
    assert code == 0 and "decoding [" in tty_err and "100.0%" in tty_err
    r = subprocess.run(
        [*MESHSCOPE, "pcap", "analyze", str(NODEPORT_LAB)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stderr == ""
