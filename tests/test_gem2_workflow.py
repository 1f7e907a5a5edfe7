"""GEM-2 in the workflow: a table mixing GEM-1 and GEM-2 rows against the emulator gives one
merged pair per output group (a modality of one model family), bad GEM-2 cells are refused
before anything is sent, and a self-hosted run gives what the asynchronous path gives."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import yaml
from snakemake_runs import ROOT, SNAKEFILE, assert_same_outputs, copy_config, output_of, snakemake

GENES = 300

MIXED = (
    "condition\tnum_samples\tmodel\tmodality\ttissue_ontology_id\tsex\ttissue\tsmiles\tentity_ontology_id\tseed\n"
    "lung_gem1\t2\t\tbulk\tUBERON:0002048\tmale\t\t\t\t7\n"
    "liver_etoh\t3\tgem-2-bulk\t\t\t\tliver\tCCO\t\t8\n"
    "liver_chembl\t2\tgem-2-bulk\t\t\t\tliver\t\tCHEMBL3261331\t9\n"
    "blood_sc\t2\tgem-2-sc\t\t\t\tblood\t\t\t10\n"
)


def workdir_with(tmp_path, table: str, outputs=None, **config):
    configfile = copy_config(ROOT / "config", tmp_path)
    (tmp_path / "config" / "conditions.tsv").write_text(table)
    settings = yaml.safe_load(configfile.read_text())
    settings["outputs"] = {**settings["outputs"], "report": False, "h5ad": [], **(outputs or {})}
    settings.update(config)
    configfile.write_text(yaml.safe_dump(settings))
    return configfile


def run_workflow(workdir, configfile, emulator, token, *extra, env=None):
    args = ("-s", str(SNAKEFILE), "-d", str(workdir), "--configfile", str(configfile))
    overrides = ("--config", f"api_base_url={emulator.url}", "poll_interval_seconds=1", *extra)
    return snakemake("--cores", "2", *args, *overrides, cwd=workdir, token=token, env=env)


def test_mixed_gem1_and_gem2_rows_give_separate_merged_pairs(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.2)
    configfile = workdir_with(tmp_path, MIXED, outputs={"latents": True})
    run = run_workflow(tmp_path, configfile, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    results = tmp_path / "results"
    groups = sorted(p.name for p in results.iterdir() if (p / "expression.parquet").exists())
    assert groups == ["bulk", "gem-2-bulk", "gem-2-single-cell"]

    expected = {"bulk": ["lung_gem1"], "gem-2-bulk": ["liver_etoh", "liver_chembl"], "gem-2-single-cell": ["blood_sc"]}
    sizes = {"lung_gem1": 2, "liver_etoh": 3, "liver_chembl": 2, "blood_sc": 2}
    for group, names in expected.items():
        expression = pd.read_parquet(results / group / "expression.parquet")
        metadata = pd.read_parquet(results / group / "metadata.parquet")
        assert list(metadata["condition"].drop_duplicates()) == names
        assert len(metadata) == sum(sizes[n] for n in names) == expression.shape[1] - 1
        assert expression.shape[0] == GENES  # one gene order per merged matrix
        label = json.loads(pq.read_schema(results / group / "expression.parquet").metadata[b"synthbio"])
        assert label["family"] == ("gem-2" if group.startswith("gem-2") else "gem-1")
        assert label["modality"] == group.removeprefix("gem-2-")
        # outputs: latents: one row per sample, in the expression's order, per merged pair.
        latents = pd.read_parquet(results / group / "latents.parquet")
        assert list(latents["sample_id"]) == list(expression.columns[1:])
        names = {"biological", "technical", "perturbation"} if group == "bulk" else {"generated"}
        assert names <= set(latents.columns) and latents[sorted(names)[0]].map(len).gt(0).all()
        assert set(metadata["model_id"]) == {
            "gem-1-bulk" if group == "bulk" else ("gem-2-sc" if "single" in group else "gem-2-bulk")
        }
    gem2 = pd.read_parquet(results / "gem-2-bulk" / "metadata.parquet").set_index("condition")
    # The perturbation lists, as sent, are JSON text in the metadata rows; the options come from "options".
    etoh = gem2.loc["liver_etoh"].iloc[0]
    assert json.loads(etoh["bioactive_entity_perturbations"]) == [{"smiles": "CCO"}]
    assert json.loads(gem2.loc["liver_chembl"].iloc[0]["bioactive_entity_perturbations"]) == [
        {"entity_ontology_id": "CHEMBL3261331"}
    ]
    assert etoh["seed"] == 8 and etoh["sampling_strategy"] == "sample generation"
    # The GEM-2 queries went out in GEM-2's shape.
    (query,) = (results / "queries" / "gem-2-bulk").glob("*/liver_etoh.json")
    body = json.loads(query.read_text())
    assert body["operation"] == "predict-expression" and body["inputs"]["modality"] == "bulk"
    assert body["inputs"]["items"][0]["metadata"]["tissue"] == "liver"


def test_bad_gem2_cells_are_refused_before_anything_is_sent(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.2)
    table = (
        "condition\tnum_samples\tmodel\ttissue\tsmiles\tsex\n"
        "ok\t1\tgem-2-bulk\tliver\tCCO\t\n"
        "bad\t1\tgem-2-bulk\tliver\tC C\tmale\n"
    )
    configfile = workdir_with(tmp_path, table)
    run = run_workflow(tmp_path, configfile, emulator, emulator_token)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "conditions.tsv:3 (condition 'bad'), column 'smiles': 'C C' is malformed" in text, output_of(run)
    assert "conditions.tsv:3 (condition 'bad'), column 'sex': a GEM-1 metadata key" in text
    assert not (tmp_path / "results").exists()


def test_self_hosted_run_gives_the_outputs_of_the_asynchronous_path(make_emulator, emulator_token, tmp_path):
    """The same table and seeds: hosted (tickets, polling, JSON) against a self-hosted container
    (one synchronous Arrow stream per query, switched on by SYNTHESIZE_SELF_HOSTED as the
    vendor's client reads it, no token at all)."""
    hosted, container = tmp_path / "hosted", tmp_path / "container"
    hosted.mkdir(), container.mkdir()
    api = make_emulator(genes=GENES, latency=0.2)
    run = run_workflow(hosted, workdir_with(hosted, MIXED, outputs={"latents": True}), api, emulator_token)
    assert run.returncode == 0, output_of(run)

    local = make_emulator(genes=GENES, latency=0.2, self_hosted=True, tokens=())
    configfile = workdir_with(container, MIXED, outputs={"latents": True})
    run = run_workflow(container, configfile, local, None, env={"SYNTHESIZE_SELF_HOSTED": "1"})
    assert run.returncode == 0, output_of(run)
    assert_same_outputs(hosted, container)  # latents.parquet included: the same latent names on both paths
    latents = pd.read_parquet(container / "results" / "gem-2-bulk" / "latents.parquet")
    assert list(latents.columns) == ["sample_id", "generated"] and latents["generated"].map(len).gt(0).all()
    logs = "".join(path.read_text() for path in (container / "logs" / "predict").rglob("*.log"))
    assert "self-hosted container" in logs and "submitted to" not in logs
    metadata = pd.read_parquet(container / "results" / "gem-2-bulk" / "metadata.parquet")
    assert set(metadata["query_id"]) == {"self-hosted"}


def test_plain_http_goes_only_to_listed_hosts_and_the_token_only_when_told(tmp_path):
    """Dry runs (nothing is sent): plain http to a non-loopback host is refused unless listed; a
    listed host gets the hosted API only with send_token_over_http; a self-hosted container
    there needs no token at all."""
    url = "http://10.255.255.1:8000"
    table = "condition\tnum_samples\tmodel\ttissue\nliver\t1\tgem-2-bulk\tliver\n"

    def dry_run(folder, **config):
        folder.mkdir()
        configfile = workdir_with(folder, table, api_base_url=url, **config)
        args = ("-s", str(SNAKEFILE), "-d", str(folder), "--configfile", str(configfile))
        return snakemake("-n", *args, cwd=folder, token="a-token")

    refused = dry_run(tmp_path / "unlisted")
    assert refused.returncode != 0 and "allowed_http_hosts" in refused.stdout + refused.stderr, output_of(refused)
    no_token = dry_run(tmp_path / "listed", allowed_http_hosts=["10.255.255.1"])
    assert no_token.returncode != 0 and "send_token_over_http" in no_token.stdout + no_token.stderr, output_of(no_token)
    container = dry_run(tmp_path / "container", allowed_http_hosts=["10.255.255.1"], self_hosted=True)
    assert container.returncode == 0, output_of(container)
    told = dry_run(tmp_path / "told", allowed_http_hosts=["10.255.255.1"], send_token_over_http=True)
    assert told.returncode == 0, output_of(told)
