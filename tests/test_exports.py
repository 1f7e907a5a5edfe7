"""Exports of a merged pair: AnnData h5ad, TSV/CSV for R, log1p-CPM Parquet."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthbio_pipeline import log_cpm
from synthbio_pipeline.formats.exports import (
    ExportError,
    escape_formula,
    read_label,
    to_delimited,
    to_h5ad,
    to_log_cpm,
)
from synthbio_pipeline.formats.parquet import ROW_GROUP_GENES, SCHEMA_KEY, PartTarget, merge_parts, write_part

GENES = [f"ENSG{i:011d}" for i in range(ROW_GROUP_GENES * 2 + 17)]  # three row groups, the last one short


def merged_pair(tmp_path, conditions, *, model_id="gem-1-bulk", emulator=True, sparse=False, seed=0, genes=GENES):
    """A merged pair made the way the workflow makes it; returns (expression, metadata, samples × genes counts)."""
    rng = np.random.default_rng(seed)
    expression_parts, metadata_parts, blocks = [], [], []
    for name, n in conditions.items():
        counts = rng.integers(0, 5000, size=(n, len(genes)))
        if sparse:
            counts[rng.random(counts.shape) < 0.9] = 0
        blocks.append(counts)
        metadata = {"sex": "male", "tissue_ontology_id": "UBERON:0002048"}
        if len(blocks) == 2:  # a key only the second condition has: missing values in the merged column
            metadata["age_years"] = "65"
        document = {
            "gene_order": genes,
            "model_version": "emulator-2" if emulator else 2,
            "outputs": [{"counts": row.tolist(), "metadata": metadata} for row in counts],
        }
        if emulator:
            document["emulator"] = {"note": "synthetic"}
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
        body = {
            "sampling_strategy": "mean estimation" if sparse else "sample generation",
            "inputs": [{"metadata": metadata, "num_samples": n}],
            "seed": 4,
        }
        expression, meta = tmp_path / name / "expression.parquet", tmp_path / name / "metadata.parquet"
        write_part(
            tmp_path / f"{name}.json",
            PartTarget(condition=name, model_id=model_id, body=body, expression_out=expression, metadata_out=meta),
            query_id=f"q-{name}",
        )
        expression_parts.append(expression)
        metadata_parts.append(meta)
    merge_parts(expression_parts, metadata_parts, tmp_path / "expression.parquet", tmp_path / "metadata.parquet")
    return tmp_path / "expression.parquet", tmp_path / "metadata.parquet", np.vstack(blocks)


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


# --- h5ad --------------------------------------------------------------------------------


def test_h5ad_holds_obs_var_x_and_the_label_of_a_bulk_pair(tmp_path):
    anndata = pytest.importorskip("anndata")
    expression, metadata, counts = merged_pair(tmp_path, {"lung": 2, "liver": 3})
    summary = to_h5ad(expression, metadata, tmp_path / "bulk.h5ad")
    adata = anndata.read_h5ad(tmp_path / "bulk.h5ad")

    assert summary == {"samples": 5, "genes": len(GENES), "sparse": False, "backend": "emulator"}
    assert adata.shape == (5, len(GENES))
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.int32  # bulk: dense
    np.testing.assert_array_equal(adata.X, counts)
    assert list(adata.var_names) == GENES and adata.var.index.name == "gene_id"
    meta = pd.read_parquet(metadata)
    assert list(adata.obs_names) == list(meta.sample_id) and adata.obs.index.name == "sample_id"
    assert list(adata.obs.columns) == list(meta.columns[1:])
    assert meta["age_years"].isna().sum() == 2  # the merged file really has gaps to carry over
    for column in meta.columns[1:]:
        expected = meta[column].astype(object).where(meta[column].notna(), None).tolist()
        got = adata.obs[column].astype(object).where(adata.obs[column].notna(), None).tolist()
        assert got == expected, column
    assert adata.uns["synthbio"]["backend"] == "emulator"
    assert adata.uns["synthbio"]["values"] == "counts"
    assert adata.uns["synthbio"]["parts"] == 2


def test_h5ad_of_a_single_cell_pair_has_csr_x(tmp_path):
    anndata = pytest.importorskip("anndata")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    expression, metadata, counts = merged_pair(tmp_path, {"pbmc": 4, "gut": 2}, model_id="gem-1-sc", sparse=True)
    assert to_h5ad(expression, metadata, tmp_path / "sc.h5ad")["sparse"] is True
    adata = anndata.read_h5ad(tmp_path / "sc.h5ad")
    assert scipy_sparse.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.int32
    assert adata.X.has_canonical_format
    assert adata.X.nnz == np.count_nonzero(counts)
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert adata.uns["synthbio"]["backend"] == "emulator"


def test_h5ad_follows_the_anndata_on_disk_format(tmp_path):
    # Checked with h5py too, so the layout is asserted where anndata cannot be installed
    # (its releases for Python 3.11 require pandas < 3).
    expression, metadata, counts = merged_pair(tmp_path, {"pbmc": 3}, model_id="gem-1-sc", sparse=True, emulator=False)
    to_h5ad(expression, metadata, tmp_path / "sc.h5ad")
    with h5py.File(tmp_path / "sc.h5ad") as f:
        assert f.attrs["encoding-type"] == "anndata"
        x = f["X"]
        assert x.attrs["encoding-type"] == "csr_matrix" and tuple(x.attrs["shape"]) == counts.shape
        indptr, indices, data = x["indptr"][:], x["indices"][:], x["data"][:]
        dense = np.zeros(counts.shape, np.int64)
        for row in range(counts.shape[0]):
            dense[row, indices[indptr[row] : indptr[row + 1]]] = data[indptr[row] : indptr[row + 1]]
        np.testing.assert_array_equal(dense, counts)
        assert f["obs"].attrs["_index"] == "sample_id"
        assert [s.decode() for s in f["obs/sample_id"][:]] == ["pbmc_1", "pbmc_2", "pbmc_3"]
        assert [s.decode() for s in f["var/gene_id"][:]] == GENES
        backend = f["obs/backend"]
        assert backend.attrs["encoding-type"] == "categorical"
        assert [s.decode() for s in backend["categories"][:]] == ["synthesize"] and set(backend["codes"][:]) == {0}
        assert f["obs/seed"].attrs["encoding-type"] == "nullable-integer" and list(f["obs/seed/values"][:]) == [4] * 3
        assert f["uns/synthbio/backend"][()].decode() == "synthesize"
        # X is samples x genes here (the Parquet file's label says genes x samples).
        assert f["uns/synthbio/orientation"][()].decode() == "samples x genes" and f["X"].attrs["shape"][0] == 3


def test_sparse_can_be_forced_either_way(tmp_path):
    expression, metadata, counts = merged_pair(tmp_path, {"lung": 2})
    to_h5ad(expression, metadata, tmp_path / "sparse.h5ad", sparse=True)
    to_h5ad(expression, metadata, tmp_path / "dense.h5ad", sparse=False)
    with h5py.File(tmp_path / "sparse.h5ad") as f, h5py.File(tmp_path / "dense.h5ad") as g:
        assert f["X"].attrs["encoding-type"] == "csr_matrix" and f["X/data"].size == np.count_nonzero(counts)
        np.testing.assert_array_equal(g["X"][:], counts)


def test_h5ad_refuses_metadata_of_other_samples_and_leaves_no_file(tmp_path):
    expression, metadata, _ = merged_pair(tmp_path, {"lung": 2, "liver": 1})
    meta = pq.read_table(metadata)
    reordered = meta.take([1, 0, 2]).replace_schema_metadata(meta.schema.metadata)
    pq.write_table(reordered, tmp_path / "other.parquet")
    with pytest.raises(ExportError, match="other.parquet"):
        to_h5ad(expression, tmp_path / "other.parquet", tmp_path / "out" / "x.h5ad")
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_no_half_written_file(tmp_path, monkeypatch):
    expression, metadata, _ = merged_pair(tmp_path, {"lung": 2})
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.h5ad").write_bytes(b"previous")
    calls = {"n": 0}
    read_row_group = pq.ParquetFile.read_row_group

    def failing_read(self, group, *args, **kwargs):
        if group == 2 and any(p.suffix == ".part" for p in out.iterdir()):  # mid-write: part of it is on disk
            calls["n"] += 1
            raise OSError("disk full")
        return read_row_group(self, group, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", failing_read)
    for write in (
        lambda: to_h5ad(expression, metadata, out / "x.h5ad"),
        lambda: to_delimited(expression, out / "x.tsv"),
        lambda: to_log_cpm(expression, out / "x.parquet"),
    ):
        with pytest.raises(OSError, match="disk full"):
            write()
    assert calls["n"] == 3
    assert files_in(out) == ["x.h5ad"] and (out / "x.h5ad").read_bytes() == b"previous"  # the old file, untouched


# --- TSV / CSV ---------------------------------------------------------------------------


def test_tsv_count_matrix_reads_back_with_pandas(tmp_path):
    expression, _, counts = merged_pair(tmp_path, {"lung": 2, "liver": 3})
    summary = to_delimited(expression, tmp_path / "counts.tsv")
    assert summary["backend"] == "emulator" and summary["genes"] == len(GENES)
    # R reads the same file with read.delim("counts.tsv", row.names = 1, check.names = FALSE).
    frame = pd.read_csv(tmp_path / "counts.tsv", sep="\t", index_col=0)
    assert frame.index.name == "gene_id" and list(frame.index) == GENES
    assert list(frame.columns) == ["lung_1", "lung_2", "liver_1", "liver_2", "liver_3"]
    np.testing.assert_array_equal(frame.to_numpy(), counts.T)
    first = (tmp_path / "counts.tsv").read_text().splitlines()[0]
    assert first == "gene_id\tlung_1\tlung_2\tliver_1\tliver_2\tliver_3"  # no quotes, no comment line


def test_csv_and_gzip_follow_the_file_name(tmp_path):
    expression, _, counts = merged_pair(tmp_path, {"lung": 2})
    to_delimited(expression, tmp_path / "counts.csv.gz")
    frame = pd.read_csv(tmp_path / "counts.csv.gz", index_col=0)  # pandas infers gzip from the name
    np.testing.assert_array_equal(frame.to_numpy(), counts.T)
    assert files_in(tmp_path)[:1] == ["counts.csv.gz"]


HOSTILE_GENES = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\tTAB", "\rCR"]


def test_text_cells_a_spreadsheet_would_run_as_formulas_are_escaped(tmp_path):
    """Before: gene ids (the server's text) starting with = + - @ went into the TSV as they were."""
    genes = HOSTILE_GENES + GENES[len(HOSTILE_GENES) :]
    expression, _, counts = merged_pair(tmp_path, {"lung": 2}, genes=genes)
    to_delimited(expression, tmp_path / "counts.tsv")
    frame = pd.read_csv(tmp_path / "counts.tsv", sep="\t", index_col=0)
    assert list(frame.index[: len(HOSTILE_GENES)]) == ["'" + gene.replace("\r", "\\r") for gene in HOSTILE_GENES]
    assert list(frame.index[len(HOSTILE_GENES) :]) == GENES[len(HOSTILE_GENES) :]
    np.testing.assert_array_equal(frame.to_numpy(), counts.T)  # numbers are untouched
    cells = [cell.strip('"') for line in (tmp_path / "counts.tsv").read_text().split("\n") for cell in line.split("\t")]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]


