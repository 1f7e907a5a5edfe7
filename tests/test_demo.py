"""The README's first command: the demo runs the workflow against the emulator, as a user would,
builds the report and says what to do next."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def demo(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNTHESIZE_API")}
    env["SYNTHBIO_VENV"] = sys.prefix  # the environment the tests run in, set up by the same script
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    return subprocess.run(
        ["bash", "scripts/demo.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_demo_command_runs_the_workflow_builds_the_report_and_says_what_next():
    run = demo("--forceall")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "backend: emulator" in run.stdout
    metadata = pd.read_parquet(ROOT / "demo/results/bulk/metadata.parquet")
    assert set(metadata["backend"]) == {"emulator"} and metadata["condition"].nunique() >= 5
    assert (ROOT / "demo/results/single-cell/expression.parquet").exists()
    assert not (ROOT / "results").exists() or not list((ROOT / "results").glob("*/expression.parquet"))

    # The story ends with a report of this run, where it is, and the next steps.
    (url,) = set(re.findall(r"emulator at (http://127\.0\.0\.1:\d+)", run.stdout))
    report = (ROOT / "demo/report.html").read_text()
    assert "This data comes from the API emulator" in report and url in report
    last = run.stdout.rstrip().splitlines()[-20:]
    assert any(line.startswith("==> report: demo/report.html") for line in last), "\n".join(last)
    assert "Next steps" in last
    text = "\n".join(last)
    for step in ("Open the report", "load_expression(", "ENSG00000141510", "bash scripts/demo.sh my_conditions.tsv"):
        assert step in text, step
    assert "demo/results/single-cell/:" in run.stdout  # the example table makes both groups

    # A bulk-only table next: the summary is of this run's groups, not the single-cell folder
    # the example table left in demo/results/.
    bulk_only = pd.read_csv(ROOT / "config/conditions.tsv", sep="\t", dtype=str, keep_default_na=False)
    bulk_only = bulk_only[bulk_only["modality"] != "single-cell"].head(2)
    table = ROOT / "demo/bulk_only.tsv"
    bulk_only.to_csv(table, sep="\t", index=False)
    run = demo(str(table))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (ROOT / "demo/results/single-cell/expression.parquet").exists()  # still there, not summarised
    assert "demo/results/bulk/: " in run.stdout and "2 condition(s)" in run.stdout
    assert "demo/results/single-cell/:" not in run.stdout, run.stdout[-3000:]


def test_the_demo_refuses_a_table_that_does_not_exist():
    run = demo("no_such_table.tsv")
    assert run.returncode == 2 and run.stderr.startswith("no such table: no_such_table.tsv"), run.stderr
