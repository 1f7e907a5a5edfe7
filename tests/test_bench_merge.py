"""The merge benchmark (bench/merge.py) runs end to end at a tiny size.

Only that it runs, prints every figure with its target and checks its slices is tested here;
no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
MERGE = ROOT / "bench" / "merge.py"


def test_small_merge_bench_prints_every_figure_and_target(tmp_path):
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(MERGE),
            "--parts",
            "2,4",
            "--samples-per-part",
            "3",
            "--genes",
            "2500",
            "--repeat",
            "1",
            "--keep",
            str(tmp_path),
            "--json",
            str(figures),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for label in (
        "merge_parts, K = 2 (6 samples)",
        "merge_parts, K = 4 (12 samples)",
        "anchor: pq.read_table + pq.write_table",
        "footer alone",
        "10 genes spread over the file",
        "10 adjacent genes",
        "10 samples spread over the file",
        "slices hold the right values: yes",
        "peak memory:",
        "vs <= 1.3x",
        "vs <= 2.0x",
    ):
        assert label in out, label
    assert out.count("met") >= 5
    report = json.loads(figures.read_text())
    assert report["project"]["samples"] == 12 and report["project"]["row_groups"] == 2
    # The merged file is the parts side by side.
    merged = pq.read_table(tmp_path / "merged_4" / "expression.parquet")
    part = pq.read_table(tmp_path / "parts_4x3x2500" / "c0002.expression.parquet")
    assert merged.num_rows == 2500 and merged.column("c0002_3").equals(part.column("c0002_3"))
