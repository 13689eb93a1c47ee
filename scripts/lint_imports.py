"""Check the import contracts of pyproject.toml ([tool.importlinter]) against the layout meshscope
installs as: the component folders placed under meshscope/ as [tool.setuptools.package-dir] maps
them. import-linter walks one package directory; in a checkout the components sit beside it, so the
tree is assembled in a temporary folder first.

    python scripts/lint_imports.py            # exit 0 when every contract is kept
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]


def assemble(into: Path, top: Path = TOP) -> Path:
    """Copy the Python sources of meshscope and its mapped folders into ``into``/meshscope."""
    config = tomllib.loads((top / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pcap", "*.pcapng", "*.json", "*.ndjson", "static")
    shutil.copytree(top / "meshscope", into / "meshscope", ignore=ignore)
    for package, folder in mapping.items():
        shutil.copytree(top / folder, into / Path(*package.split(".")), ignore=ignore)
    shutil.copy(top / "pyproject.toml", into / "pyproject.toml")
    return into


def lint(tree: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on an assembled tree (a child process, so its sys.path is the tree's)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=tree, env={"PYTHONPATH": str(tree),
                          "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="meshscope-contracts-") as tmp:
        result = lint(assemble(Path(tmp)))
    sys.stdout.write(result.stdout + result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
