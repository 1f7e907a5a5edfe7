"""Per-condition Parquet parts, the streaming merge, and loading the pair aligned."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthbio_pipeline import log_cpm
from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.tables import (
    ROW_GROUP_GENES,
    SCHEMA_KEY,
    MergeError,
    load_expression,
    merge_parts,
    write_part,
)

GENES = [f"ENSG{i:011d}" for i in range(ROW_GROUP_GENES * 2 + 17)]  # three row groups, the last one short


def result_document(path, counts, metadata=None, emulator=True, genes=GENES):
    document = {"gene_order": genes, "model_version": "emulator-2" if emulator else 2,
                "outputs": [{"counts": row.tolist(), "metadata": metadata or {"sex": "male"}} for row in counts]}
    if emulator:
        document["emulator"] = {"note": "synthetic"}
    path.write_text(json.dumps(document))
    return path


def body(n, **options):
    return {"sampling_strategy": "sample generation", "inputs": [{"metadata": {"sex": "male"}, "num_samples": n}],
            **options}


@pytest.fixture
def counts():
    return np.random.default_rng(0).integers(0, 5000, size=(3, len(GENES)))


def part(tmp_path, name, counts, as_counts=True, **kwargs):
    result = result_document(tmp_path / f"{name}.json", counts, **kwargs)
    expression, metadata = tmp_path / name / "expression.parquet", tmp_path / name / "metadata.parquet"
    summary = write_part(result, condition=name, model_id="gem-1-bulk", query_id=f"q-{name}",
                         body=body(len(counts), seed=4), expression_out=expression, metadata_out=metadata,
                         as_counts=as_counts)
    return expression, metadata, summary


def test_a_part_holds_genes_as_rows_and_one_column_per_sample(tmp_path, counts):
    expression, metadata, summary = part(tmp_path, "lung", counts)
    table = pq.read_table(expression)
    assert table.column_names == ["gene_id", "lung_1", "lung_2", "lung_3"]
    assert table.column("gene_id").to_pylist() == GENES
    assert str(table.schema.field("lung_1").type) == "int32"
    np.testing.assert_array_equal(np.stack([table.column(f"lung_{i}").to_numpy() for i in (1, 2, 3)]), counts)
    assert pq.ParquetFile(expression).metadata.num_row_groups == 3
    assert json.loads(table.schema.metadata[SCHEMA_KEY])["backend"] == "emulator"
    meta = pd.read_parquet(metadata)
    assert list(meta.sample_id) == ["lung_1", "lung_2", "lung_3"]
    assert set(meta.backend) == {"emulator"} and set(meta.query_id) == {"q-lung"} and set(meta.seed) == {4}
    assert summary["samples"] == 3 and summary["backend"] == "emulator"
    assert sorted(p.name for p in (tmp_path / "lung").iterdir()) == ["expression.parquet", "metadata.parquet"]


def test_data_from_the_real_service_is_labelled_synthesize(tmp_path, counts):
    _, metadata, _ = part(tmp_path, "x", counts, emulator=False)
    assert set(pd.read_parquet(metadata).backend) == {"synthesize"}


def test_log_cpm_parts(tmp_path, counts):
    expression, _, _ = part(tmp_path, "x", counts, as_counts=False)
    values, _ = load_expression(expression, orientation="samples")
    np.testing.assert_allclose(values.to_numpy(), log_cpm(counts), rtol=1e-6)


def test_a_result_with_fewer_samples_than_asked_writes_nothing(tmp_path, counts):
    result = result_document(tmp_path / "r.json", counts[:2])
    with pytest.raises(ResultError):
        write_part(result, condition="x", model_id="gem-1-bulk", query_id="q", body=body(3),
                   expression_out=tmp_path / "out" / "e.parquet", metadata_out=tmp_path / "out" / "m.parquet")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_merge_keeps_order_and_aligns_metadata(tmp_path, counts):
    parts = [part(tmp_path, name, counts + offset) for offset, name in enumerate(["a", "b", "c"])]
    merged_e, merged_m = tmp_path / "e.parquet", tmp_path / "m.parquet"
    summary = merge_parts([p[0] for p in parts], [p[1] for p in parts], merged_e, merged_m)
    assert summary == {"samples": 9, "parts": 3, "backend": "emulator"}
    expression, metadata = load_expression(merged_e, merged_m, orientation="samples")
    assert list(expression.index) == [f"{c}_{i}" for c in "abc" for i in (1, 2, 3)]
    assert list(metadata.index) == list(expression.index)
    assert list(expression.columns) == GENES
    np.testing.assert_array_equal(expression.loc["b_2"].to_numpy(), counts[1] + 1)
    genes_first, _ = load_expression(merged_e, orientation="genes")
    assert genes_first.shape == (len(GENES), 9)


def test_load_a_subset_of_genes_and_samples(tmp_path, counts):
    expression, metadata, _ = part(tmp_path, "a", counts)
    wanted = [GENES[5], GENES[ROW_GROUP_GENES + 3]]
    subset, meta = load_expression(expression, metadata, genes=wanted, samples=["a_3", "a_1"])
    assert list(subset.index) == wanted and list(subset.columns) == ["a_3", "a_1"]
    assert list(meta.index) == ["a_3", "a_1"]
    assert subset.loc[wanted[1], "a_3"] == counts[2, ROW_GROUP_GENES + 3]


def test_merge_refuses_parts_with_other_genes(tmp_path, counts):
    a = part(tmp_path, "a", counts)
    b = part(tmp_path, "b", counts, genes=["ENSG99999999999", *GENES[1:]])
    with pytest.raises(MergeError, match="other genes"):
        merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert not (tmp_path / "e.parquet").exists()


def test_merge_refuses_repeated_samples_and_mixed_value_kinds(tmp_path, counts):
    a = part(tmp_path, "a", counts)
    with pytest.raises(MergeError, match="more than one part"):
        merge_parts([a[0], a[0]], [a[1], a[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    b = part(tmp_path, "b", counts, as_counts=False)
    with pytest.raises(MergeError, match="different kinds"):
        merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")


def test_orientation_must_be_named_right(tmp_path, counts):
    expression, _, _ = part(tmp_path, "a", counts)
    with pytest.raises(ValueError):
        load_expression(expression, orientation="cells")


def test_a_single_part_merges_to_the_same_table(tmp_path, counts):
    expression, metadata, _ = part(tmp_path, "only", counts)
    merge_parts([expression], [metadata], tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert pq.read_table(tmp_path / "e.parquet").equals(pq.read_table(expression))
    merged, meta = load_expression(tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert list(meta.index) == list(merged.columns) == ["only_1", "only_2", "only_3"]