@pytest.mark.parametrize(
    "value, escaped",
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-x", "'-x"),
        ("@a", "'@a"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        (-3, -3),
    ],
)
def test_escape_formula(value, escaped):
    assert escape_formula(value) == escaped


# --- log1p-CPM ---------------------------------------------------------------------------


def test_log_cpm_equals_log_cpm_of_the_whole_matrix(tmp_path):
    expression, _, counts = merged_pair(tmp_path, {"lung": 2, "liver": 3})
    to_log_cpm(expression, tmp_path / "log_cpm.parquet")
    table = pq.read_table(tmp_path / "log_cpm.parquet")
    assert table.column_names == pq.read_schema(expression).names
    assert all(field.type == pa.float32() for field in list(table.schema)[1:])
    assert pq.ParquetFile(tmp_path / "log_cpm.parquet").metadata.num_row_groups == 3
    label = json.loads(table.schema.metadata[SCHEMA_KEY])
    assert label["values"] == "log1p_cpm" and label["backend"] == "emulator"
    frame = pd.read_parquet(tmp_path / "log_cpm.parquet").set_index("gene_id")
    np.testing.assert_array_equal(frame.to_numpy().T, log_cpm(counts).astype(np.float32))


def test_log_cpm_of_a_sample_without_counts_is_zero(tmp_path):
    expression, metadata, _ = merged_pair(tmp_path, {"lung": 2})
    table = pq.read_table(expression)
    zeroed = table.set_column(1, "lung_1", pa.array(np.zeros(len(GENES), np.int32)))
    pq.write_table(zeroed, tmp_path / "zero.parquet", row_group_size=ROW_GROUP_GENES)
    to_log_cpm(tmp_path / "zero.parquet", tmp_path / "out.parquet")
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert (frame["lung_1"] == 0).all() and (frame["lung_2"] > 0).any()


def test_log_cpm_refuses_values_that_are_not_counts(tmp_path):
    expression, _, _ = merged_pair(tmp_path, {"lung": 2})
    to_log_cpm(expression, tmp_path / "once.parquet")
    with pytest.raises(ExportError, match="once.parquet.*needs counts"):
        to_log_cpm(tmp_path / "once.parquet", tmp_path / "twice.parquet")
    assert not (tmp_path / "twice.parquet").exists()


def test_a_file_without_the_label_is_named(tmp_path):
    pq.write_table(pa.table({"gene_id": ["g1"], "s": pa.array([1], pa.int32())}), tmp_path / "plain.parquet")
    with pytest.raises(ExportError, match="plain.parquet"):
        read_label(tmp_path / "plain.parquet")
