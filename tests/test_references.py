"""Reference and annotate files: the readers (Parquet, TSV/CSV(.gz), h5ad), alignment to the
model's gene order, the gene-order cache, and every way a file is refused before anything is
sent (each names the table's file and line, the reference file and the sample)."""

from __future__ import annotations

import gzip
import json

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthbio_pipeline.formats.exports import to_h5ad
from synthbio_pipeline.formats.parquet import PartTarget, merge_parts, write_part
from synthbio_pipeline.formats.references import CountsFileError, open_counts
from synthbio_pipeline.pipeline.conditions import ConditionsError, read_conditions, write_query
from synthbio_pipeline.pipeline.references import (
    GENE_ORDER_MODELS,
    MIN_GENE_OVERLAP,
    Annotation,
    ReferenceError,
    align,
    align_references,
    annotation_problems,
    gene_order_model,
    gene_order_path,
    read_annotations,
    read_configured_gene_order,
    read_gene_order,
    reference_problems,
    service_key,
    unversioned,
    write_gene_order,
    write_references,
)

GENES = [f"ENSG{i:011d}" for i in range(1, 41)]
RNG = np.random.default_rng(7)
COUNTS = RNG.poisson(30, size=(len(GENES), 3)).astype(np.int64)  # genes x samples
SAMPLES = ["ctrl_a", "ctrl_b", "ctrl_c"]


