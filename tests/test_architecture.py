"""The package's architecture and style, checked: import contracts, ruff, and public names only.

The contracts live in pyproject.toml ([tool.importlinter]); a broken one fails here, and so in CI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


@pytest.mark.parametrize("command", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff_is_clean(command):
    result = run(str(BIN / "ruff"), *command, ".")
    assert result.returncode == 0, result.stdout + result.stderr


# Code outside the package that must use its public names only: the benchmark, the scripts, the demo, the
# workflow's scripts and the wrapper (a remote wrapper arrives as one file, importing the package).
OUTSIDERS = [
    *sorted((ROOT / "bench").glob("*.py")),
    *sorted((ROOT / "scripts").glob("*.py")),
    ROOT / "src/synthbio_pipeline/demo.py",
    *sorted((ROOT / "workflow/scripts").glob("*.py")),
    *sorted((ROOT / "wrappers").rglob("wrapper.py")),
]


def private_uses(path: Path) -> list[str]:
    """Every ``_name`` of synthbio_pipeline that ``path`` imports or reaches through a module alias."""
    tree = ast.parse(path.read_text(), str(path))
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synthbio_pipeline"):
            parts = node.module.split(".")
            found += [f"{node.module} (line {node.lineno})" for part in parts if part.startswith("_")]
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name} (line {node.lineno})")
                aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("synthbio_pipeline"):
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        found.append(f"{alias.name} (line {node.lineno})")
                    aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


@pytest.mark.parametrize("path", OUTSIDERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_outside_code_uses_public_names_only(path):
    assert private_uses(path) == []


def test_the_public_names_check_catches_a_private_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from synthbio_pipeline.formats.parquet import _string_array\n"
        "from synthbio_pipeline.formats import parquet as tables\n"
        "tables._bitmap\n"
    )
    assert len(private_uses(sample)) == 2
