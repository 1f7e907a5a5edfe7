"""Per-condition Parquet parts, the streaming merge, and loading the pair aligned."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthbio_pipeline import log_cpm
from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.formats.parquet import (
    ROW_GROUP_GENES,
    SCHEMA_KEY,
    MergeError,
    PartTarget,
    load_expression,
    merge_parts,
    write_part,
)
from synthbio_pipeline.formats.parquet_footer import chunk_layout

GENES = [f"ENSG{i:011d}" for i in range(ROW_GROUP_GENES * 2 + 17)]  # three row groups, the last one short


def result_document(path, counts, metadata=None, emulator=True, genes=GENES):
    document = {
        "gene_order": genes,
        "model_version": "emulator-2" if emulator else 2,
        "outputs": [{"counts": row.tolist(), "metadata": metadata or {"sex": "male"}} for row in counts],
    }
    if emulator:
        document["emulator"] = {"note": "synthetic"}
    path.write_text(json.dumps(document))
    return path


def body(n, **options):
    return {
        "sampling_strategy": "sample generation",
        "inputs": [{"metadata": {"sex": "male"}, "num_samples": n}],
        **options,
    }


@pytest.fixture
def counts():
    return np.random.default_rng(0).integers(0, 5000, size=(3, len(GENES)))


def part(tmp_path, name, counts, as_counts=True, **kwargs):
    result = result_document(tmp_path / f"{name}.json", counts, **kwargs)
    expression, metadata = tmp_path / name / "expression.parquet", tmp_path / name / "metadata.parquet"
    summary = write_part(
        result,
        PartTarget(
            condition=name,
            model_id="gem-1-bulk",
            body=body(len(counts), seed=4),
            expression_out=expression,
            metadata_out=metadata,
            as_counts=as_counts,
        ),
        query_id=f"q-{name}",
    )
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
        write_part(
            result,
            PartTarget(
                condition="x",
                model_id="gem-1-bulk",
                body=body(3),
                expression_out=tmp_path / "out" / "e.parquet",
                metadata_out=tmp_path / "out" / "m.parquet",
            ),
            query_id="q",
        )
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_part_keeps_statistics_for_gene_id_only(tmp_path, counts):
    """Readers prune row groups by gene_id; per-sample min/max would only cost write time."""
    expression, _, _ = part(tmp_path, "lung", counts)
    footer = pq.ParquetFile(expression).metadata
    for g in range(footer.num_row_groups):
        group = footer.row_group(g)
        assert group.num_rows == min(ROW_GROUP_GENES, len(GENES) - g * ROW_GROUP_GENES)
        genes = group.column(0).statistics
        assert genes.has_min_max and genes.min == GENES[g * ROW_GROUP_GENES]
        assert all(group.column(j).statistics is None for j in range(1, group.num_columns))
    values, _ = load_expression(expression, genes=[GENES[5], GENES[-1]])
    np.testing.assert_array_equal(values.to_numpy(), counts[:, [5, -1]].T)


def test_sparse_single_cell_counts_write_the_same_part_as_dense_ones(tmp_path, counts):
    sparse = tmp_path / "sparse.json"
    outputs = [
        {"counts": {GENES[j]: int(row[j]) for j in np.flatnonzero(row % 7 == 0)}, "metadata": {"sex": "male"}}
        for row in counts
    ]
    sparse.write_text(json.dumps({"gene_order": GENES, "model_version": 2, "outputs": outputs}))
    expression = tmp_path / "s" / "expression.parquet"
    write_part(
        sparse,
        PartTarget(
            condition="s",
            model_id="gem-1-sc",
            body=body(3),
            expression_out=expression,
            metadata_out=tmp_path / "s" / "metadata.parquet",
        ),
        query_id="q",
    )
    values, _ = load_expression(expression, orientation="samples")
    np.testing.assert_array_equal(values.to_numpy(), np.where(counts % 7 == 0, counts, 0))


@pytest.mark.parametrize("where", ["counts", "structure"])
def test_an_error_mid_document_writes_nothing_and_ends_the_parse_thread(tmp_path, counts, where):
    good = [{"counts": row.tolist(), "metadata": {}} for row in counts]
    text = json.dumps({"gene_order": GENES, "outputs": good[:2]})[:-2]  # drop the closing "]}"
    text += ', {"counts": [1, -2, 3]}]}' if where == "counts" else ', {"counts": [1, 2'  # bad row / truncated
    result = tmp_path / "bad.json"
    result.write_text(text)
    out = tmp_path / "out"
    with pytest.raises(ResultError, match="output 2"):
        write_part(
            result,
            PartTarget(
                condition="x",
                model_id="gem-1-bulk",
                body=body(3),
                expression_out=out / "e.parquet",
                metadata_out=out / "m.parquet",
            ),
            query_id="q",
        )
    assert not out.exists() or list(out.iterdir()) == []
    assert not any(thread.name == "synthbio-parse" for thread in threading.enumerate())


def test_counts_out_of_range_stop_the_write_early(tmp_path, counts):
    """The consumer raising (not the parser) must not leave the parse thread blocked."""
    many = np.repeat(counts, 8, axis=0)
    many[1, 0] = -1
    result = result_document(tmp_path / "r.json", many)
    with pytest.raises(ResultError, match="output 1 has counts outside"):
        write_part(
            result,
            PartTarget(
                condition="x",
                model_id="gem-1-bulk",
                body=body(len(many)),
                expression_out=tmp_path / "o" / "e.parquet",
                metadata_out=tmp_path / "o" / "m.parquet",
            ),
            query_id="q",
        )
    assert not any(thread.name == "synthbio-parse" for thread in threading.enumerate())


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


def test_merge_copies_chunks_into_a_file_pandas_and_pyarrow_read_alike(tmp_path, counts):
    # Parts with 1, 3 and 2 samples: the merged file holds every value, labelled, with the parts' gene blocks.
    sizes = {"a": 1, "b": 3, "c": 2}
    parts = [part(tmp_path, name, counts[:n] + 7 * i) for i, (name, n) in enumerate(sizes.items())]
    merged_e, merged_m = tmp_path / "e.parquet", tmp_path / "m.parquet"
    merge_parts([p[0] for p in parts], [p[1] for p in parts], merged_e, merged_m)
    footer = pq.read_metadata(merged_e)
    assert footer.num_row_groups == 3 and footer.num_rows == len(GENES)
    assert [footer.row_group(g).num_rows for g in range(3)] == [ROW_GROUP_GENES, ROW_GROUP_GENES, 17]
    table = pq.read_table(merged_e)
    assert table.column_names == ["gene_id", "a_1", "b_1", "b_2", "b_3", "c_1", "c_2"]
    assert str(table.schema.field("b_2").type) == "int32" and not table.schema.field("b_2").nullable
    assert json.loads(table.schema.metadata[SCHEMA_KEY])["parts"] == 3
    frame = pd.read_parquet(merged_e)
    assert frame["gene_id"].tolist() == GENES
    np.testing.assert_array_equal(frame["b_3"].to_numpy(), counts[2] + 7)
    np.testing.assert_array_equal(frame["c_2"].to_numpy(), counts[1] + 14)
    # Row-group statistics on gene_id are written, so a gene filter reads matching rows only.
    filtered = pq.read_table(merged_e, columns=["gene_id", "c_1"], filters=[("gene_id", "in", [GENES[-1]])])
    assert filtered.column("c_1").to_pylist() == [counts[0, -1] + 14]


def test_merge_checks_genes_of_every_gene_block(tmp_path, counts):
    # Only the last (short) gene block differs: still refused.
    a = part(tmp_path, "a", counts)
    b = part(tmp_path, "b", counts, genes=[*GENES[:-1], "ENSG99999999999"])
    with pytest.raises(MergeError, match="other genes"):
        merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert not (tmp_path / "e.parquet").exists()


def test_merge_reencodes_parts_whose_gene_blocks_differ(tmp_path, counts):
    # A part written with other row groups cannot be copied chunk by chunk; the merge still works.
    a = part(tmp_path, "a", counts)
    b = part(tmp_path, "b", counts + 1)
    other = tmp_path / "b_other.parquet"
    pq.write_table(pq.read_table(b[0]), other, row_group_size=1000)
    merge_parts([a[0], other], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert pq.read_metadata(tmp_path / "e.parquet").num_row_groups == 3
    expression, _ = load_expression(tmp_path / "e.parquet", orientation="samples")
    np.testing.assert_array_equal(expression.loc["b_2"].to_numpy(), counts[1] + 1)


def test_log_cpm_parts_merge_by_copy(tmp_path, counts):
    a = part(tmp_path, "a", counts, as_counts=False)
    b = part(tmp_path, "b", counts[:2], as_counts=False)
    merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert str(table.schema.field("b_2").type) == "float"
    np.testing.assert_array_equal(table.column("b_2").to_numpy(), pq.read_table(b[0]).column("b_2").to_numpy())


def test_load_slices_read_only_what_they_name(tmp_path, counts):
    a = part(tmp_path, "a", counts)
    b = part(tmp_path, "b", counts + 5)
    merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    wanted = [GENES[-1], GENES[3]]  # file order comes back: GENES[3] first
    both, meta = load_expression(tmp_path / "e.parquet", tmp_path / "m.parquet", genes=wanted, samples=["b_3", "a_1"])
    assert list(both.index) == [GENES[3], GENES[-1]] and list(both.columns) == ["b_3", "a_1"]
    assert both.loc[GENES[-1], "b_3"] == counts[2, -1] + 5 and list(meta.index) == ["b_3", "a_1"]
    with pytest.raises(KeyError, match="no genes ENSG_NOT_THERE;"):
        load_expression(tmp_path / "e.parquet", genes=[GENES[3], "ENSG_NOT_THERE"])
    with pytest.raises(KeyError, match="z_9"):
        load_expression(tmp_path / "e.parquet", samples=["z_9"])


def _pandas_metadata_frame(ids, condition, body, model_version, keys_values):
    """The metadata frame write_part built with pandas before the write path dropped pandas."""
    frame = pd.DataFrame(
        {
            "sample_id": ids,
            "condition": condition,
            "backend": "emulator",
            "model_id": "gem-1-bulk",
            "model_version": model_version,
            "query_id": f"q-{condition}",
            "sampling_strategy": body.get("sampling_strategy"),
            "num_samples": len(ids),
            "seed": pd.array([body.get("seed")] * len(ids), dtype="Int64"),
            "total_count": pd.array([body.get("total_count")] * len(ids), dtype="Int64"),
            "deterministic_latents": pd.array([body.get("deterministic_latents")] * len(ids), dtype="boolean"),
        }
    )
    for key, values in keys_values.items():
        frame[key] = pd.array(values, dtype="string")
    return frame


@pytest.mark.parametrize(
    "options", [{"seed": 4}, {"total_count": 10_000_000, "deterministic_latents": True, "sampling_strategy": None}]
)
def test_metadata_part_reads_back_as_the_frame_pandas_would_have_written(tmp_path, counts, options):
    """Built with pyarrow, read back by pandas with today's dtypes: str, string, Int64, boolean."""
    result = result_document(tmp_path / "r.json", counts, emulator=True)
    document = json.loads(result.read_text())
    for i, output in enumerate(document["outputs"]):
        output["metadata"] = {"sex": "male", "age_years": 30 + i} if i != 1 else {"sex": None}
    result.write_text(json.dumps(document))
    request = {**body(3), **options}
    write_part(
        result,
        PartTarget(
            condition="lung",
            model_id="gem-1-bulk",
            body=request,
            expression_out=tmp_path / "e.parquet",
            metadata_out=tmp_path / "m.parquet",
        ),
        query_id="q-lung",
    )
    expected = _pandas_metadata_frame(
        ["lung_1", "lung_2", "lung_3"],
        "lung",
        request,
        "emulator-2",
        {"age_years": ["30", None, "32"], "sex": ["male", None, "male"]},
    )
    ours = pd.read_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(ours, expected)
    assert str(ours["seed"].dtype) == "Int64" and str(ours["deterministic_latents"].dtype) == "boolean"
    assert ours["sex"].dtype == pd.StringDtype() and ours["age_years"].isna().tolist() == [False, True, False]
    assert ours["sex"].tolist() == ["male", pd.NA, "male"]  # a null key value stays null, not the requested one
    expected.to_parquet(tmp_path / "pandas.parquet")
    assert pq.read_schema(tmp_path / "m.parquet").equals(pq.read_schema(tmp_path / "pandas.parquet"))


