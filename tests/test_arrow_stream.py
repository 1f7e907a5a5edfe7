"""Self-hosted Arrow streams: the vendor client's DataFrames, and the same Parquet parts as JSON.

Streams are built here the way a model container writes them (pyarrow's IPC stream writer,
schema metadata ``gene_order``/``request_type``/``model_version``), and read by
:mod:`synthbio_pipeline.formats.arrow_stream` and by pysynthbio 4.2.4's ``arrow_transformers``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pysynthbio.arrow_transformers import transform_arrow_stream

from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.formats.arrow_stream import arrow_to_frames, open_arrow_result, write_arrow_part
from synthbio_pipeline.formats.parquet import SCHEMA_KEY, PartTarget, write_part
from synthbio_pipeline.formats.result_json import log_cpm

GENES = ["ENSG00000141510", "ENSG00000111640", "ENSG00000084674"]


def stream(batches: list[pa.RecordBatch], metadata: dict[str, str], schema: pa.Schema | None = None) -> bytes:
    schema = (schema or batches[0].schema).with_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch.replace_schema_metadata(schema.metadata))
    return sink.getvalue().to_pybytes()


def expression_meta(genes=GENES, request_type="baseline") -> dict[str, str]:
    return {"model_version": "2.2", "request_type": request_type, "gene_order": json.dumps(genes)}


def baseline_batches(counts_type=None, latents=True, rows_per_batch=(2, 1)) -> list[pa.RecordBatch]:
    counts_type = counts_type or pa.int64()
    big = 60_000 if counts_type == pa.uint16() else 16777217  # kept exactly
    rows = [
        {"counts": [1, 2, 3], "metadata": {"tissue_ontology_id": "UBERON:0002107", "sex": "male"}},
        {"counts": [4, 5, big], "metadata": {"tissue_ontology_id": "UBERON:0002107", "sex": "female"}},
        {"counts": [0, 0, 7], "metadata": {"tissue_ontology_id": "UBERON:0000955", "sex": None}},
    ]
    if latents:
        for i, row in enumerate(rows):
            row.update(biological_latent=[0.1 * i, 0.2], technical_latent=[0.3], perturbation_latent=[])
    fields = [
        pa.field("counts", pa.list_(counts_type)),
        pa.field("metadata", pa.struct([("tissue_ontology_id", pa.string()), ("sex", pa.string())])),
    ]
    if latents:
        fields += [pa.field(name, pa.list_(pa.float64())) for name in LATENTS]
    schema = pa.schema(fields)
    batches, start = [], 0
    for size in rows_per_batch:
        batches.append(pa.RecordBatch.from_pylist(rows[start : start + size], schema=schema))
        start += size
    return batches


LATENTS = ("biological_latent", "technical_latent", "perturbation_latent")


def predict_metadata_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [
            {
                "classifier_probs": {"sex": {"male": 0.9, "female": 0.1}},
                "latents": {"biological": [0.1], "technical": [0.2], "perturbation": []},
                "metadata": {"sex": "male"},
                "decoder_sample": {"counts": [1, 2, 3]},
            },
            {
                "classifier_probs": {"sex": {"male": 0.2, "female": 0.8}},
                "latents": {"biological": [0.3], "technical": [0.4], "perturbation": [0.5]},
                "metadata": {"sex": "female"},
                "decoder_sample": {"counts": [4, 5, 6]},
            },
        ]
    )


def assert_same_frames(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for key in theirs:
        pd.testing.assert_frame_equal(ours[key], theirs[key])


class Trickle(io.RawIOBase):
    """A non-seekable socket-like body that hands out a few bytes per read."""

    def __init__(self, data: bytes, step: int = 7):
        self._data, self._at, self._step = data, 0, step

    def readable(self):
        return True

    def read(self, size=-1):
        size = self._step if size is None or size < 0 else min(size, self._step)
        chunk = self._data[self._at : self._at + size]
        self._at += len(chunk)
        return chunk


# --- the vendor's DataFrames ---------------------------------------------------------------


@pytest.mark.parametrize("counts_type", [pa.int64(), pa.int32(), pa.uint16(), pa.float64()])
@pytest.mark.parametrize("latents", [True, False])
def test_expression_streams_give_the_vendors_frames(counts_type, latents):
    data = stream(baseline_batches(counts_type, latents), expression_meta())
    theirs = transform_arrow_stream(data)
    ours = arrow_to_frames(data)
    assert_same_frames(ours, theirs)
    assert ours["expression"].dtypes.unique().tolist() == [np.dtype(np.int64)]
    assert list(ours["expression"].columns) == GENES
    assert_same_frames(arrow_to_frames(Trickle(data)), theirs)  # off a socket, a few bytes at a time


def test_a_float_stream_is_truncated_like_the_json_path():
    batch = pa.RecordBatch.from_arrays(
        [pa.array([[1.9, 2.0, 0.2]], pa.list_(pa.float32())), pa.array([{"sex": "male"}])], ["counts", "metadata"]
    )
    data = stream([batch], expression_meta())
    assert arrow_to_frames(data)["expression"].iloc[0].tolist() == [1, 2, 0]
    assert_same_frames(arrow_to_frames(data), transform_arrow_stream(data))


def test_predict_metadata_stream_without_gene_order_gives_the_vendors_frames():
    data = stream([predict_metadata_batch()], {"model_version": "2.2", "request_type": "predict_metadata"})
    ours = arrow_to_frames(Trickle(data, 64))
    assert_same_frames(ours, transform_arrow_stream(data))
    assert list(ours) == ["metadata", "latents", "classifier_probs", "expression"]
    assert ours["expression"].shape == (2, 3) and ours["classifier_probs"].iloc[1, 0] == {"male": 0.2, "female": 0.8}


def test_other_layouts_and_empty_streams_match_too():
    for data in (
        stream(baseline_batches(pa.int64()), expression_meta(request_type="reference_conditioning")),
        stream(baseline_batches(), {"model_version": "2.2"}),  # no request_type, no gene_order
        stream([], expression_meta(), schema=baseline_batches()[0].schema),  # no batch at all
        stream([], {"request_type": "baseline"}, schema=baseline_batches(latents=False)[0].schema),
    ):
        assert_same_frames(arrow_to_frames(data), transform_arrow_stream(data))
    fixed = pa.RecordBatch.from_arrays(
        [pa.array([[1, 2, 3]], pa.list_(pa.int64(), 3)), pa.array([{"sex": "male"}])], ["counts", "metadata"]
    )
    data = stream([fixed], expression_meta())
    assert_same_frames(arrow_to_frames(data), transform_arrow_stream(data))


def test_log_cpm_instead_of_counts():
    data = stream(baseline_batches(), expression_meta())
    counts = arrow_to_frames(data)["expression"]
    pd.testing.assert_frame_equal(arrow_to_frames(data, as_counts=False)["expression"], log_cpm(counts))


def test_a_null_metadata_row_keeps_every_frame_aligned():
    batch = pa.RecordBatch.from_arrays(
        [pa.array([[1, 2, 3], [4, 5, 6]], pa.list_(pa.int64())), pa.array([None, {"sex": "f"}])],
        ["counts", "metadata"],
    )
    frames = arrow_to_frames(stream([batch], expression_meta()))
    assert frames["metadata"].shape == (2, 1) and frames["metadata"]["sex"].isna().tolist() == [True, False]


# --- what is refused -------------------------------------------------------------------------


def bad_counts(values, kind=None) -> bytes:
    kind = kind or pa.list_(pa.int64())
    batch = pa.RecordBatch.from_arrays(
        [pa.array(values, kind), pa.array([{"sex": "m"}] * len(values))], ["counts", "metadata"]
    )
    return stream([batch], expression_meta())


@pytest.mark.parametrize(
    "data, message",
    [
        (bad_counts([[1, 2, 3], [1, 2]]), r"sample 1 has 2 counts in the Arrow stream, 3 expected"),
        (bad_counts([[1, 2, 3], None]), r"sample 1 has null counts"),
        (bad_counts([[1, None, 3]]), r"hold null values"),
        (bad_counts([[1.0, float("nan"), 3.0]], pa.list_(pa.float64())), r"not a finite number"),
        (bad_counts([[1, 2, 2**64 - 1]], pa.list_(pa.uint64())), r"outside the int64 range"),
        (bad_counts([["a", "b", "c"]], pa.list_(pa.string())), r"not numbers"),
        (stream(baseline_batches(), expression_meta())[:-8], r"without its end-of-stream marker"),
        (stream(baseline_batches(), expression_meta())[:-100], r"malformed or cut short after 2 samples"),
        (b'{"outputs": []}', r"not an Arrow IPC stream"),
        (stream(baseline_batches(), {"gene_order": "ENSG1,ENSG2"}), r"gene_order is not a JSON list"),
    ],
)
def test_malformed_streams_raise_result_errors(data, message):
    with pytest.raises(ResultError, match=message):
        arrow_to_frames(data)
    with pytest.raises(ResultError, match=message):
        arrow_to_frames(Trickle(data, 5))


def test_a_stream_without_counts_column_is_named():
    batch = pa.RecordBatch.from_pylist([{"metadata": {"sex": "male"}}])
    with pytest.raises(ResultError, match="no 'counts' column"):
        arrow_to_frames(stream([batch], expression_meta()))


def test_a_stream_is_read_once():
    result = open_arrow_result(stream(baseline_batches(), expression_meta()))
    assert sum(batch.num_rows for batch in result.batches()) == 3
    with pytest.raises(ResultError, match="already read"):
        next(result.batches())


# --- Parquet parts: the same files as from the JSON result ---------------------------------


def generated(n_samples: int, n_genes: int, seed: int = 3) -> tuple[np.ndarray, list[dict], list[str]]:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.6, 40, n_genes), size=(n_samples, n_genes)).astype(np.int64)
    metadata = [{"sex": ("male", "female")[i % 2], "age_years": 30 + i % 7} for i in range(n_samples)]
    return counts, metadata, [f"ENSG{i:011d}" for i in range(n_genes)]


def as_stream(counts, metadata, genes, batch_rows=100, model_version="emulator-2") -> bytes:
    schema = pa.schema(
        [("counts", pa.list_(pa.int64())), ("metadata", pa.struct([("sex", pa.string()), ("age_years", pa.int64())]))]
    )
    schema = schema.with_metadata({b"gene_order": json.dumps(genes).encode(), b"model_version": model_version.encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(counts), batch_rows):
            block = counts[start : start + batch_rows]
            offsets = pa.array(np.arange(0, block.size + 1, block.shape[1], dtype=np.int32))
            lists = pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))
            structs = pa.array(metadata[start : start + batch_rows], schema.field("metadata").type)
            writer.write_batch(pa.RecordBatch.from_arrays([lists, structs], schema=schema))
    return sink.getvalue().to_pybytes()


def as_json(counts, metadata, genes, model_version="emulator-2") -> bytes:
    outputs = [{"counts": row.tolist(), "metadata": meta} for row, meta in zip(counts, metadata)]
    return json.dumps({"gene_order": genes, "model_version": model_version, "outputs": outputs}).encode()


def label(path) -> dict:
    found = json.loads(pq.read_schema(path).metadata[SCHEMA_KEY])
    found.pop("run_id", None)  # a fresh id per written pair
    return found


@pytest.mark.parametrize("as_counts", [True, False])
def test_an_arrow_part_is_the_json_part_of_the_same_samples(tmp_path, as_counts):
    counts, metadata, genes = generated(600, 3000)  # two tiles of samples, two gene blocks
    body = {
        "inputs": [{"metadata": {"sex": "male"}, "num_samples": 600}],
        "seed": 5,
        "sampling_strategy": "mean estimation",
    }
    common = {"condition": "c1", "model_id": "gem-1-bulk", "body": body, "as_counts": as_counts}
    (tmp_path / "result.json").write_bytes(as_json(counts, metadata, genes))
    json_target = PartTarget(expression_out=tmp_path / "je.parquet", metadata_out=tmp_path / "jm.parquet", **common)
    json_info = write_part(tmp_path / "result.json", json_target, query_id="q-1")
    arrow_target = PartTarget(expression_out=tmp_path / "ae.parquet", metadata_out=tmp_path / "am.parquet", **common)
    arrow_info = write_arrow_part(Trickle(as_stream(counts, metadata, genes), 1 << 16), arrow_target, query_id="q-1")
    assert arrow_info == json_info and arrow_info["samples"] == 600 and arrow_info["backend"] == "emulator"
    for ours, reference in (("ae", "je"), ("am", "jm")):
        a, j = (pq.read_table(tmp_path / f"{name}.parquet") for name in (ours, reference))
        assert a.schema.remove_metadata() == j.schema.remove_metadata()
        assert a.equals(j), ours
        assert label(tmp_path / f"{ours}.parquet") == label(tmp_path / f"{reference}.parquet")
    expression = pq.read_table(tmp_path / "ae.parquet")
    assert pq.ParquetFile(tmp_path / "ae.parquet").num_row_groups == 2
    if as_counts:
        assert expression.column("c1_600").to_numpy().tolist() == counts[599].tolist()


def test_an_arrow_part_with_other_than_the_expected_samples_is_refused(tmp_path):
    counts, metadata, genes = generated(30, 50)
    body = {"inputs": [{"metadata": {}, "num_samples": 40}]}
    out = {
        "condition": "c",
        "model_id": "m",
        "expression_out": tmp_path / "e.parquet",
        "metadata_out": tmp_path / "m.parquet",
    }
    with pytest.raises(ResultError, match="30 samples, 40 expected"):
        write_arrow_part(as_stream(counts, metadata, genes, 7), PartTarget(body=body, **out), query_id="q")
    body["inputs"][0]["num_samples"] = 20
    with pytest.raises(ResultError, match="more samples than the 20 expected"):
        write_arrow_part(as_stream(counts, metadata, genes, 7), PartTarget(body=body, **out), query_id="q")
    no_genes = stream([predict_metadata_batch()], {"request_type": "predict_metadata"})
    with pytest.raises(ResultError, match="no gene_order"):
        write_arrow_part(no_genes, PartTarget(body={"inputs": []}, **out), query_id="q")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_benchmark_runs_small_and_passes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "arrow.py"
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(script), "--samples", "20", "--genes", "500", "--batch", "7", "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "benchmark line (20 samples x 500 genes): Arrow path" in done.stdout and done.stdout.rstrip().endswith(
        "PASS"
    )
    report = json.loads(figures.read_text())
    assert report["verify"]["ok"] and set(report["runs"]) >= {"json-part", "arrow-part"}
    assert all(run["peak_kb"] > 0 and run["wall_s"] >= 0 for run in report["runs"].values())


@pytest.mark.parametrize(
    "model_id, latent_names",
    [
        ("gem-2-bulk_autoencode", None),
        ("gem-2", ["generated"]),
        ("gem-2-sc_reference-conditioning", ["z_displacement", "z_ref", "z_target"]),
    ],
)
def test_a_gem2_arrow_part_has_the_json_parts_metadata_and_latents(tmp_path, model_id, latent_names):
    """The emulator's hosted JSON result and its self-hosted stream of one plan give the same parts:
    autoencode's provenance (model_release_id, vae_run_id) in each sample's metadata row, and
    the same latents under the same names (GEM-2's generated / z_*, not GEM-1's groups)."""
    from synthbio_pipeline.emulator import gem2
    from synthbio_pipeline.emulator.self_hosted import gem2_stream

    genes = 120
    body = gem2.example_query(model_id, genes)
    request, problems = gem2.check(model_id, body, genes)
    assert not problems, problems
    plan = gem2.plan(request)
    gem2.write_result(tmp_path / "result.json", plan, genes=genes)
    data = b"".join(gem2_stream(plan, genes))
    paths = {}
    for path, source, write in (("j", tmp_path / "result.json", write_part), ("a", data, write_arrow_part)):
        paths[path] = {kind: tmp_path / f"{path}{kind}.parquet" for kind in ("e", "m", "l")}
        target = PartTarget(
            condition="c1",
            model_id=model_id,
            body=body,
            expression_out=paths[path]["e"],
            metadata_out=paths[path]["m"],
            latents_out=paths[path]["l"] if latent_names else None,
        )
        write(source, target, query_id="q-1")
    json_metadata, arrow_metadata = (pd.read_parquet(paths[p]["m"]) for p in ("j", "a"))
    pd.testing.assert_frame_equal(arrow_metadata, json_metadata)
    assert pq.read_table(paths["a"]["e"]).equals(pq.read_table(paths["j"]["e"]))
    if latent_names is None:
        assert {"model_release_id", "vae_run_id"} <= set(arrow_metadata.columns)
        assert arrow_metadata["model_release_id"].notna().all() and arrow_metadata["vae_run_id"].notna().all()
        assert (arrow_metadata["model_release_id"] == plan.release).all()
        return
    json_latents, arrow_latents = (pd.read_parquet(paths[p]["l"]) for p in ("j", "a"))
    assert sorted(set(arrow_latents.columns) - {"sample_id"}) == latent_names
    pd.testing.assert_frame_equal(arrow_latents, json_latents)


@pytest.mark.parametrize("decoder_sample", [True, False], ids=["with-decoder-sample", "predictions-only"])
def test_a_predict_metadata_stream_becomes_the_prediction_files_of_the_json_path(tmp_path, decoder_sample):
    """The stream's metadata, classifier_probs (a struct of structs: a value one sample lacks is
    null there, not a probability) and latents give the files a JSON result gives."""
    from synthbio_pipeline.formats.metadata_prediction import write_prediction_part

    rows = predict_metadata_batch().to_pylist()
    rows[0]["classifier_probs"]["tissue"] = {"lung": 1.0}  # the second sample has no tissue at all
    if not decoder_sample:
        for row in rows:
            del row["decoder_sample"]
    data = stream(
        [pa.RecordBatch.from_pylist(rows)], {"model_version": "emulator-2", "request_type": "predict_metadata"}
    )
    json_rows = [dict(row, classifier_probs={k: v for k, v in row["classifier_probs"].items() if v}) for row in rows]
    (tmp_path / "r.json").write_text(
        json.dumps({"gene_order": ["g1", "g2", "g3"], "model_version": "emulator-2", "outputs": json_rows})
    )
    written = {}
    for name, source in (("arrow", open_arrow_result(data)), ("json", tmp_path / "r.json")):
        folder = tmp_path / name
        folder.mkdir()
        write_prediction_part(
            source,
            sample_ids=["s1", "s2"],
            model_id="gem-1-bulk_predict-metadata",
            query_id="q",
            predicted_out=folder / "p.parquet",
            probs_out=folder / "c.parquet",
            latents_out=folder / "l.parquet",
        )
        written[name] = {file: pq.read_table(folder / f"{file}.parquet") for file in "pcl"}
    for file in "pcl":
        assert written["arrow"][file].to_pydict() == written["json"][file].to_pydict(), file
    probs = written["arrow"]["c"].to_pandas()
    assert probs[probs.sample_id == "s2"].field.tolist() == ["sex", "sex"]  # no null tissue probabilities
    assert written["arrow"]["l"].column("biological").to_pylist() == [[0.1], [0.3]]
