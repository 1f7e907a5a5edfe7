"""The conversion benchmark (bench/convert.py) runs end to end at a tiny size.

Only that it works and checks correctness is tested here; no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pysynthbio")

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ROOT / "bench" / "convert.py"
MEASURE = ROOT / "bench" / "_measure.py"
HEADERS = ("path", "wall s", "peak MB", "base MB", "peak-base", "time vs anchor", "memory vs anchor")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    keep = tmp_path_factory.mktemp("bench")
    figures = keep / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(CONVERT),
            "--samples",
            "20",
            "--genes",
            "500",
            "--keep",
            str(keep),
            "--repeat",
            "1",
            "--json",
            str(figures),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, keep, figures


def test_small_run_prints_the_table_and_passes(small_run):
    done, _, _ = small_run
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for header in HEADERS:
        assert header in out
    for label in (
        "vendor: json.load -> transform -> to_parquet",
        "ours: write_part + merge_parts",
        "write_part alone",
        "merge_parts alone",
        "parse only",
        "genes as rows",
        "samples as rows",
    ):
        assert label in out
    assert "correctness: PASS" in out
    assert "FAIL" not in out
    assert "conversion: correct:" in out and "P1 (the targets are stated" in out


def test_figures_json(small_run):
    done, keep, figures = small_run
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(figures.read_text())
    assert report["samples"] == 20 and report["genes"] == 500
    for key in ("vendor", "ours", "write_part", "merge", "parse", "to_frames"):
        run = report["runs"][key]
        assert run["peak_kb"] >= run["baseline_maxrss_kb"] > 0
        assert run["wall_s"] >= 0
    assert report["verify"]["ok"] is True
    assert report["layout"]["slices_agree"] is True
    assert (keep / "ours" / "expression.parquet").exists() and (keep / "vendor" / "expression.parquet").exists()


def test_verify_fails_on_a_changed_value(small_run, tmp_path):
    """The correctness check is not vacuous: one changed count makes it fail."""
    done, keep, _ = small_run
    assert done.returncode == 0, done.stdout + done.stderr
    ours = tmp_path / "ours"
    ours.mkdir()
    table = pq.read_table(keep / "ours" / "expression.parquet")
    column = table.column(1).to_pylist()
    column[3] += 1
    table = table.set_column(1, table.schema.field(1), pa.array(column, pa.int32()))
    pq.write_table(table, ours / "expression.parquet")
    (ours / "metadata.parquet").write_bytes((keep / "ours" / "metadata.parquet").read_bytes())
    report_path = tmp_path / "report.json"
    params = {"vendor_out": str(keep / "vendor"), "ours_out": str(ours), "condition": "bench"}
    subprocess.run(
        [sys.executable, str(MEASURE), "verify", json.dumps(params), str(report_path)],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert [c["check"] for c in report["checks"] if not c["ok"]] == ["values"]