def test_a_missing_model_version_is_an_all_null_column_as_before(tmp_path, counts):
    result = result_document(tmp_path / "r.json", counts)
    document = json.loads(result.read_text())
    del document["model_version"]
    result.write_text(json.dumps(document))
    write_part(
        result,
        PartTarget(
            condition="x",
            model_id="gem-1-bulk",
            body=body(3, seed=1),
            expression_out=tmp_path / "e.parquet",
            metadata_out=tmp_path / "m.parquet",
        ),
        query_id="q-x",
    )
    expected = _pandas_metadata_frame(["x_1", "x_2", "x_3"], "x", body(3, seed=1), None, {"sex": ["male"] * 3})
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), expected)


def test_parts_wider_than_a_tile_are_stitched_into_one_row_group_per_gene_block(tmp_path, monkeypatch):
    """write_part has pyarrow encode TILE_SAMPLES samples at a time and copies the chunks: the part
    must read as one file with the gene blocks as row groups, and merge by copy (no re-encode)."""
    from synthbio_pipeline.formats import parquet as tables

    monkeypatch.setattr(tables, "TILE_SAMPLES", 2)
    wide = np.random.default_rng(1).integers(0, 5000, size=(5, len(GENES)))
    expression, metadata, _ = part(tmp_path, "wide", wide)
    footer = pq.ParquetFile(expression).metadata
    assert footer.num_columns == 6 and [footer.row_group(g).num_rows for g in range(3)] == [2048, 2048, 17]
    table = pq.read_table(expression)
    assert table.column_names == ["gene_id"] + [f"wide_{i}" for i in range(1, 6)]
    assert table.column("gene_id").to_pylist() == GENES and not table.schema.field("wide_1").nullable
    np.testing.assert_array_equal(np.stack([table.column(f"wide_{i}").to_numpy() for i in range(1, 6)]), wide)
    assert json.loads(table.schema.metadata[SCHEMA_KEY])["model_id"] == "gem-1-bulk"
    values, _ = load_expression(expression, genes=[GENES[3000]], samples=["wide_4"])
    assert values.to_numpy().tolist() == [[wide[3, 3000]]]
    other = part(tmp_path, "other", wide[:3])
    schema = tables.expression_schema(["wide_1", "other_1"], tables.pa.int32(), {})
    assert chunk_layout([expression, other[0]], schema) is not None  # merge_parts copies, no re-encode
    merged = merge_parts([expression, other[0]], [metadata, other[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert merged["samples"] == 8
    values, _ = load_expression(tmp_path / "e.parquet", orientation="samples")
    np.testing.assert_array_equal(values.to_numpy(), np.vstack([wide, wide[:3]]))


def test_merged_metadata_keeps_the_string_dtype_of_keys_only_later_parts_have(tmp_path, counts):
    first = part(tmp_path, "a", counts)
    second = part(tmp_path, "b", counts, metadata={"sex": "male", "cell_type": "T"})
    merge_parts([first[0], second[0]], [first[1], second[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    merged = pd.read_parquet(tmp_path / "m.parquet")
    assert merged["cell_type"].dtype == pd.StringDtype() and merged["sex"].dtype == pd.StringDtype()
    assert merged["cell_type"].isna().tolist() == [True] * 3 + [False] * 3
    assert str(merged["seed"].dtype) == "Int64" and list(merged.sample_id) == [f"a_{i}" for i in (1, 2, 3)] + [
        f"b_{i}" for i in (1, 2, 3)
    ]


def test_writing_and_merging_parts_never_imports_pandas(tmp_path, counts):
    """pandas costs ~45 MB RSS; the workflow's write and merge steps must not pay for it."""
    import subprocess
    import sys

    result = result_document(tmp_path / "r.json", counts)
    script = f"""
import sys
import synthbio_pipeline, synthbio_pipeline.pipeline.runner
from synthbio_pipeline.formats.parquet import PartTarget, merge_parts, write_part
assert "pandas" not in sys.modules, "imported by the package"
target = PartTarget(condition="x", model_id="gem-1-bulk", body={body(3, seed=1)!r},
                    expression_out={str(tmp_path / "e.parquet")!r}, metadata_out={str(tmp_path / "m.parquet")!r})
write_part({str(result)!r}, target, query_id="q")
merge_parts([{str(tmp_path / "e.parquet")!r}], [{str(tmp_path / "m.parquet")!r}],
            {str(tmp_path / "E.parquet")!r}, {str(tmp_path / "M.parquet")!r})
assert "pandas" not in sys.modules, "imported by write_part or merge_parts"
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert list(pd.read_parquet(tmp_path / "M.parquet").sample_id) == ["x_1", "x_2", "x_3"]


def test_outputs_get_the_mode_of_any_new_file_not_a_private_one(tmp_path):
    """atomic_path's temporary file is private (mkstemp); the output it becomes is not."""
    import stat

    from synthbio_pipeline.files import atomic_path

    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_path(tmp_path / "out.txt") as temporary:
        temporary.write_text("x")
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~mask


# --- provenance and atomic pairs (issue 12) ---------------------------------------------------

FORGED = {
    "sex": "male",
    "sample_id": "forged_1",
    "condition": "forged",
    "backend": "synthesize",
    "model_id": "gem-9",
    "seed": "12345",
    "query_id": "q-forged",
    "server_condition": "also there",
}


def test_server_metadata_never_overrides_the_pipelines_own_columns(tmp_path, counts):
    """Before: condition, backend, model_id and seed from the server replaced ours in the metadata."""
    expression, metadata, summary = part(tmp_path, "a", counts, metadata=FORGED)
    rows = pd.read_parquet(metadata)
    label = json.loads(pq.read_schema(metadata).metadata[SCHEMA_KEY])
    assert list(rows.sample_id) == ["a_1", "a_2", "a_3"]
    assert set(rows.condition) == {"a"} and set(rows.backend) == {"emulator"} == {label["backend"]}
    assert set(rows.model_id) == {"gem-1-bulk"} == {label["model_id"]} and set(rows.seed) == {4}
    assert set(rows.query_id) == {"q-a"}
    # The server's values are kept, under a name that says whose they are.
    assert set(rows.server_condition) == {"forged"} and set(rows.server_backend) == {"synthesize"}
    assert set(rows.server_model_id) == {"gem-9"} and set(rows.server_seed) == {"12345"}
    assert set(rows.server_sample_id) == {"forged_1"} and set(rows.server_server_condition) == {"also there"}

    b = part(tmp_path, "b", counts)
    merge_parts([expression, b[0]], [metadata, b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    _, merged = load_expression(tmp_path / "e.parquet", tmp_path / "m.parquet")
    merged_label = json.loads(pq.read_schema(tmp_path / "m.parquet").metadata[SCHEMA_KEY])
    assert set(merged.backend) == {"emulator"} == {merged_label["backend"]}
    assert list(merged.condition) == ["a"] * 3 + ["b"] * 3


def test_metadata_rows_that_contradict_their_label_are_refused_at_merge(tmp_path, counts):
    a, b = part(tmp_path, "a", counts), part(tmp_path, "b", counts)
    table = pq.read_table(b[1])
    forged = table.set_column(table.column_names.index("backend"), "backend", pa.array(["synthesize"] * 3))
    pq.write_table(forged.replace_schema_metadata(table.schema.metadata), b[1])
    with pytest.raises(MergeError, match="provenance must agree"):
        merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    assert not (tmp_path / "e.parquet").exists() and not (tmp_path / "m.parquet").exists()


def _two_pairs(tmp_path, counts):
    """Parts of the same conditions from two runs (other values), and the first run merged."""
    old = [part(tmp_path / "old", name, counts) for name in "ab"]
    new = [part(tmp_path / "new", name, counts + 7) for name in "ab"]
    out_e, out_m = tmp_path / "e.parquet", tmp_path / "m.parquet"
    merge_parts([p[0] for p in old], [p[1] for p in old], out_e, out_m)
    return new, out_e, out_m


@pytest.fixture
def counts_in_dirs(tmp_path, counts):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    return counts


def test_a_merge_killed_between_its_two_renames_is_refused_when_read(tmp_path, counts_in_dirs, monkeypatch):
    """Before: a kill between the renames left new expression beside old metadata, read as one pair."""
    new, out_e, out_m = _two_pairs(tmp_path, counts_in_dirs)
    load_expression(out_e, out_m)  # the first pair reads fine
    real_replace, finals = os.replace, []

    def killed_between(source, destination):
        if os.fspath(destination) in (os.fspath(out_e), os.fspath(out_m)):
            finals.append(destination)
            if len(finals) == 2:
                raise KeyboardInterrupt("killed between the two renames")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", killed_between)
    with pytest.raises(KeyboardInterrupt):
        merge_parts([p[0] for p in new], [p[1] for p in new], out_e, out_m)
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(MergeError, match="not one pair"):
        load_expression(out_e, out_m)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_merge_that_fails_before_both_files_are_ready_leaves_the_old_pair_whole(
    tmp_path, counts_in_dirs, monkeypatch
):
    import synthbio_pipeline.formats.parquet as parquet

    new, out_e, out_m = _two_pairs(tmp_path, counts_in_dirs)
    before_e, before_m = load_expression(out_e, out_m)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(parquet, "_merge_metadata", broken)
    with pytest.raises(OSError):
        merge_parts([p[0] for p in new], [p[1] for p in new], out_e, out_m)
    after_e, after_m = load_expression(out_e, out_m)
    pd.testing.assert_frame_equal(before_e, after_e)
    pd.testing.assert_frame_equal(before_m, after_m)


def test_both_files_of_a_pair_share_a_run_id(tmp_path, counts):
    a, b = part(tmp_path, "a", counts), part(tmp_path, "b", counts)
    ids = {json.loads(pq.read_schema(path).metadata[SCHEMA_KEY])["run_id"] for path in a[:2]}
    assert len(ids) == 1
    merge_parts([a[0], b[0]], [a[1], b[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    merged = {
        json.loads(pq.read_schema(tmp_path / n).metadata[SCHEMA_KEY])["run_id"] for n in ("e.parquet", "m.parquet")
    }
    assert len(merged) == 1 and merged != ids
    with pytest.raises(MergeError, match="not one pair"):
        load_expression(tmp_path / "e.parquet", a[1])
