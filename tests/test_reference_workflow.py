"""The workflow with reference rows, metadata prediction and annotate, against the emulator:
outputs checked for shape, alignment and provenance; reruns; bad references stopped before
any request (at parse time, or in the gene-order job when the order must first be learned)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from snakemake_runs import output_of, snakemake, workflow_args

from synthbio_pipeline.pipeline.references import service_key, unversioned

GENES = 300
BASELINE = (
    "condition\tnum_samples\ttissue_ontology_id\tsex\tsample_type\n"
    "lung\t3\tUBERON:0002048\tmale\tprimary tissue\n"
    "liver\t2\tUBERON:0002107\tfemale\tprimary tissue\n"
)
HEADER = (
    "condition\tnum_samples\ttissue_ontology_id\tsex\treference\treference_sample\t"
    "perturbation_type\tperturbation_ontology_id\tperturbation_time\tfixed_total_count"
)


def setup(workdir, table, **config):
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config/conditions.tsv").write_text(table)
    base = {
        "conditions": "config/conditions.tsv",
        "defaults": {"seed": 5},
        "poll_interval_seconds": 1,
        "outputs": {"h5ad": [], "report": False},
    }
    for key, value in config.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(base))


def run_workflow(workdir, emulator, token, *extra, dry=False):
    args = ["-n"] if dry else ["--cores", "2"]
    return snakemake(*args, *extra, *workflow_args(workdir, emulator.url), cwd=workdir, token=token)


def submissions(emulator) -> int:
    return sum(emulator.stats()["submissions"].values())


def job_counts(run) -> dict[str, int]:
    lines = run.stdout.split("Job stats:", 1)[-1].splitlines()[3:]
    counts = {}
    for row in map(str.split, lines):
        if len(row) != 2 or not row[1].isdigit():
            break
        counts[row[0]] = int(row[1])
    return counts


def test_baseline_and_reference_rows_predicted_metadata_and_annotate(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.1)

    # An earlier run: its merged expression.parquet is the first reference.
    earlier = tmp_path / "earlier"
    setup(earlier, BASELINE)
    run = run_workflow(earlier, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    model_genes = pq.read_table(earlier / "results/bulk/expression.parquet", columns=["gene_id"]).column(0).to_pylist()
    earlier_counts = pd.read_parquet(earlier / "results/bulk/expression.parquet").set_index("gene_id")

    # A TSV reference: versioned ids, in another order, 20% of the model's genes left out.
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    kept = earlier_counts.iloc[::-1].iloc[: int(GENES * 0.8)]
    reference_tsv = pd.DataFrame(
        {"gene_id": [f"{gene}.5" for gene in kept.index], "ctrl": kept["liver_1"].values, "other": 1}
    )
    reference_tsv.to_csv(work / "config/ref.tsv", sep="\t", index=False)
    # A user's own counts to annotate (gzipped TSV, genes x samples).
    mine = pd.DataFrame({"gene_id": model_genes, **{f"donor{i}": earlier_counts.iloc[:, i].values for i in range(3)}})
    mine.to_csv(work / "config/mine.tsv.gz", sep="\t", index=False)
    table = (
        f"{HEADER}\n"
        "lung\t2\tUBERON:0002048\tmale\t\t\t\t\t\t\n"
        "tp53_ko\t2\t\t\t../earlier/results/bulk/expression.parquet\tlung_1\tcrispr\tENSG00000141510\t72 hours\t\n"
        "cisplatin\t2\t\t\tconfig/ref.tsv\tctrl\tcompound\tCHEBI:27899\t24 hours\ttrue\n"
    )
    setup(
        work,
        table,
        batch_size=2,
        defaults={"seed": 5, "total_count": 1_000_000},
        predict_metadata_batch=4,
        annotate=[{"name": "mine", "path": "config/mine.tsv.gz", "modality": "bulk"}],
        outputs={"predicted_metadata": True},
    )
    before = submissions(emulator)
    run = run_workflow(work, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    # 3 conditions, the gene order (1 sample), 6 generated samples in 2 queries, 3 annotated in 1.
    assert submissions(emulator) - before == 3 + 1 + 2 + 1
    # Bought: the plan knows the reference rows' tickets too (bought with their aligned counts).
    run = run_workflow(work, emulator, emulator_token, dry=True)
    assert run.returncode == 0, output_of(run)
    said = run.stdout + run.stderr
    held = "0 queries, 0 samples to buy; {} queries ({} samples) already bought (tickets)"
    assert f"gem-1-bulk_reference-conditioning (bulk): {held.format(2, 4)}" in said, said
    assert f"gem-1-bulk (bulk): {held.format(1, 2)}" in said and "one sample of it will be bought" not in said

    # The gene order: learned once, cached per service and model.
    cache = work / "resources/gene_order" / service_key(emulator.url) / "gem-1-bulk.json"
    cached = json.loads(cache.read_text())
    assert cached["genes"] == model_genes and "one-sample query of gem-1-bulk" in cached["source"]

    # The merged pair: every sample, the model's genes, provenance per sample.
    expression = pd.read_parquet(work / "results/bulk/expression.parquet").set_index("gene_id")
    metadata = pd.read_parquet(work / "results/bulk/metadata.parquet")
    ids = ["lung_1", "lung_2", "tp53_ko_1", "tp53_ko_2", "cisplatin_1", "cisplatin_2"]
    assert list(expression.columns) == ids and list(expression.index) == model_genes
    assert metadata.sample_id.tolist() == ids
    assert metadata.model_id.tolist() == ["gem-1-bulk"] * 2 + ["gem-1-bulk_reference-conditioning"] * 4
    assert metadata.reference.isna().tolist() == [True, True, False, False, False, False]
    assert (
        metadata.reference.tolist()[2:] == ["../earlier/results/bulk/expression.parquet"] * 2 + ["config/ref.tsv"] * 2
    )
    assert metadata.reference_sample.tolist()[2:] == ["lung_1", "lung_1", "ctrl", "ctrl"]
    assert set(metadata.backend) == {"emulator"}

    # The aligned references: the model's gene order, a missing gene is 0, versions ignored.
    references = pd.read_parquet(work / "results/bulk/references.parquet").set_index("gene_id")
    assert list(references.index) == model_genes and list(references.columns) == ["tp53_ko", "cisplatin"]
    assert references["tp53_ko"].tolist() == earlier_counts["lung_1"].tolist()
    by_gene = dict(zip([unversioned(g) for g in reference_tsv.gene_id], reference_tsv.ctrl))
    assert references["cisplatin"].tolist() == [by_gene.get(gene, 0) for gene in model_genes]
    assert (references["cisplatin"] == 0).sum() >= GENES - len(kept)
    library = dict(zip(metadata.condition, metadata.reference_library_size))
    assert library["tp53_ko"] == references["tp53_ko"].sum() and library["cisplatin"] == references["cisplatin"].sum()
    assert pd.isna(library["lung"])
    # What was sent: the aligned counts, in the query of the condition.
    (query,) = (work / "results/queries/bulk").glob("*/cisplatin.json")
    body = json.loads(query.read_text())
    assert body["inputs"][0]["counts"] == references["cisplatin"].tolist()
    assert body["inputs"][0]["metadata"] == {
        "perturbation_type": "compound",
        "perturbation_ontology_id": "CHEBI:27899",
        "perturbation_time": "24 hours",
    }
    assert body["fixed_total_count"] is True and body["total_count"] == 1_000_000
    # Library sizes: kept from the reference, or total_count with fixed_total_count.
    sizes = expression.sum()
    assert np.allclose(sizes[["tp53_ko_1", "tp53_ko_2"]], library["tp53_ko"], rtol=0.5)
    assert np.allclose(sizes[["cisplatin_1", "cisplatin_2"]], 1_000_000, rtol=0.5)
    assert library["cisplatin"] > 4_000_000  # so the two are told apart
    # The CRISPR target drops against its reference.
    tp53 = "ENSG00000141510"
    if tp53 in expression.index and references.loc[tp53, "tp53_ko"] > 20:
        assert expression.loc[tp53, ["tp53_ko_1", "tp53_ko_2"]].mean() < references.loc[tp53, "tp53_ko"] / 2

    # Predicted metadata: one row per generated sample, probabilities in long form.
    predicted = pd.read_parquet(work / "results/bulk/predicted_metadata.parquet")
    assert predicted.sample_id.tolist() == ids and "tissue_ontology_id" in predicted.columns
    assert (
        predicted.loc[predicted.sample_id.str.startswith("lung"), "tissue_ontology_id"].tolist()
        == ["UBERON:0002048"] * 2
    )
    probs = pd.read_parquet(work / "results/bulk/classifier_probs.parquet")
    assert list(probs.columns) == ["sample_id", "field", "value", "probability"]
    assert set(probs.sample_id) == set(ids)
    assert np.allclose(probs.groupby(["sample_id", "field"]).probability.sum(), 1.0, atol=1e-6)
    samples = json.loads((work / "results/queries/bulk/predicted_metadata.samples.json").read_text())
    assert samples == {"0001": ids[:4], "0002": ids[4:]}  # predict_metadata_batch: 4
    label = json.loads(pq.read_schema(work / "results/bulk/predicted_metadata.parquet").metadata[b"synthbio"])
    assert label["backend"] == "emulator" and label["model_id"] == "gem-1-bulk_predict-metadata"

    # Annotate: the file's own sample names.
    annotated = pd.read_parquet(work / "results/annotate/mine/predicted_metadata.parquet")
    assert annotated.sample_id.tolist() == ["donor0", "donor1", "donor2"]
    assert set(pd.read_parquet(work / "results/annotate/mine/classifier_probs.parquet").sample_id) == {
        "donor0",
        "donor1",
        "donor2",
    }

    # The counts never travel in params (they would fill -n and .snakemake/metadata): the
    # recorded params of every job are without them, and small.
    recorded = [json.loads(path.read_text()) for path in (work / ".snakemake/metadata").iterdir()]
    params = [json.dumps(record.get("params", "")) for record in recorded]
    assert any("reference='config/ref.tsv'" in text for text in params)  # the reference rows' params
    assert not any("counts" in text for text in params) and max(map(len, params)) < 4000

    # Nothing to redo; editing the TSV reference reruns its batch only (and what follows the merge).
    run = run_workflow(work, emulator, emulator_token, dry=True)
    assert "Nothing to be done" in run.stdout + run.stderr, output_of(run)
    reference_tsv.loc[0, "ctrl"] += 1000
    reference_tsv.to_csv(work / "config/ref.tsv", sep="\t", index=False)
    run = run_workflow(work, emulator, emulator_token, dry=True)
    assert job_counts(run) == {
        "align_references": 1,
        "write_queries": 1,
        "predict": 1,
        "merge": 1,
        "write_metadata_queries": 1,
        "predict_metadata": 1,
        "all": 1,
        "total": 7,
    }, output_of(run)
    assert "results/queries/bulk/0002" in run.stdout and "results/queries/bulk/0001 " not in run.stdout

    # Adding a reference row where the results of the baseline model are: the gene order is
    # learned from them, nothing is bought for it.
    # (a reference inside the workflow's own results/ is refused: it is copied out first)
    (earlier / "references").mkdir()
    (earlier / "references/lung.parquet").write_bytes((earlier / "results/bulk/expression.parquet").read_bytes())
    (earlier / "config/conditions.tsv").write_text(
        "condition\tnum_samples\ttissue_ontology_id\tsex\tsample_type\treference\treference_sample\tperturbation_type\n"
        "lung\t3\tUBERON:0002048\tmale\tprimary tissue\t\t\t\n"
        "liver\t2\tUBERON:0002107\tfemale\tprimary tissue\t\t\t\n"
        "ko\t1\t\t\t\treferences/lung.parquet\tliver_2\tcrispr\n"
    )
    before = submissions(emulator)
    target = f"resources/gene_order/{service_key(emulator.url)}/gem-1-bulk.json"
    run = run_workflow(earlier, emulator, emulator_token, target)
    assert run.returncode == 0, output_of(run)
    assert submissions(emulator) == before
    assert "earlier query of this workflow" in json.loads((earlier / target).read_text())["source"]


def test_bad_references_are_refused_before_any_request(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.1)
    (tmp_path / "config").mkdir()
    genes = [f"ENSG{i:011d}" for i in range(1, 201)]
    pd.DataFrame({"gene_id": ["TP53", "GAPDH", "ACTB"] * 10, "S1": 5}).to_csv(
        tmp_path / "config/symbols.tsv", sep="\t", index=False
    )
    pd.DataFrame({"gene_id": genes, "S1": 5}).to_csv(tmp_path / "config/far.tsv", sep="\t", index=False)
    (tmp_path / "config/order.txt").write_text("\n".join(genes[:40] + [f"ENSG{i:011d}" for i in range(500, 700)]))
    table = (
        "condition\tnum_samples\treference\treference_sample\tperturbation_type\ttissue_ontology_id\n"
        "symbols\t1\tconfig/symbols.tsv\tS1\tcrispr\t\n"
        "far\t1\tconfig/far.tsv\tS1\tcrispr\t\n"
        "lost\t1\tconfig/gone.tsv\tS1\tcrispr\t\n"
        "tissue\t1\tconfig/far.tsv\tS1\tcrispr\tUBERON:0002048\n"
    )
    # With the gene order given, every check happens before any job.
    setup(tmp_path, table, gene_order_files={"bulk": "config/order.txt"})
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "conditions.tsv:5 (condition 'tissue'), column 'tissue_ontology_id'" in text, output_of(run)
    assert "infers it from the reference" in text
    (tmp_path / "config/conditions.tsv").write_text(table.rsplit("tissue\t", 1)[0])
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "conditions.tsv:2 (condition 'symbols'), column 'reference'" in text, output_of(run)
    assert "gene symbols" in text and "config/symbols.tsv" in text
    assert "conditions.tsv:3 (condition 'far')" in text and "covers 40 of the model's 240 genes" in text
    assert "conditions.tsv:4 (condition 'lost')" in text and "config/gone.tsv: no such file" in text
    # A reference inside the workflow's own results/ would be rewritten by the run reading it.
    (tmp_path / "config/conditions.tsv").write_text(
        "condition\tnum_samples\treference\treference_sample\tperturbation_type\n"
        "again\t1\tresults/bulk/expression.parquet\tlung_1\tcrispr\n"
    )
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode != 0 and "copy it out" in run.stdout + run.stderr, output_of(run)
    assert "predict" not in emulator.stats()["requests"] and not (tmp_path / "results").exists()

    # Without it, the order is bought first (one sample), and the gene-order job refuses the
    # reference before any of its queries is written.
    (tmp_path / "config/conditions.tsv").write_text(
        "condition\tnum_samples\treference\treference_sample\tperturbation_type\nfar\t1\tconfig/far.tsv\tS1\tcrispr\n"
    )
    setup(tmp_path, (tmp_path / "config/conditions.tsv").read_text())
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode != 0
    text = run.stdout + run.stderr
    assert "condition 'far'" in text and "of the model's 300 genes" in text, output_of(run)
    assert submissions(emulator) == 1  # the gene order's one sample, and nothing else
    assert not list((tmp_path / "results").glob("queries/bulk/*/far.json"))


def test_the_gene_orders_one_sample_query_counts_against_the_budget(make_emulator, emulator_token, tmp_path):
    """max_samples at exactly the rows' samples: the gene order's purchase would pass it, so nothing is sent."""
    emulator = make_emulator(genes=GENES, latency=0.1)
    from synthbio_pipeline.emulator.generate import gene_order

    (tmp_path / "config").mkdir()
    pd.DataFrame({"gene_id": gene_order(GENES), "S1": 5}).to_csv(tmp_path / "config/ref.tsv", sep="\t", index=False)
    table = (
        "condition\tnum_samples\treference\treference_sample\tperturbation_type\nko\t2\tconfig/ref.tsv\tS1\tcrispr\n"
    )
    setup(tmp_path, table, max_samples=2)
    run = run_workflow(tmp_path, emulator, emulator_token, dry=True)
    assert run.returncode != 0, output_of(run)
    text = run.stdout + run.stderr
    assert "3 samples" in text and "the gene order's one-sample queries included" in text, output_of(run)
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode != 0 and "predict" not in emulator.stats()["requests"], output_of(run)
    # Allowed one more, the run buys the order and the row: three samples.
    setup(tmp_path, table, max_samples=3)
    run = run_workflow(tmp_path, emulator, emulator_token)
    assert run.returncode == 0, output_of(run)
    assert submissions(emulator) == 2
