"""The Snakemake workflow: lint, formatting, an end-to-end run against the emulator, and
the checks that stop a run before anything is sent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from snakemake_runs import ROOT, SNAKEFILE, copy_config, files_under, output_of, snakemake, workflow_args

from synthbio_pipeline.formats.parquet import load_expression
from synthbio_pipeline.pipeline.conditions import (
    KNOWN_COLUMNS,
    OPTION_COLUMNS,
    REFERENCE_COLUMNS,
    REQUIRED_COLUMNS,
    read_conditions,
)
from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS

GENES = 500


def test_lint_is_clean_without_a_token():
    run = snakemake("--lint", cwd=ROOT, token=None)
    assert run.returncode == 0, output_of(run)
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr


def test_snakefmt_is_clean():
    """The Snakemake files; their Python (scripts, wrapper) is ruff's (tests/test_architecture.py)."""
    run = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "workflow", "wrappers"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, f"snakefmt:\n{run.stdout}{run.stderr}"


def test_conditions_schema_names_every_column_the_library_reads():
    schema = yaml.safe_load((ROOT / "workflow/schemas/conditions.schema.yaml").read_text())
    assert set(schema["properties"]) == set(KNOWN_COLUMNS)  # GEM-2's columns included
    assert {*REQUIRED_COLUMNS, *OPTION_COLUMNS, *METADATA_KEYS, *REFERENCE_COLUMNS} <= set(KNOWN_COLUMNS)
    assert schema["required"] == list(REQUIRED_COLUMNS)


def test_conda_envs_pin_what_environment_yml_pins():
    def pins(path):
        return {item for item in yaml.safe_load(path.read_text())["dependencies"] if isinstance(item, str)}

    # Jobs run from Snakemake, not inside it: the rule environments need everything but it.
    expected = {pin for pin in pins(ROOT / "environment.yml") if not pin.startswith("snakemake ")}
    for env in ("workflow/envs/synthbio.yaml", "wrappers/synthesize/predict/environment.yaml"):
        spec = yaml.safe_load((ROOT / env).read_text())
        assert spec["channels"] == ["conda-forge", "nodefaults"], env
        assert pins(ROOT / env) == expected, env
        pip = [item["pip"] for item in spec["dependencies"] if isinstance(item, dict)]
        assert pip and pip[0][0].startswith("synthbio-pipeline @ "), env


def job_counts(run: subprocess.CompletedProcess) -> dict[str, int]:
    """The "Job stats" table of a dry run."""
    lines = run.stdout.split("Job stats:", 1)[-1].splitlines()[3:]  # after the table's header
    counts = {}
    for row in map(str.split, lines):
        if len(row) != 2 or not row[1].isdigit():
            break
        counts[row[0]] = int(row[1])
    return counts


def test_example_table_end_to_end(make_emulator, emulator_token, tmp_path):
    """The example table against an emulator in a fresh working directory, then dry runs."""
    workdir, emulator = tmp_path, make_emulator(genes=GENES, latency=0.2)
    configfile = copy_config(ROOT / "config", workdir)
    args = workflow_args(workdir, emulator.url)
    run = snakemake("--cores", "2", *args, cwd=workdir, token=emulator_token)
    assert run.returncode == 0, output_of(run)
    config = yaml.safe_load(configfile.read_text())
    conditions = read_conditions(workdir / config["conditions"], config["defaults"])

    modalities = {"bulk": "gem-1-bulk", "single-cell": "gem-1-sc"}
    assert {c.modality for c in conditions} == set(modalities)  # the example has both
    assert sorted(p.name for p in (workdir / "results").iterdir()) == [
        "bulk",
        "predictions",
        "queries",
        "report",
        "single-cell",
    ]

    for modality, model_id in modalities.items():
        mine = [c for c in conditions if c.modality == modality]
        ids = [f"{c.name}_{n}" for c in mine for n in range(1, c.num_samples + 1)]
        folder = workdir / "results" / modality
        # AnnData by default for single-cell only (outputs: h5ad).
        h5ad = [f"{modality}.h5ad"] if modality == "single-cell" else []
        expected = ["expression.parquet", "metadata.parquet", "provenance.json", *h5ad]
        assert sorted(p.name for p in folder.iterdir()) == sorted(expected)

        expression = pq.read_table(folder / "expression.parquet")
        assert expression.column_names == ["gene_id", *ids]
        assert expression.num_rows == GENES
        assert all(name.startswith("ENSG") for name in expression.column("gene_id").to_pylist()[:20])
        counts = np.column_stack([expression.column(i).to_numpy() for i in ids])
        assert counts.dtype == np.int32 and counts.min() >= 0
        assert (counts.sum(axis=0) > 0).all()

        metadata = pd.read_parquet(folder / "metadata.parquet")
        assert list(metadata["sample_id"]) == ids  # one row per sample, in the expression's order
        assert list(metadata["condition"]) == [c.name for c in mine for _ in range(c.num_samples)]
        assert set(metadata["backend"]) == {"emulator"}
        assert set(metadata["model_id"]) == {model_id}
        assert metadata["query_id"].notna().all() and metadata["model_version"].notna().all()
        for condition in mine:
            rows = metadata[metadata["condition"] == condition.name]
            for key, value in condition.metadata.items():
                assert set(rows[key]) == {str(value)}, (condition.name, key)

        # The library's loader gives the same pair, aligned, in both orientations.
        by_sample, meta = load_expression(
            folder / "expression.parquet", folder / "metadata.parquet", orientation="samples"
        )
        assert list(by_sample.index) == ids and list(meta.index) == ids
        assert by_sample.shape == (len(ids), GENES)

    logs = "".join(path.read_text() for path in (workdir / "logs/predict").glob("*/*.log"))
    for condition in conditions:
        # One query file per condition, in its modality's batch folder.
        (query_path,) = (workdir / "results/queries").glob(f"*/*/{condition.name}.json")
        assert json.loads(query_path.read_text()) == condition.wire_body()
        assert f"{condition.name}: status ready after" in logs, logs
    assert sum(emulator.stats()["submissions"].values()) == len(conditions)

    # The token is never written anywhere: not in params, logs, metadata or outputs.
    for path in files_under(workdir):
        assert emulator_token.encode() not in path.read_bytes(), path

    check_rerun_triggers(workdir, args, emulator_token, emulator)