def our_pair(folder, model_id="gem-1-bulk", condition="lung", as_counts=True):
    """A merged expression/metadata pair as the workflow writes it (write_part, merge_parts)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "gene_order": GENES,
        "model_version": "emulator-2",
        "outputs": [{"counts": COUNTS[:, j].tolist(), "metadata": {"sex": "male"}} for j in range(3)],
    }
    (folder / "result.json").write_text(json.dumps(document))
    body = {"inputs": [{"metadata": {"sex": "male"}, "num_samples": 3}]}
    write_part(
        folder / "result.json",
        PartTarget(
            condition=condition,
            model_id=model_id,
            body=body,
            expression_out=folder / "part_e.parquet",
            metadata_out=folder / "part_m.parquet",
            as_counts=as_counts,
        ),
        query_id="q1",
    )
    merge_parts(
        [folder / "part_e.parquet"],
        [folder / "part_m.parquet"],
        folder / "expression.parquet",
        folder / "metadata.parquet",
    )
    return folder / "expression.parquet", folder / "metadata.parquet"


def tsv(path, genes=GENES, counts=COUNTS, samples=SAMPLES, sep="\t", gene_column="gene_id"):
    frame = pd.DataFrame(counts, columns=samples)
    frame.insert(0, gene_column, genes)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as handle:
        frame.to_csv(handle, sep=sep, index=False)
    return path


def table(tmp_path, rows, header="condition\tnum_samples\treference\treference_sample\tperturbation_type"):
    path = tmp_path / "conditions.tsv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def problems_of(tmp_path, rows, gene_order=None, modality="bulk", **kwargs):
    conditions = read_conditions(table(tmp_path, rows, **kwargs))
    return reference_problems(conditions, tmp_path / "conditions.tsv", {modality: gene_order}, base=tmp_path)


# --- readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ref.tsv", "ref.txt", "ref.tsv.gz", "ref.csv", "ref.csv.gz"])
def test_delimited_files_are_read_with_their_gene_column(tmp_path, name):
    path = tsv(tmp_path / name, sep="," if ".csv" in name else "\t")
    source = open_counts(path)
    assert (source.layout, source.genes, source.samples, source.label) == (
        "csv" if ".csv" in name else "tsv",
        GENES,
        SAMPLES,
        None,
    )
    assert np.array_equal(source.values(["ctrl_b", "ctrl_a"]), COUNTS[:, [1, 0]])


def test_the_first_column_holds_gene_ids_when_none_is_named_gene_id(tmp_path):
    source = open_counts(tsv(tmp_path / "r.tsv", gene_column="Geneid"))
    assert source.genes == GENES and source.samples == SAMPLES


def test_our_merged_expression_parquet_is_read_with_its_label(tmp_path):
    expression, _ = our_pair(tmp_path / "run")
    source = open_counts(expression)
    assert source.samples == ["lung_1", "lung_2", "lung_3"] and source.genes == GENES
    assert source.label["modality"] == "bulk" and source.label["values"] == "counts"
    assert np.array_equal(source.values(["lung_3"])[:, 0], COUNTS[:, 2])


@pytest.mark.parametrize("model_id, encoding", [("gem-1-bulk", "dense"), ("gem-1-sc", "csr_matrix")])
def test_h5ad_dense_and_sparse_are_read_with_h5py(tmp_path, model_id, encoding):
    expression, metadata = our_pair(tmp_path / "run", model_id=model_id)
    to_h5ad(expression, metadata, tmp_path / "x.h5ad")
    with h5py.File(tmp_path / "x.h5ad") as f:
        found = "dense" if isinstance(f["X"], h5py.Dataset) else f["X"].attrs["encoding-type"]
    assert found == encoding
    source = open_counts(tmp_path / "x.h5ad")
    assert source.samples == ["lung_1", "lung_2", "lung_3"] and source.genes == GENES
    assert source.label["modality"] == ("bulk" if model_id == "gem-1-bulk" else "single-cell")
    assert np.array_equal(source.values(["lung_2", "lung_1"]), COUNTS[:, [1, 0]])


def test_h5ad_csc_is_read_too(tmp_path):
    """CSC X (what some tools write): a sample's row gathered from every gene's column."""
    dense = COUNTS.T  # samples x genes
    with h5py.File(tmp_path / "c.h5ad", "w") as f:
        x = f.create_group("X")
        x.attrs["encoding-type"], x.attrs["shape"] = "csc_matrix", dense.shape
        indptr, indices, data = [0], [], []
        for gene in range(dense.shape[1]):
            rows = np.flatnonzero(dense[:, gene])
            indices += rows.tolist()
            data += dense[rows, gene].tolist()
            indptr.append(len(indices))
        x["indptr"], x["indices"], x["data"] = indptr, indices, np.array(data, np.float32)
        for name, index in (("obs", SAMPLES), ("var", GENES)):
            group = f.create_group(name)
            group.attrs["_index"] = "_index"
            group["_index"] = np.array(index, dtype=object).astype("S")
    source = open_counts(tmp_path / "c.h5ad")
    assert source.samples == SAMPLES
    assert np.array_equal(source.values(["ctrl_c"])[:, 0], COUNTS[:, 2])


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("r.xlsx", b"x", "not a counts file this workflow reads"),
        ("r.tsv", b"", "empty"),
        ("r.tsv", b"gene_id,a,b\nENSG00000000001,1,2\n", "comma-separated?"),
        ("r.tsv", b"gene_id\ta\ta\nENSG00000000001\t1\t2\n", "more than once"),
        ("r.h5ad", b"not hdf5", "cannot be read as a h5ad"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CountsFileError, match="r\\.") as caught:
        open_counts(tmp_path / name)
    assert fragment in str(caught.value)


# --- alignment ---------------------------------------------------------------------------------


def test_alignment_matches_versioned_ids_and_fills_missing_genes_with_zero():
    order = GENES[:30] + ["ENSG00000099991", "ENSG00000099992"]
    file_genes = [f"{gene}.{i % 3 + 1}" for i, gene in enumerate(reversed(GENES))] + ["ENSG00000055555_PAR_Y"]
    values = np.concatenate([COUNTS[::-1, 0], [5]]).astype(float)
    aligned = align(file_genes, values, order)
    assert aligned.counts.tolist() == COUNTS[:30, 0].tolist() + [0, 0]
    assert (aligned.matched, aligned.missing, aligned.unused, aligned.model_genes) == (30, 2, 11, 32)
    assert aligned.library_size == COUNTS[:30, 0].sum()
    assert unversioned("ENSG00000141510.17") == "ENSG00000141510" and unversioned("TP53") is None


def test_references_parquet_holds_each_condition_aligned(tmp_path):
    tsv(tmp_path / "ref.tsv", genes=[g + ".4" for g in GENES])
    conditions = read_conditions(table(tmp_path, ["a\t2\tref.tsv\tctrl_b\tcrispr", "b\t1\tref.tsv\tctrl_c\tcrispr"]))
    order = list(reversed(GENES))
    alignments = write_references(conditions, order, tmp_path / "references.parquet", base=tmp_path)
    written = pq.read_table(tmp_path / "references.parquet")
    assert written.column_names == ["gene_id", "a", "b"]
    assert written.column("gene_id").to_pylist() == order
    assert written.column("a").to_pylist() == COUNTS[::-1, 1].tolist()
    assert written.schema.field("b").type == "int64"
    assert alignments["b"].sample == "ctrl_c" and alignments["b"].library_size == COUNTS[:, 2].sum()


def test_a_reference_row_query_carries_the_aligned_counts(tmp_path):
    tsv(tmp_path / "ref.tsv")
    (row,) = read_conditions(table(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"]), {"seed": 3})
    alignment = align_references([row], GENES, base=tmp_path)["ko"]
    write_query(row, tmp_path / "ko.json", alignment.counts.tolist())
    body = json.loads((tmp_path / "ko.json").read_text())
    assert body["inputs"] == [
        {"counts": COUNTS[:, 0].tolist(), "metadata": {"perturbation_type": "crispr"}, "num_samples": 2}
    ]
    assert (body["seed"], body["sampling_strategy"]) == (3, "sample generation")
    assert "\n" not in (tmp_path / "ko.json").read_text().strip()  # one line, not 40 (44,590) of them
    with pytest.raises(ValueError, match="needs the aligned counts"):
        write_query(row, tmp_path / "x.json")


# --- every bad reference, refused with the table's file and line -------------------------------


def single(problems):
    assert len(problems) == 1, problems
    text = str(problems[0])
    assert "conditions.tsv:2 (condition 'ko')" in text
    return problems[0], text


def test_a_missing_reference_file_is_refused(tmp_path):
    problem, text = single(problems_of(tmp_path, ["ko\t2\tnowhere.tsv\tS1\tcrispr"]))
    assert problem.column == "reference" and "nowhere.tsv: no such file" in text


def test_a_missing_sample_is_refused_with_the_samples_there(tmp_path):
    tsv(tmp_path / "ref.tsv")
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_x\tcrispr"]))
    assert problem.column == "reference_sample"
    assert "has no sample 'ctrl_x'" in text and "'ctrl_a', 'ctrl_b', 'ctrl_c'" in text


def test_a_file_of_several_samples_needs_reference_sample(tmp_path):
    tsv(tmp_path / "ref.tsv")
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\t\tcrispr"]))
    assert problem.column == "reference_sample" and "has 3 samples" in text
    tsv(tmp_path / "one.tsv", counts=COUNTS[:, :1], samples=["only"])
    assert problems_of(tmp_path, ["ko\t2\tone.tsv\t\tcrispr"]) == []  # one sample: that one


def test_gene_symbols_are_refused(tmp_path):
    symbols = ["TP53", "GAPDH", "ACTB", "MYC"] + [f"GENE{i}" for i in range(36)]
    tsv(tmp_path / "ref.tsv", genes=symbols)
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"]))
    assert problem.column == "reference"
    assert "ref.tsv" in text and "gene symbols" in text and "'TP53', 'GAPDH'" in text and "Ensembl" in text


def test_too_little_overlap_with_the_models_genes_is_refused(tmp_path):
    tsv(tmp_path / "ref.tsv")
    order = GENES[:10] + [f"ENSG{i:011d}" for i in range(100, 130)]  # 10 of 40 model genes: 25%
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"], gene_order=order))
    assert "sample 'ctrl_a'" in text and "covers 10 of the model's 40 genes (25.0%)" in text
    assert f"{MIN_GENE_OVERLAP:.0%}" in text
    ok = GENES[:25] + [f"ENSG{i:011d}" for i in range(100, 115)]  # 25 of 40: 62.5%
    assert problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"], gene_order=ok) == []


def test_negative_counts_are_refused(tmp_path):
    counts = COUNTS.copy()
    counts[5, 1] = -4
    tsv(tmp_path / "ref.tsv", counts=counts)
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_b\tcrispr"]))
    assert "sample 'ctrl_b'" in text and "negative" in text and GENES[5] in text and "-4" in text
    assert problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"]) == []  # another sample is fine


def test_fractional_counts_are_refused(tmp_path):
    tsv(tmp_path / "ref.tsv", counts=COUNTS / 7.0)
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"]))
    assert "fractional" in text and "TPM" in text


def test_missing_values_are_refused(tmp_path):
    (tmp_path / "ref.tsv").write_text(
        "gene_id\tS1\n" + "".join(f"{g}\t{'' if i == 3 else i}\n" for i, g in enumerate(GENES))
    )
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tS1\tcrispr"]))
    assert "missing" in text and GENES[3] in text


def test_the_other_modalitys_output_is_refused(tmp_path):
    """Our single-cell h5ad on a bulk row, and our bulk expression.parquet on a single-cell row."""
    expression, metadata = our_pair(tmp_path / "sc", model_id="gem-1-sc")
    to_h5ad(expression, metadata, tmp_path / "cells.h5ad")
    problem, text = single(problems_of(tmp_path, ["ko\t2\tcells.h5ad\tlung_1\tcrispr"]))
    assert "cells.h5ad" in text and "holds single-cell data" in text and "bulk row" in text

    bulk, _ = our_pair(tmp_path / "bulk", model_id="gem-1-bulk")
    rows = [f"ko\t2\t{bulk.relative_to(tmp_path)}\tlung_1\tcrispr\tsingle-cell"]
    header = "condition\tnum_samples\treference\treference_sample\tperturbation_type\tmodality"
    problem, text = single(problems_of(tmp_path, rows, modality="single-cell", header=header))
    assert "holds bulk data" in text and "single-cell row" in text


def test_our_log1p_cpm_output_is_refused(tmp_path):
    expression, _ = our_pair(tmp_path / "cpm", as_counts=False)
    problem, text = single(problems_of(tmp_path, [f"ko\t2\t{expression.relative_to(tmp_path)}\tlung_1\tcrispr"]))
    assert "log1p-CPM" in text


def test_repeated_genes_are_refused(tmp_path):
    tsv(tmp_path / "ref.tsv", genes=GENES[:39] + [GENES[0] + ".2"])
    problem, text = single(problems_of(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"]))
    assert f"gene {GENES[0]} appears twice" in text


def test_a_biological_key_on_a_reference_row_is_refused_as_inferred(tmp_path):
    path = table(
        tmp_path,
        ["ko\t2\tref.tsv\tctrl_a\tcrispr\tUBERON:0002048\tPRJNA12"],
        header="condition\tnum_samples\treference\treference_sample\tperturbation_type\ttissue_ontology_id\tstudy",
    )
    with pytest.raises(ConditionsError) as caught:
        read_conditions(path)
    found = {problem.column: problem for problem in caught.value.problems}
    assert set(found) == {"tissue_ontology_id", "study"}
    assert all(problem.line == 2 and problem.condition == "ko" for problem in found.values())
    assert "infers it from the reference" in found["tissue_ontology_id"].message
    assert "biological" in found["tissue_ontology_id"].message and "technical" in found["study"].message


# --- the reference columns and options in the table ---------------------------------------------


def test_reference_rows_use_the_reference_conditioning_model_and_its_options(tmp_path):
    path = table(
        tmp_path,
        ["ko\t2\tref.tsv\tS1\tcrispr\tbiological;technical\ttrue\t5000", "base\t1\t\t\t\t\t\t"],
        header=(
            "condition\tnum_samples\treference\treference_sample\tperturbation_type\tconditioning\t"
            "fixed_total_count\ttotal_count"
        ),
    )
    ko, base = read_conditions(path, {"conditioning": ["biological"], "fixed_total_count": False})
    assert (ko.model_id, ko.reference, ko.reference_sample) == ("gem-1-bulk_reference-conditioning", "ref.tsv", "S1")
    assert ko.options == {"total_count": 5000, "conditioning": ["biological", "technical"], "fixed_total_count": True}
    # The config's defaults of reference options are for reference rows: a baseline row ignores them.
    assert (base.model_id, base.options, base.is_reference) == ("gem-1-bulk", {}, False)
    assert "counts" not in ko.wire_body()["inputs"][0]


@pytest.mark.parametrize(
    "header, row, column, fragment",
    [
        ("condition\tnum_samples\tconditioning", "a\t1\tbiological", "conditioning", "only rows with a reference"),
        ("condition\tnum_samples\tfixed_total_count", "a\t1\ttrue", "fixed_total_count", "only rows with a reference"),
        ("condition\tnum_samples\treference_sample", "a\t1\tS1", "reference_sample", "'reference' column too"),
        ("condition\tnum_samples\treference\tconditioning", "a\t1\tr.tsv\tbio", "conditioning", "'biological'"),
        ("condition\tnum_samples\treference\ttotal_count", "a\t1\tr.tsv\t100", "total_count", "fixed_total_count"),
        (
            "condition\tnum_samples\treference\tmodel_id",
            "a\t1\tr.tsv\tgem-1-bulk",
            "model_id",
            "reference-conditioning",
        ),
        (
            "condition\tnum_samples\tmodel_id",
            "a\t1\tgem-1-sc_reference-conditioning",
            "reference",
            "give its counts file",
        ),
    ],
)
def test_reference_columns_and_options_are_checked_per_cell(tmp_path, header, row, column, fragment):
    with pytest.raises(ConditionsError) as caught:
        read_conditions(table(tmp_path, [row], header=header))
    match = [p for p in caught.value.problems if p.column == column and p.line == 2]
    assert match and fragment in match[0].message, caught.value.problems


# --- annotate ------------------------------------------------------------------------------------


def test_annotate_entries_and_their_files_are_checked(tmp_path):
    entries = read_annotations([{"name": "mine", "path": "mine.tsv", "modality": "bulk"}])
    assert entries == [Annotation("mine", "mine.tsv", "bulk", 0)]
    assert entries[0].model_id == "gem-1-bulk_predict-metadata" and entries[0].group == "bulk"
    (gem2,) = read_annotations([{"name": "g", "path": "x", "modality": "single-cell", "model": "gem-2-sc_metadata"}])
    assert (gem2.model_id, gem2.group) == ("gem-2-sc_metadata", "gem-2-single-cell")
    with pytest.raises(ReferenceError, match="does not predict bulk metadata; did you mean 'gem-2-bulk_metadata'"):
        read_annotations([{"name": "a", "path": "x", "modality": "bulk", "model": "gem-2-sc_metadata"}])
    with pytest.raises(ReferenceError, match="gem-2-bulk_autoencode' does not predict"):
        read_annotations([{"name": "a", "path": "x", "modality": "bulk", "model": "gem-2-bulk_autoencode"}])
    # A generating model: its own family's predictor, not the nearest spelling of the other's.
    with pytest.raises(
        ReferenceError, match="'gem-1-bulk' does not predict bulk metadata; did you mean 'gem-1-bulk_pre"
    ):
        read_annotations([{"name": "a", "path": "x", "modality": "bulk", "model": "gem-1-bulk"}])
    with pytest.raises(ReferenceError, match="used twice"):
        read_annotations([{"name": "a", "path": "x", "modality": "bulk"}] * 2)
    tsv(tmp_path / "mine.tsv")
    assert annotation_problems(entries, {"bulk": GENES}, base=tmp_path) == []
    counts = COUNTS.astype(float)
    counts[2, 2] = 0.5
    tsv(tmp_path / "mine.tsv", counts=counts)
    (problem,) = annotation_problems(entries, {"bulk": GENES}, base=tmp_path)
    assert (
        problem.startswith("config annotate[0] ('mine'):") and "sample 'ctrl_c'" in problem and "fractional" in problem
    )
    (problem,) = annotation_problems([Annotation("x", "gone.tsv", "bulk", 0)], base=tmp_path)
    assert "gone.tsv: no such file" in problem


# --- the gene-order cache --------------------------------------------------------------------------


def test_the_cache_is_keyed_by_service_and_baseline_model():
    assert service_key("https://app.synthesize.bio") == "app.synthesize.bio"
    assert service_key("http://127.0.0.1:8123/") == "127.0.0.1_8123"
    path = gene_order_path("http://127.0.0.1:8123", "gem-1-sc_reference-conditioning")
    assert path == "resources/gene_order/127.0.0.1_8123/gem-1-sc.json"
    assert gene_order_path("https://app.synthesize.bio", "gem-1-bulk_predict-metadata").endswith("/gem-1-bulk.json")


def test_gem2_has_its_own_gene_order_per_modality():
    """Every GEM-2 id of a modality (gem-2 itself given the modality) shares gem-2-{bulk,sc}'s
    gene order, apart from GEM-1's; each output group has its source."""
    base = "http://127.0.0.1:8123"
    for model_id in ("gem-2-bulk_reference-conditioning-p3rz5xv7", "gem-2-bulk_autoencode-ensemble", "gem-2-bulk"):
        assert gene_order_path(base, model_id) == "resources/gene_order/127.0.0.1_8123/gem-2-bulk.json"
    assert gene_order_path(base, "gem-2", modality="single-cell").endswith("/gem-2-sc.json")
    with pytest.raises(ValueError, match="names no modality"):
        gene_order_model("gem-2")
    assert GENE_ORDER_MODELS == {
        "bulk": "gem-1-bulk",
        "single-cell": "gem-1-sc",
        "gem-2-bulk": "gem-2-bulk",
        "gem-2-single-cell": "gem-2-sc",
    }


