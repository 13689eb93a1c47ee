"""meshscope installs one import name; its import contracts hold, and a broken one is caught."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from lint_imports import assemble, lint  # noqa: E402

TOP = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_top_level_name(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(TOP)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("meshscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"meshscope"}
    for data in ("meshscope/dashboards/grafana-prometheus.json", "meshscope/proxy/examples/retry.yaml",
                 "meshscope/pipelines/store/templates/access.json", "meshscope/api/static/app.js",
                 "meshscope/decoders/samples/nodeport-lab.pcap", "meshscope/decoders/analysis.py"):
        assert data in names
    for ext in ("meshscope/decoders/_record_scan.", "meshscope/model/_record_slots."):
        assert any(n.startswith(ext) and n.endswith(".so") for n in names), ext


def test_the_installed_copy_imports_components_under_meshscope_only(tmp_path):
    probe = ("import importlib.util as u, meshscope.decoders, meshscope.proxy, meshscope.dashboards;"
             "print([u.find_spec(n) is None for n in ('decoders', 'collector', 'pipelines', 'dashboards')])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[True, True, True, True]"


def test_import_contracts_are_kept(tmp_path):
    result = lint(assemble(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("meshscope/model/probe.py", "import meshscope.api.app", "Layers"),
        ("meshscope/decoders/probe.py", "from meshscope.pipelines import Store", "Layers"),
        ("meshscope/api/probe.py", "from meshscope.decoders.analysis import stitch", "Doors: decoders"),
        ("meshscope/collector/probe.py", "from meshscope.pipelines.store import Store", "Layers"),
        ("meshscope/api/probe.py", "from meshscope.pipelines.store.sqlite import SqliteStore",
         "Doors: pipelines"),
    ],
)
def test_breaking_a_contract_fails_the_check(tmp_path, module, line, contract):
    tree = assemble(tmp_path)
    (tree / module).write_text(f"{line}\n")
    result = lint(tree)
    assert result.returncode != 0
    broken = [ln for ln in result.stdout.splitlines() if "BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken), result.stdout


def test_old_top_level_names_fail_the_lint(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text("import decoders\nfrom proxy.launcher import EnvoyProcess\n")
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--no-cache", "--select", "TID251", "--config",
                             str(TOP / "pyproject.toml"), str(stray)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "`decoders` is banned" in result.stdout and "`proxy` is banned" in result.stdout


def test_doors_export_what_they_name():
    import importlib

    for door in ("meshscope.collector", "meshscope.decoders", "meshscope.pipelines", "meshscope.proxy"):
        package = importlib.import_module(door)
        for name in package.__all__:
            value = getattr(package, name)
            assert not (hasattr(value, "__path__") or type(value).__name__ == "module"), (door, name)


def test_the_tree_passes_ruff():
    """The checks CI runs include the lint: a stray ``import decoders`` anywhere fails here."""
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--no-cache", str(TOP)], capture_output=True, text=True,
                            cwd=TOP)
    assert result.returncode == 0, result.stdout[-3000:]