def check_rerun_triggers(workdir, args, token, emulator):
    """A finished run is not redone for a change of polling; an edited row buys that row only.

    ``args``: :func:`workflow_args`, whose --config list the polling values below extend (the
    last value of a key wins)."""
    # How often or how long to poll is not a reason to buy a prediction again.
    run = snakemake("-n", *args, "poll_interval_seconds=5", "poll_timeout_seconds=60", cwd=workdir, token=token)
    assert run.returncode == 0, output_of(run)
    assert "Nothing to be done" in run.stdout + run.stderr, output_of(run)

    # Editing one row reruns its batch only (and the merge of its modality)...
    table = workdir / "config/conditions.tsv"
    frame = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
    frame.loc[frame["condition"] == "heart_normal", "num_samples"] = "5"
    frame.to_csv(table, sep="\t", index=False)
    run = snakemake("-n", *args, cwd=workdir, token=token)
    assert run.returncode == 0, output_of(run)
    expected = {"write_queries": 1, "predict": 1, "merge": 1, "report_figures": 1, "report_conditions": 1, "all": 1}
    assert job_counts(run) == {**expected, "total": 6}, output_of(run)
    assert "results/predictions/bulk/" in run.stdout and "single-cell/0001" not in run.stdout

    # ... and buys that row only: the batch's other queries are downloaded again, not resubmitted.
    before = emulator.stats()
    run = snakemake("--cores", "2", *args, cwd=workdir, token=token)
    assert run.returncode == 0, output_of(run)
    after = emulator.stats()
    assert sum(after["submissions"].values()) - sum(before["submissions"].values()) == 1
    bulk = [name for name in frame["condition"] if not name.endswith("_sc")]
    assert after["downloads"] - before["downloads"] == len(bulk)


@pytest.mark.parametrize(
    "base_url, expected",
    [
        (None, ["SYNTHESIZE_API_KEY", "emulator"]),
        ("http://api.example.org", ["refusing base URL", "loopback"]),
    ],
    ids=["no-token", "plain-http"],
)
def test_run_stops_before_any_job(tmp_path, base_url, expected):
    configfile = copy_config(ROOT / "config", tmp_path)
    overrides = ["--config", f"api_base_url={base_url}"] if base_url else []
    args = ("-s", str(SNAKEFILE), "--configfile", str(configfile))
    run = snakemake("--cores", "1", *args, *overrides, cwd=tmp_path, token=None, timeout=60)
    assert run.returncode != 0
    for words in expected:
        assert words in run.stdout + run.stderr, output_of(run)
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