def test_gem2_reference_rows_are_checked_against_gem2s_gene_order(tmp_path):
    tsv(tmp_path / "ref.tsv")
    rows = ["gem1\t2\tref.tsv\tctrl_a\t\t", "gem2\t2\tref.tsv\tctrl_a\t\tgem-2-bulk_reference-conditioning"]
    header = "condition\tnum_samples\treference\treference_sample\tperturbation_type\tmodel"
    conditions = read_conditions(table(tmp_path, rows, header=header))
    # GEM-2's gene order shares too few genes with the file; GEM-1's is the file's own.
    orders = {"bulk": GENES, "gem-2-bulk": [f"ENSG{i:011d}" for i in range(100, 140)]}
    found = reference_problems(conditions, tmp_path / "conditions.tsv", orders, base=tmp_path)
    assert [(p.condition, p.column) for p in found] == [("gem2", "reference")]
    assert "covers 0 of the model's 40 genes" in found[0].message


def test_gene_order_files_in_every_accepted_form(tmp_path):
    write_gene_order(tmp_path / "cache.json", GENES, model_id="gem-1-bulk", base_url="https://x.org", source="test")
    cached = json.loads((tmp_path / "cache.json").read_text())
    assert cached["model_id"] == "gem-1-bulk" and cached["source"] == "test"
    (tmp_path / "list.json").write_text(json.dumps(GENES))
    (tmp_path / "ids.txt").write_text("\n".join(GENES) + "\n")
    expression, _ = our_pair(tmp_path / "run")
    for path in ("cache.json", "list.json", "ids.txt", expression):
        assert read_gene_order(tmp_path / path) == GENES
    (tmp_path / "symbols.txt").write_text("TP53\nGAPDH\nACTB\n")
    with pytest.raises(ReferenceError, match="gene symbols"):
        read_gene_order(tmp_path / "symbols.txt")
    with pytest.raises(ReferenceError, match="cannot read"):
        read_gene_order(tmp_path / "absent.json")


