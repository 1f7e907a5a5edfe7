"""environment.yml and pyproject.toml list the same packages, at versions that agree."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def conda_pins(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    pins = {}
    for item in spec["dependencies"]:
        if isinstance(item, str):
            name, _, pin = item.partition("=")
            pins[name.strip()] = pin.strip().lstrip("=")
    return pins


def pip_requirements() -> set[str]:
    """The package's dependencies and those of its `workflow` extra: what a conda user needs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["workflow"]
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_environment_yml_lists_exactly_the_python_dependencies():
    pins = conda_pins(ROOT / "environment.yml")
    assert set(pins) - {"python", "pip"} == pip_requirements()


def test_environment_yml_pins_match_the_installed_versions():
    for name, pin in conda_pins(ROOT / "environment.yml").items():
        if name in ("python", "pip"):
            continue
        installed = version(name)
        assert installed == pin or installed.startswith(pin + "."), (
            f"{name}: environment.yml pins {pin}, pip installed {installed}"
        )