BAD_TABLES = {
    "misspelt-column": (
        "condition\tnum_samples\ttisue_ontology_id\nlung\t2\tUBERON:0002048\n",
        ["conditions.tsv:1, column 'tisue_ontology_id'", "did you mean 'tissue_ontology_id'"],
    ),
    "bad-cells": (
        "condition\tnum_samples\ttissue_ontology_id\tsex\n"
        "lung\t2\tUBERON:0002048\tfemale\n"
        "liver\t2.5\tUBERON:0002107\tmale\n"
        "heart\t2\tUBERON:0000948\tfemal\n",
        [
            "2 problem(s)",
            "conditions.tsv:3 (condition 'liver'), column 'num_samples'",
            "conditions.tsv:4 (condition 'heart'), column 'sex'",
        ],
    ),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_a_bad_table_stops_the_run_before_any_request(case, emulator, emulator_token, tmp_path):
    table, expected = BAD_TABLES[case]
    configfile = copy_config(ROOT / ".test/config", tmp_path)
    (tmp_path / "config/conditions.tsv").write_text(table)
    args = ("-s", str(SNAKEFILE), "--configfile", str(configfile), "--config", f"api_base_url={emulator.url}")
    run = snakemake("--cores", "1", *args, cwd=tmp_path, token=emulator_token, timeout=60)
    assert run.returncode != 0
    for words in expected:
        assert words in run.stdout + run.stderr, output_of(run)
    assert emulator.stats()["requests"] == {}
    assert not (tmp_path / "results").exists()


def test_schema_problems_are_reported_with_file_line_and_column(tmp_path):
    """The schema's refusals (here made stricter than the library) read like the library's.

    The library reads the table first; the schema checks what the library accepted, so
    its problems are reported once the library's are fixed.
    """
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    schema_file = tmp_path / "workflow/schemas/conditions.schema.yaml"
    schema = yaml.safe_load(schema_file.read_text())
    schema["properties"]["sex"]["enum"] = ["male"]
    schema_file.write_text(yaml.safe_dump(schema))
    configfile = copy_config(ROOT / ".test/config", tmp_path)
    table = tmp_path / "config/conditions.tsv"
    args = ("-s", str(tmp_path / "workflow/Snakefile"), "--configfile", str(configfile))

    def problems_reported():
        run = snakemake("-n", *args, cwd=tmp_path, token="unused", timeout=60)
        assert run.returncode != 0
        return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("- ")]

    table.write_text("condition\tnum_samples\tsex\nlung\t2\tfemale\nliver\t2.5\tmale\n\nheart\t2\tfemale\n")
    assert problems_reported() == [
        "- config/conditions.tsv:3 (condition 'liver'), column 'num_samples': "
        "must be a whole number of at least 1, not '2.5'",
    ]
    table.write_text("condition\tnum_samples\tsex\nlung\t2\tfemale\nliver\t2\tmale\n\nheart\t2\tfemale\n")
    assert problems_reported() == [
        "- config/conditions.tsv:2 (condition 'lung'), column 'sex': 'female' is not one of ['male']; "
        "allowed: API metadata key (biological): one of 'male', 'female'",
        "- config/conditions.tsv:5 (condition 'heart'), column 'sex': 'female' is not one of ['male']; "
        "allowed: API metadata key (biological): one of 'male', 'female'",
    ]


#: Snakemake's own listings of file names (the targets of rule all run long with many outputs).
FILE_LISTS = ("input: ", "output: ", "reason: Input files updated by another job: ", "reason: Missing output files: ")


def long_lines(run: subprocess.CompletedProcess, limit: int = 300) -> list[str]:
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if len(line) > limit and not line.strip().startswith(FILE_LISTS)]


def test_progress_in_the_job_log_readable_dry_runs_and_a_failure_in_one_line(make_emulator, emulator_token, tmp_path):
    """A slow service: the job log says each query still runs, and each one that is ready."""
    emulator = make_emulator(genes=200, latency=2.6)
    configfile = copy_config(ROOT / ".test/config", tmp_path)
    args = ("-s", str(SNAKEFILE), "--configfile", str(configfile))
    overrides = ("--config", f"api_base_url={emulator.url}", "progress_interval_seconds=1")
    run = snakemake("--cores", "2", *args, *overrides, cwd=tmp_path, token=emulator_token)
    assert run.returncode == 0, output_of(run)
    log = (tmp_path / "logs/predict/bulk/0001.log").read_text()
    for condition in ("lung", "hepg2_TP53_crispr"):
        assert f"{condition}: running for 1 s" in log and f"{condition}: running for 2 s" in log, log
    assert "batch 0001: 1 of 2 ready" in log and "batch 0001: 2 of 2 ready" in log, log

    # Edit a row: the rerun reason of its batch is a digest of its queries, not pages of them.
    table = tmp_path / "config/conditions.tsv"
    table.write_text(table.read_text().replace("lung\t2\t", "lung\t3\t"))
    run = snakemake("-n", *args, *overrides, cwd=tmp_path, token=emulator_token)
    assert run.returncode == 0, output_of(run)
    assert "queries, sha256 " in run.stdout and not long_lines(run), output_of(run)
    # Another service: the reason names both URLs, on a line.
    other = ("--config", "api_base_url=http://127.0.0.1:9", "progress_interval_seconds=1")
    run = snakemake("-n", *args, *other, cwd=tmp_path, token=emulator_token)
    (reason,) = {line.strip() for line in run.stdout.splitlines() if "http://127.0.0.1:9" in line and "reason" in line}
    assert emulator.url in reason and not long_lines(run), output_of(run)

    # A query the service fails: one line says which and what to do; the traceback is in the log only.
    emulator.set_faults({"faults": [{"endpoint": "status", "fault": "failed", "fraction": 1.0}]})
    run = snakemake("--cores", "2", *args, *overrides, cwd=tmp_path, token=emulator_token)
    assert run.returncode != 0
    console = run.stdout + run.stderr
    (line,) = [line for line in console.splitlines() if line.startswith("predict failed: ")]
    assert line.startswith("predict failed: condition lung; 2 of the 2 conditions of batch 0001 failed: model query ")
    assert "injected" in line and "— check the condition's metadata" in line
    assert line.endswith("(traceback: logs/predict/bulk/0001.log)"), line
    assert "Traceback" not in console, output_of(run)
    assert "Traceback" in (tmp_path / "logs/predict/bulk/0001.log").read_text()
