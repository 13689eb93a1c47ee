"""benchmarks/chaos.py stays runnable: two short fault cycles of the embedded shape (SIGKILL, then SIGTERM of
`meshscope up` and its own Envoy under generator and Envoy load) lose nothing acknowledged, store nothing
twice, take the Envoy along each time and report every Envoy loss (or a bound that holds it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.collector.envoy_lab import need_envoy
from tests.conftest import need_root

pytestmark = [pytest.mark.envoy, pytest.mark.root, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_two_chaos_cycles_lose_nothing_acknowledged():
    need_root()
    need_envoy()
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--shapes", "embedded",
                          "--cycles", "2", "--load-seconds", "1", "--down-seconds", "0.5", "--quiet", "4",
                          "--settle", "60", "--disk", "64m"],
                         capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert ("embedded: lost-acknowledged 0, duplicated 0, unreported losses 0, Envoy rows short 0 -> OK"
            in out.stdout), out.stdout
    rows = [line for line in out.stdout.splitlines() if "|" in line and " als " in f" {line} "]
    assert rows and all(int(row.split("|")[3]) > 0 for row in rows), out.stdout  # acknowledged some
    assert "'Envoy died with up (SIGKILL)': 1, 'Envoy died with up (SIGTERM)': 1" in out.stdout, out.stdout
    assert "below the truth" not in out.stdout, out.stdout  # every Envoy row's loss reported or bounded
    assert "restarts 2)" in out.stdout and "in 2 unseen windows" in out.stdout, out.stdout  # both runs' ends
