"""The whole workflow imported as a module by another pipeline, with a prefix and its own config."""

from __future__ import annotations

import shutil

import pandas as pd
import yaml
from snakemake_runs import ROOT, SNAKEFILE, output_of, snakemake

HOST_SNAKEFILE = """\
configfile: "host.yaml"


module synth:
    snakefile:
        "{snakefile}"
    config:
        config["synth"]
    prefix:
        "synth"


use rule * from synth as synth_*


rule all:
    input:
        rules.synth_all.input,
    default_target: True
"""


def test_workflow_runs_as_a_module_under_a_prefix(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=200, latency=0.2)
    (tmp_path / "tables").mkdir()
    shutil.copy(ROOT / ".test/config/conditions.tsv", tmp_path / "tables" / "synth_conditions.tsv")
    host_config = {
        "synth": {
            "api_base_url": emulator.url,
            "conditions": "tables/synth_conditions.tsv",  # relative to the host's working directory
            "defaults": {"seed": 3},
            "poll_interval_seconds": 1,
        }
    }
    (tmp_path / "host.yaml").write_text(yaml.safe_dump(host_config))
    (tmp_path / "Snakefile").write_text(HOST_SNAKEFILE.format(snakefile=SNAKEFILE))

    run = snakemake("--cores", "2", cwd=tmp_path, token=emulator_token)
    assert run.returncode == 0, output_of(run)

    # Every output and log of the module is under the host's prefix; nothing outside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake", "Snakefile", "host.yaml", "synth", "tables"]
    for modality, samples in (
        ("bulk", ["lung_1", "lung_2", "hepg2_TP53_crispr_1", "hepg2_TP53_crispr_2"]),
        ("single-cell", ["lung_macrophage_sc_1", "lung_macrophage_sc_2"]),
    ):
        folder = tmp_path / "synth" / "results" / modality
        metadata = pd.read_parquet(folder / "metadata.parquet")
        assert list(metadata["sample_id"]) == samples
        assert set(metadata["backend"]) == {"emulator"} and set(metadata["seed"]) == {3}
        expression = pd.read_parquet(folder / "expression.parquet")
        assert list(expression.columns) == ["gene_id", *samples] and len(expression) == 200
    assert "lung: status ready" in (tmp_path / "synth" / "logs" / "predict" / "bulk" / "0001.log").read_text()
    assert "synth_predict" in run.stderr + run.stdout  # the host sees the module's rules renamed
