"""The synthesize/predict wrapper, used by path from another pipeline's Snakefile.

As snakemake-wrappers tests its wrappers: the wrapper's test/ folder is copied to a
temporary directory next to a ``master`` link to our wrappers/ folder, and Snakemake
runs its example rule with ``--wrapper-prefix file://<tmp>/``, against the emulator.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from snakemake_runs import ROOT, output_of, snakemake

WRAPPER = ROOT / "wrappers" / "synthesize" / "predict"


@pytest.fixture
def wrapper_test_dir(tmp_path):
    shutil.copytree(WRAPPER / "test", tmp_path / "test")
    (tmp_path / "master").symlink_to(ROOT / "wrappers", target_is_directory=True)
    return tmp_path


def run_example(test_dir, *args, token, env=None):
    prefix = f"file://{test_dir}/"
    return snakemake("--cores", "1", "--wrapper-prefix", prefix, *args, cwd=test_dir / "test", token=token, env=env)


def test_wrapper_example_runs_against_the_emulator(wrapper_test_dir, make_emulator, emulator_token):
    emulator = make_emulator(genes=300, latency=0.2)
    run = run_example(wrapper_test_dir, token=emulator_token, env={"SYNTHESIZE_API_BASE_URL": emulator.url})
    assert run.returncode == 0, output_of(run)

    out = wrapper_test_dir / "test" / "predictions" / "lung"
    expression = pq.read_table(out / "expression.parquet")
    assert expression.column_names == ["gene_id", "lung_1", "lung_2"]
    assert expression.num_rows == 300
    assert all(str(expression.schema.field(name).type) == "int32" for name in ("lung_1", "lung_2"))
    metadata = pd.read_parquet(out / "metadata.parquet")
    assert list(metadata["sample_id"]) == ["lung_1", "lung_2"]
    assert set(metadata["backend"]) == {"emulator"} and set(metadata["model_id"]) == {"gem-1-bulk"}
    assert set(metadata["tissue_ontology_id"]) == {"UBERON:0002048"}
    assert sum(emulator.stats()["submissions"].values()) == 1

    log = (wrapper_test_dir / "test" / "logs" / "predict" / "lung.log").read_text()
    assert "submitted to gem-1-bulk" in log and "status ready after" in log, log
    assert emulator_token not in log


def test_wrapper_example_is_lint_clean(wrapper_test_dir):
    run = run_example(wrapper_test_dir, "--lint", token=None)
    assert run.returncode == 0, output_of(run)


def test_wrapper_refuses_a_missing_required_param(wrapper_test_dir, make_emulator, emulator_token):
    emulator = make_emulator()
    snakefile = wrapper_test_dir / "test" / "Snakefile"
    snakefile.write_text(snakefile.read_text().replace('model_id="gem-1-bulk",', ""))
    run = run_example(wrapper_test_dir, token=emulator_token, env={"SYNTHESIZE_API_BASE_URL": emulator.url})
    assert run.returncode != 0
    log = (wrapper_test_dir / "test" / "logs" / "predict" / "lung.log").read_text()
    assert "ValueError: Missing required parameter: model_id" in log, output_of(run)
    assert emulator.stats()["requests"] == {}


def test_meta_yaml_documents_every_model_family_it_serves():
    """meta.yaml parses (as snakemake-wrappers' docs build reads it) and names each GEM-1 family,
    with the inputs and outputs each one uses."""
    import yaml

    from synthbio_pipeline.vocabulary.models import MODELS

    meta = yaml.safe_load((WRAPPER / "meta.yaml").read_text())
    text = meta["description"] + " ".join(str(item) for item in meta["input"] + meta["output"] + meta["params"])
    for kind in {spec.kind for spec in MODELS}:
        assert kind.replace("-", " ") in text.replace("-", " "), kind
    names = {key for item in meta["input"] + meta["output"] for key in item}
    assert {"columns", "samples", "gene_order", "predicted_metadata", "classifier_probs"} <= names
