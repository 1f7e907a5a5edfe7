"""The README's first command: the demo runs the workflow against the emulator, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_command_runs_the_workflow_on_the_example_table():
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNTHESIZE_API")}
    env["SYNTHBIO_VENV"] = sys.prefix  # the environment the tests run in, set up by the same script
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    run = subprocess.run(
        ["bash", "scripts/demo.sh", "--forceall"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "backend: emulator" in run.stdout
    metadata = pd.read_parquet(ROOT / "demo/results/bulk/metadata.parquet")
    assert set(metadata["backend"]) == {"emulator"} and metadata["condition"].nunique() >= 5
    assert (ROOT / "demo/results/single-cell/expression.parquet").exists()
    assert not (ROOT / "results").exists() or not list((ROOT / "results").glob("*/expression.parquet"))