def test_a_gene_order_file_that_names_its_model_must_be_of_the_wanted_family(tmp_path):
    write_gene_order(tmp_path / "gem1.json", GENES, model_id="gem-1-bulk", base_url="https://x.org", source="test")
    write_gene_order(tmp_path / "gem2.json", GENES, model_id="gem-2-bulk", base_url="https://x.org", source="test")
    write_gene_order(tmp_path / "future.json", GENES, model_id="gem-9-bulk", base_url="https://x.org", source="test")
    (tmp_path / "ids.txt").write_text("\n".join(GENES) + "\n")
    gem1_expression, _ = our_pair(tmp_path / "gem1")
    gem2_expression, _ = our_pair(tmp_path / "gem2", model_id="gem-2-bulk_baseline")
    # Every GEM-1 bulk id answers in gem-1-bulk's order; every GEM-2 bulk id in gem-2-bulk's.
    for wanted, taken in [
        ("gem-1-bulk", ["gem1.json", gem1_expression]),
        ("gem-1-bulk_reference-conditioning", ["gem1.json"]),
        ("gem-2-bulk", ["gem2.json", gem2_expression]),
        ("gem-2-bulk_reference-conditioning-p3rz5xv7", ["gem2.json"]),
    ]:
        for path in [*taken, "ids.txt", "future.json"]:  # a plain list, or a model we do not know: taken
            assert read_gene_order(tmp_path / path, model_id=wanted) == GENES
    with pytest.raises(ReferenceError, match="gene order of gem-1-bulk .*not of gem-2-bulk"):
        read_gene_order(tmp_path / "gem1.json", model_id="gem-2-bulk")
    with pytest.raises(ReferenceError, match="gene order of gem-2-bulk .*not of gem-1-bulk"):
        read_gene_order(gem2_expression, model_id="gem-1-bulk")
    with pytest.raises(ReferenceError, match="gene order of gem-1-bulk .*not of gem-1-sc"):
        read_gene_order(gem1_expression, model_id="gem-1-sc")
    with pytest.raises(
        ReferenceError, match=r"^gene_order_files\.gem-2-bulk: .*gem1\.json: .*'Reference conditioning'"
    ):
        read_configured_gene_order("gene_order_files.gem-2-bulk", tmp_path / "gem1.json", "gem-2-bulk")


