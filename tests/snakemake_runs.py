"""Running Snakemake from the tests: a subprocess in the test's interpreter, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
#: The tests never read the machine's keyring: a token must come from the environment.
NO_KEYRING = "keyring.backends.null.Keyring"


def snakemake(
    *args: str, cwd: Path, token: str | None, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """``python -m snakemake ARGS`` in ``cwd``, with ``token`` (or none) in SYNTHESIZE_API_KEY.

    No other SYNTHESIZE_API* variable of the test's environment is passed on; ``env`` adds some.
    """
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SYNTHESIZE_API")},
        "PYTHON_KEYRING_BACKEND": NO_KEYRING,
        **(env or {}),
    }
    if token is not None:
        env["SYNTHESIZE_API_KEY"] = token
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output_of(run: subprocess.CompletedProcess) -> str:
    return f"exit {run.returncode}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"


def copy_config(source: Path, workdir: Path) -> Path:
    """Copy a config folder (config.yaml + its table) into ``workdir/config``; return the config file."""
    shutil.copytree(source, workdir / "config")
    return workdir / "config" / "config.yaml"


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def merged(workdir: Path) -> dict[str, pd.DataFrame]:
    """The merged outputs, without what legitimately differs between runs (query ids)."""
    tables = {}
    for folder in sorted((workdir / "results").iterdir()):
        if (folder / "expression.parquet").exists():
            tables[f"{folder.name}/expression"] = pd.read_parquet(folder / "expression.parquet")
            tables[f"{folder.name}/metadata"] = pd.read_parquet(folder / "metadata.parquet").drop(columns="query_id")
            if (folder / "latents.parquet").exists():  # outputs: latents
                tables[f"{folder.name}/latents"] = pd.read_parquet(folder / "latents.parquet")
    return tables


def assert_same_outputs(left: Path, right: Path) -> None:
    a, b = merged(left), merged(right)
    assert a.keys() == b.keys() and a
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def scan_command_lines(token: str) -> int:
    """Assert that no running process has ``token`` on its command line; the number looked at."""
    seen = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes()
        except OSError:
            continue  # the process ended
        seen += 1
        assert token.encode() not in arguments, f"the token is on the command line of {cmdline.parent.name}"
    return seen
