"""GEM-2 in the workflow: a table mixing GEM-1 and GEM-2 rows against the emulator gives one
merged pair per output group (a modality of one model family), bad GEM-2 cells are refused
before anything is sent, and a self-hosted run gives what the asynchronous path gives."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from snakemake_runs import (
    ROOT,
    SNAKEFILE,
    assert_same_outputs,
    copy_config,
    merged,
    output_of,
    snakemake,
    workflow_args,
)

GENES = 300
TP53 = "ENSG00000141510"

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


def run_workflow(workdir, emulator, token, *extra, env=None):
    """The workflow in ``workdir`` (its config from :func:`workdir_with`) against ``emulator``."""
    return snakemake("--cores", "2", *workflow_args(workdir, emulator.url), *extra, cwd=workdir, token=token, env=env)


def test_mixed_gem1_and_gem2_rows_give_separate_merged_pairs(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.2)
    workdir_with(tmp_path, MIXED, outputs={"latents": True})
    run = run_workflow(tmp_path, emulator, emulator_token)
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
    workdir_with(tmp_path, table)
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "conditions.tsv:3 (condition 'bad'), column 'smiles': 'C C' is malformed" in text, output_of(run)
    assert "conditions.tsv:3 (condition 'bad'), column 'sex': a GEM-1 metadata key" in text
    assert not (tmp_path / "results").exists()


def test_self_hosted_run_gives_the_outputs_of_the_asynchronous_path(make_emulator, emulator_token, tmp_path):
    """The same table and seeds: hosted (tickets, polling, JSON) against a self-hosted container
    (one synchronous Arrow stream per query, switched on by SYNTHESIZE_SELF_HOSTED as the
    vendor's client reads it, no token at all)."""
    from synthbio_pipeline.emulator.generate import gene_order

    hosted, container = tmp_path / "hosted", tmp_path / "container"
    # Metadata prediction too: of every group's samples, and of a counts file. Its gene order
    # is given: a one-sample purchase would show the emulator metadata the other run's never
    # saw, and the emulator predicts among the values it has been sent.
    outputs = {"latents": True, "predicted_metadata": True}
    annotate = [{"name": "mine", "path": "refs/mine.tsv", "modality": "bulk"}]
    settings = {"annotate": annotate, "gene_order_files": {"bulk": "refs/order.txt"}}
    counts = np.random.default_rng(1).poisson(50, size=(GENES, 2))
    for workdir in (hosted, container):
        (workdir / "refs").mkdir(parents=True)
        (workdir / "refs/order.txt").write_text("\n".join(gene_order(GENES)) + "\n")
        pd.DataFrame({"gene_id": gene_order(GENES), "a": counts[:, 0], "b": counts[:, 1]}).to_csv(
            workdir / "refs/mine.tsv", sep="\t", index=False
        )
    api = make_emulator(genes=GENES, latency=0.2)
    workdir_with(hosted, MIXED, outputs=outputs, **settings)
    run = run_workflow(hosted, api, emulator_token)
    assert run.returncode == 0, output_of(run)

    local = make_emulator(genes=GENES, latency=0.2, self_hosted=True, tokens=())
    workdir_with(container, MIXED, outputs=outputs, **settings)
    run = run_workflow(container, local, None, env={"SYNTHESIZE_SELF_HOSTED": "1"})
    assert run.returncode == 0, output_of(run)
    # latents.parquet included (the same latent names on both paths), and the predicted
    # metadata, class probabilities and encoded latents of every group and of the file.
    assert_same_outputs(hosted, container)
    compared = merged(container)
    for name in ("gem-2-bulk", "gem-2-single-cell", "bulk", "annotate/mine"):
        assert {f"{name}/predicted_metadata", f"{name}/classifier_probs", f"{name}/encoded_latents"} <= compared.keys()
    assert compared["annotate/mine/predicted_metadata"]["sample_id"].tolist() == ["a", "b"]
    assert local.stats()["requests"].get("status", 0) == 0  # nothing was polled: every answer was a stream

    # Without the gene order, the gene-order job buys its one sample from the container too.
    again = tmp_path / "again"
    (again / "refs").mkdir(parents=True)
    (again / "refs/mine.tsv").write_text((container / "refs/mine.tsv").read_text())
    table = "condition\tnum_samples\ttissue_ontology_id\tsex\nlung\t1\tUBERON:0002048\tmale\n"
    workdir_with(again, table, annotate=annotate)
    run = run_workflow(again, local, None, env={"SYNTHESIZE_SELF_HOSTED": "1"})
    assert run.returncode == 0, output_of(run)
    (cached,) = (again / "resources/gene_order").glob("*/gem-1-bulk.json")
    assert json.loads(cached.read_text())["genes"] == list(gene_order(GENES))
    log = next((again / "logs/gene_order").rglob("*.log")).read_text()
    assert "self-hosted container" in log and "submitted to" not in log
    assert pd.read_parquet(again / "results/annotate/mine/predicted_metadata.parquet")["sample_id"].tolist() == [
        "a",
        "b",
    ]
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


def test_gem2_reference_and_autoencode_rows_send_aligned_counts(make_emulator, emulator_token, tmp_path):
    """GEM-2 reference rows (a from-reference id, an ensemble member, gem-2 with the operation)
    and an autoencode row: GEM-2's gene order is learned once (its own cache file), each
    reference aligned to it and sent in the item's counts; outputs in the GEM-2 group with the
    reference's provenance, and autoencode's release and VAE run per sample. GEM-2's
    predict-metadata annotates a file of one's own and the GEM-2 group's samples."""
    emulator = make_emulator(genes=GENES, latency=0.1)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    workdir_with(earlier, MIXED)
    run = run_workflow(earlier, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    source = pd.read_parquet(earlier / "results/gem-2-bulk/expression.parquet").set_index("gene_id")
    genes = list(source.index)
    # A TSV reference: versioned ids, reversed, 10% of the model's genes left out.
    work = tmp_path / "work"
    work.mkdir()
    kept = source.iloc[::-1].iloc[: int(GENES * 0.9)]
    (work / "refs").mkdir()
    pd.DataFrame({"gene_id": [f"{g}.3" for g in kept.index], "ctrl": kept["liver_etoh_1"].values}).to_csv(
        work / "refs/ref.tsv", sep="\t", index=False
    )
    table = (
        "condition\tnum_samples\tmodel\toperation\treference\treference_sample\tsmiles\tseed\n"
        "plain\t1\tgem-2-bulk\t\t\t\t\t1\n"
        "etoh\t2\tgem-2-bulk_reference-conditioning\t\trefs/ref.tsv\tctrl\tCCO\t2\n"
        "member\t1\tgem-2-bulk_reference-conditioning-p3rz5xv7\t\trefs/ref.tsv\t\t\t3\n"
        "named\t1\tgem-2\tpredict-expression-from-reference\trefs/ref.tsv\tctrl\t\t4\n"
        "auto\t1\tgem-2-bulk_autoencode\t\trefs/ref.tsv\tctrl\t\t5\n"
    )
    # GEM-2's predict-metadata of a counts file of one's own, aligned to GEM-2's gene order.
    (work / "refs/mine.tsv").write_text(
        pd.DataFrame({"gene_id": genes, **{f"d{i}": source.iloc[:, i].values for i in range(3)}}).to_csv(
            sep="\t", index=False
        )
    )
    annotate = [{"name": "mine", "path": "refs/mine.tsv", "modality": "bulk", "model": "gem-2-bulk_predict-metadata"}]
    workdir_with(
        work,
        table,
        outputs={"predicted_metadata": True, "latents": True},
        batch_size=2,
        annotate=annotate,
        predict_metadata_batch=2,
    )
    before = sum(emulator.stats()["submissions"].values())
    run = run_workflow(work, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    # 5 conditions, 3 annotated samples in 2 queries, the 6 generated samples' metadata in 3,
    # and the gene order: the earlier run's results are not this workdir's, so one sample of
    # gem-2-bulk is bought to learn it.
    assert sum(emulator.stats()["submissions"].values()) - before == 5 + 2 + 3 + 1
    cache = next((work / "resources/gene_order").glob("*/gem-2-bulk.json"))
    cached = json.loads(cache.read_text())
    assert cached["genes"] == genes and "one-sample query of gem-2-bulk" in cached["source"]
    assert not list((work / "resources/gene_order").glob("*/gem-1-bulk.json"))

    results = work / "results/gem-2-bulk"
    assert sorted(p.name for p in (work / "results").iterdir() if (p / "expression.parquet").exists()) == ["gem-2-bulk"]
    expression = pd.read_parquet(results / "expression.parquet").set_index("gene_id")
    metadata = pd.read_parquet(results / "metadata.parquet")
    ids = ["plain_1", "etoh_1", "etoh_2", "member_1", "named_1", "auto_1"]
    assert list(expression.columns) == ids and list(expression.index) == genes
    assert metadata.reference.isna().tolist() == [True] + [False] * 5
    assert metadata.reference.tolist()[1:] == ["refs/ref.tsv"] * 5
    assert metadata.reference_sample.tolist()[1:] == ["ctrl"] * 5
    aligned = source["liver_etoh_1"].where(source.index.isin(kept.index), 0)
    assert set(metadata.reference_library_size.dropna()) == {int(aligned.sum())}
    # The queries carried the reference aligned to GEM-2's gene order (a left-out gene is 0).
    for name, operation in [("etoh", "predict-expression-from-reference"), ("auto", "autoencode")]:
        (query,) = (work / "results/queries/gem-2-bulk").glob(f"*/{name}.json")
        body = json.loads(query.read_text())
        assert body["operation"] == operation
        assert body["inputs"]["items"][0]["counts"] == aligned.astype(int).tolist()
    references = pd.read_parquet(results / "references.parquet").set_index("gene_id")
    assert list(references.index) == genes and list(references.columns) == ["etoh", "member", "named", "auto"]
    assert references["etoh"].tolist() == aligned.astype(int).tolist()
    # autoencode's provenance per sample; the other rows have none.
    auto = metadata.set_index("sample_id").loc["auto_1"]
    assert auto["model_release_id"] and str(auto["vae_run_id"])
    assert metadata.set_index("sample_id")["model_release_id"].isna().tolist() == [True] * 5 + [False]
    # GEM-2's predicted metadata and class probabilities of the annotated file, per sample.
    predicted = pd.read_parquet(work / "results/annotate/mine/predicted_metadata.parquet")
    probs = pd.read_parquet(work / "results/annotate/mine/classifier_probs.parquet")
    assert predicted["sample_id"].tolist() == ["d0", "d1", "d2"] and predicted.shape[1] > 1
    assert predicted.drop(columns="sample_id").notna().all().all()
    sums = probs.groupby(["sample_id", "field"])["probability"].sum()
    assert set(probs["sample_id"]) == {"d0", "d1", "d2"} and ((sums - 1).abs() < 0.01).all()
    label = json.loads(pq.read_schema(work / "results/annotate/mine/predicted_metadata.parquet").metadata[b"synthbio"])
    assert label["model_id"] == "gem-2-bulk_predict-metadata"
    # outputs: latents: what GEM-2 encoded each sample to (latents.encoded), in the same order.
    encoded = pd.read_parquet(work / "results/annotate/mine/encoded_latents.parquet")
    assert encoded.columns.tolist() == ["sample_id", "encoded"] and encoded["sample_id"].tolist() == ["d0", "d1", "d2"]
    assert encoded["encoded"].map(len).gt(0).all()
    (query,) = (work / "results/queries/annotate/mine").glob("0001.json")
    body = json.loads(query.read_text())
    assert body["operation"] == "predict-metadata" and len(body["inputs"]["items"]) == 2
    assert body["inputs"]["items"][0]["counts"] == source.iloc[:, 0].astype(int).tolist()
    # outputs: predicted_metadata: the GEM-2 group's samples, by GEM-2's predict-metadata.
    predicted = pd.read_parquet(results / "predicted_metadata.parquet")
    assert predicted["sample_id"].tolist() == ids
    encoded = pd.read_parquet(results / "encoded_latents.parquet")
    assert encoded["sample_id"].tolist() == ids and encoded.columns.tolist() == ["sample_id", "encoded"]
    label = json.loads(pq.read_schema(results / "classifier_probs.parquet").metadata[b"synthbio"])
    assert label["model_id"] == "gem-2-bulk_predict-metadata"
    (query,) = (work / "results/queries/gem-2-bulk/predicted_metadata").glob("0001.json")
    body = json.loads(query.read_text())
    assert body["operation"] == "predict-metadata" and body["inputs"]["modality"] == "bulk"
    assert body["inputs"]["items"][0]["counts"] == expression["plain_1"].tolist()
    # A from-reference sample is drawn around the reference's library size (no total_count given).
    assert abs(expression["etoh_1"].sum() / aligned.sum() - 1) < 0.25


def test_gem2_group_gets_its_round_trip_and_ma_plots(make_emulator, emulator_token, tmp_path):
    """A GEM-2 bulk group with a reference row and outputs: predicted_metadata: the report's
    round trip compares the GEM-2 requests (tissue by name, sample type) with GEM-2's predicted
    metadata, names the perturbation lists it does not compare, and the MA plots mark the gene
    of the reference row's gene_perturbations. GEM-2's gene order comes from gene_order_files."""
    from synthbio_pipeline.emulator.generate import gene_order

    emulator = make_emulator(genes=GENES, latency=0.1)
    genes = list(gene_order(GENES))
    rng = np.random.default_rng(3)
    counts = rng.integers(50, 400, len(genes))
    counts[genes.index(TP53)] = 20_000
    (tmp_path / "refs").mkdir()
    pd.DataFrame({"gene_id": genes, "ctrl": counts}).to_csv(tmp_path / "refs/ref.tsv", sep="\t", index=False)
    table = (
        "condition\tnum_samples\tmodel\ttissue\tsample_type\tsmiles\tgene_perturbations\treference\treference_sample\tseed\n"
        "liver_etoh\t3\tgem-2-bulk\tliver\tprimary tissue\tCCO\t\t\t\t1\n"
        "lung\t2\tgem-2-bulk\tlung\t\t\t\t\t\t2\n"
        f"tp53_ko\t2\tgem-2-bulk_reference-conditioning\tliver\t\t\t{TP53}\trefs/ref.tsv\tctrl\t3\n"
    )
    # GEM-2's gene order given (gene_order_files.gem-2-bulk): nothing is bought to learn it.
    (tmp_path / "refs/order.txt").write_text("\n".join(genes) + "\n")
    configfile = workdir_with(
        tmp_path,
        table,
        outputs={"predicted_metadata": True, "report": True},
        gene_order_files={"gem-2-bulk": "refs/order.txt"},
    )
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    # 3 conditions and the 7 samples' metadata in one query; no gene-order sample.
    assert sum(emulator.stats()["submissions"].values()) == 3 + 1
    assert not (tmp_path / "resources/gene_order").exists()
    report = tmp_path / "results/report/gem-2-bulk"
    assert {"round_trip.tsv", "round_trip.html", "round_trip.svg", "ma_plots.svg", "top_changed_genes.tsv"} <= {
        p.name for p in report.iterdir()
    }

    # The round trip: the GEM-2 fields both sides have, per condition, in table order.
    round_trip = pd.read_csv(report / "round_trip.tsv", sep="\t")
    rows = list(zip(round_trip["condition"], round_trip["field"], round_trip["requested"]))
    assert rows == [
        ("liver_etoh", "sample_type", "primary tissue"),
        ("liver_etoh", "tissue", "liver"),
        ("lung", "tissue", "lung"),
        ("tp53_ko", "tissue", "liver"),
    ]
    assert round_trip.set_index("condition")["samples"].to_dict() == {"liver_etoh": 3, "lung": 2, "tp53_ko": 2}
    assert (round_trip["predicted"] == round_trip["samples"]).all()  # GEM-2 predicted every sample's fields
    assert round_trip["requested_seen"].all()  # GEM-2's predictor outputs tissue names
    assert round_trip["mean_probability"].between(0, 1).all()
    tissue = round_trip[round_trip["field"] == "tissue"].set_index("condition")
    assert tissue.loc["lung", "top_match_share"] == 1.0 and tissue.loc["lung", "most_predicted"] == "lung"
    page = html.unescape((report / "round_trip.html").read_text())
    assert "bioactive_entity_perturbations: requested by 1 conditions as a list of objects" in page
    assert "gene_perturbations: requested by 1 conditions as a list of objects" in page
    log = (tmp_path / "logs/report/gem-2-bulk_round_trip.log").read_text()
    assert "fields compared: sample_type, tissue" in log
    assert "lists, not compared: bioactive_entity_perturbations, gene_perturbations" in log
    assert "Round trip" in (report / "round_trip.svg").read_text()

    # The MA plots: the reference row against its reference, TP53 (its gene perturbation) marked.
    top = pd.read_csv(report / "top_changed_genes.tsv", sep="\t")
    assert set(top["condition"]) == {"tp53_ko"}
    marked = top[top["perturbed"]]
    assert marked["gene_id"].tolist() == [TP53]
    svg = (report / "ma_plots.svg").read_text()
    assert f"{TP53} (target)" in svg and f"gene_id {TP53}" in svg
    assert not (tmp_path / "results/report/bulk").exists()

    # The report page gathers them under the GEM-2 group.
    args = ("-s", str(SNAKEFILE), "-d", str(tmp_path), "--configfile", str(configfile))
    page = snakemake("--report", "report.html", *args, "--config", f"api_base_url={emulator.url}", cwd=tmp_path,
                     token=emulator_token)  # fmt: skip
    assert page.returncode == 0, output_of(page)
    gathered = (tmp_path / "report.html").read_text()
    assert "gem-2-bulk" in gathered and "round_trip.svg" in gathered and "ma_plots.svg" in gathered


def test_a_configured_gene_order_of_the_other_family_is_refused_before_anything_is_bought(
    make_emulator, emulator_token, tmp_path
):
    """gene_order_files.gem-2-bulk naming GEM-1's cached order (the file says which model it came
    from): counts aligned to it would be paid for and then refused, so the run stops at parse time."""
    from synthbio_pipeline.emulator.generate import gene_order
    from synthbio_pipeline.pipeline.references import write_gene_order

    emulator = make_emulator(genes=GENES)
    genes = list(gene_order(GENES))
    (tmp_path / "refs").mkdir()
    pd.DataFrame({"gene_id": genes, "ctrl": 100}).to_csv(tmp_path / "refs/ref.tsv", sep="\t", index=False)
    write_gene_order(tmp_path / "refs/order.json", genes, model_id="gem-1-bulk", base_url=emulator.url, source="test")
    table = (
        "condition\tnum_samples\tmodel\ttissue\tgene_perturbations\treference\treference_sample\n"
        f"tp53_ko\t2\tgem-2-bulk_reference-conditioning\tliver\t{TP53}\trefs/ref.tsv\tctrl\n"
    )
    workdir_with(tmp_path, table, gene_order_files={"gem-2-bulk": "refs/order.json"})
    run = run_workflow(tmp_path, emulator, emulator_token)
    said = run.stdout + run.stderr
    assert run.returncode != 0, output_of(run)
    assert "gene_order_files.gem-2-bulk: refs/order.json: it holds the gene order of gem-1-bulk" in said, said
    assert "not of gem-2-bulk" in said and "Traceback" not in said
    assert "predict" not in emulator.stats()["requests"] and not (tmp_path / "results").exists()