def test_validate_checks_the_overlap_and_family_of_a_configured_gene_order(tmp_path, capsys, monkeypatch):
    from synthbio_pipeline.cli import main

    monkeypatch.chdir(tmp_path)  # paths in the config are the workflow's: from its working directory
    tsv(tmp_path / "ref.tsv")
    rows = ["ko\t2\tref.tsv\tctrl_a\tcrispr"]
    config = tmp_path / "config.yaml"
    (tmp_path / "far.txt").write_text("\n".join(GENES[:4] + [f"ENSG{i:011d}" for i in range(500, 700)]) + "\n")
    config.write_text("gene_order_files: {bulk: far.txt}\n")
    assert main(["validate", str(table(tmp_path, rows)), "--config", str(config)]) == 1
    assert "covers 4 of the model's 204 genes" in capsys.readouterr().err
    write_gene_order(tmp_path / "gem1.json", GENES, model_id="gem-1-bulk", base_url="https://x.org", source="test")
    config.write_text("gene_order_files: {bulk: gem1.json}\n")
    assert main(["validate", str(table(tmp_path, rows)), "--config", str(config)]) == 0
    capsys.readouterr()
    gem2 = ["ko\t2\tref.tsv\tctrl_a\tgem-2-bulk_reference-conditioning\tliver\t" + GENES[0]]
    header = "condition\tnum_samples\treference\treference_sample\tmodel\ttissue\tgene_perturbations"
    config.write_text("gene_order_files: {gem-2-bulk: gem1.json}\n")
    assert main(["validate", str(table(tmp_path, gem2, header=header)), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: gene_order_files.gem-2-bulk: gem1.json: it holds the gene order of gem-1-bulk"), err


def test_validate_uses_the_cached_gene_order_and_refuses_what_the_workflow_refuses(tmp_path, capsys, monkeypatch):
    from synthbio_pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    tsv(tmp_path / "ref.tsv")
    config = tmp_path / "config.yaml"
    config.write_text("api_base_url: http://127.0.0.1:8321\n")
    conditions = table(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"])
    assert main(["validate", str(conditions), "--config", str(config)]) == 0
    capsys.readouterr()
    # An earlier run here cached the service's gene order: the overlap is checked against it.
    far = GENES[:4] + [f"ENSG{i:011d}" for i in range(500, 700)]
    cache = gene_order_path("http://127.0.0.1:8321", "gem-1-bulk")
    write_gene_order(tmp_path / cache, far, model_id="gem-1-bulk", base_url="http://127.0.0.1:8321", source="test")
    assert main(["validate", str(conditions), "--config", str(config)]) == 1
    assert "covers 4 of the model's 204 genes" in capsys.readouterr().err
    # A reference inside the workflow's own results/, and a gene_order_files key that is no group.
    (tmp_path / "results/bulk").mkdir(parents=True)
    tsv(tmp_path / "results/bulk/ref.tsv")
    inside = table(tmp_path, ["ko\t2\tresults/bulk/ref.tsv\tctrl_a\tcrispr"])
    assert main(["validate", str(inside), "--config", str(config)]) == 1
    assert (
        "results/bulk/ref.tsv: a reference or annotate file inside this workflow's results/" in capsys.readouterr().err
    )
    config.write_text("gene_order_files: {gem-1-bulk: order.txt}\n")
    conditions = table(tmp_path, ["ko\t2\tref.tsv\tctrl_a\tcrispr"])  # the same file, written again
    assert main(["validate", str(conditions), "--config", str(config)]) == 1
    assert (
        "gene_order_files: unknown key 'gem-1-bulk' — the keys are the output groups bulk," in capsys.readouterr().err
    )


def test_validate_checks_the_reference_files_too(tmp_path, capsys):
    from synthbio_pipeline.cli import main

    tsv(tmp_path / "ref.tsv")
    config = tmp_path / "config.yaml"
    config.write_text("defaults: {}\n")
    good = table(tmp_path, [f"ko\t2\t{tmp_path / 'ref.tsv'}\tctrl_a\tcrispr"])
    assert main(["validate", str(good), "--config", str(config)]) == 0
    assert "1 condition, 2 samples (2 to buy, within max_samples), OK" in capsys.readouterr().out
    bad = table(tmp_path, [f"ko\t2\t{tmp_path / 'ref.tsv'}\tctrl_z\tcrispr"])
    assert main(["validate", str(bad), "--config", str(config)]) == 1
    assert "conditions.tsv:2 (condition 'ko'), column 'reference_sample'" in capsys.readouterr().err
