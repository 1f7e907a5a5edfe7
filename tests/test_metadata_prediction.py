"""Metadata prediction and reference provenance in the outputs: the parts (predicted metadata,
classifier probabilities), their merge, the queries of generated samples and of a user's
file, a batch against the emulator, and the metadata columns of reference rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthbio_pipeline.errors import GeneOrderError, MergeError, ResultError
from synthbio_pipeline.formats.metadata_prediction import merge_prediction_parts, write_prediction_part
from synthbio_pipeline.formats.parquet import PartTarget, merge_parts, write_part
from synthbio_pipeline.formats.result_json import to_frames
from synthbio_pipeline.pipeline.predict_metadata import (
    chunk_names,
    prediction_body,
    queries_from_counts_file,
    queries_from_expression,
)
from synthbio_pipeline.pipeline.references import Annotation, ReferenceError
from synthbio_pipeline.pipeline.runner import BatchQuery, result_kind, run_batch

GENES = [f"ENSG{i:011d}" for i in range(1, 21)]


def prediction_document(path, outputs):
    document = {
        "gene_order": GENES,
        "model_version": "emulator-2",
        "outputs": [
            {
                "metadata": metadata,
                "classifier_probs": probs,
                "latents": {"biological": [0.1]},
                "decoder_sample": {"counts": list(range(len(GENES)))},
            }
            for metadata, probs in outputs
        ],
    }
    path.write_text(json.dumps(document))
    return path


def test_a_prediction_result_becomes_two_parts(tmp_path):
    result = prediction_document(
        tmp_path / "r.json",
        [
            ({"sex": "male", "age_years": 61}, {"sex": {"male": 0.9, "female": 0.1}}),
            ({"sex": "female", "custom": "x"}, {"sex": {"male": 0.2, "female": 0.8}, "custom": {"x": 1.0}}),
        ],
    )
    summary = write_prediction_part(
        result,
        sample_ids=["a_1", "a_2"],
        model_id="gem-1-bulk_predict-metadata",
        query_id="q",
        predicted_out=tmp_path / "p.parquet",
        probs_out=tmp_path / "c.parquet",
    )
    assert summary["samples"] == 2 and summary["backend"] == "emulator"
    predicted = pd.read_parquet(tmp_path / "p.parquet")
    assert list(predicted.columns) == ["sample_id", "age_years", "sex", "custom"]  # API key order, then others
    assert pq.read_table(tmp_path / "p.parquet").to_pydict() == {
        "sample_id": ["a_1", "a_2"],
        "age_years": ["61", None],
        "sex": ["male", "female"],
        "custom": [None, "x"],
    }
    probs = pd.read_parquet(tmp_path / "c.parquet")
    assert list(probs.columns) == ["sample_id", "field", "value", "probability"]
    assert probs.probability.dtype == np.float64 and len(probs) == 5
    assert probs[(probs.sample_id == "a_2") & (probs.field == "sex")].set_index("value").probability.to_dict() == {
        "male": 0.2,
        "female": 0.8,
    }
    label = json.loads(pq.read_schema(tmp_path / "c.parquet").metadata[b"synthbio"])
    assert label["backend"] == "emulator" and label["model_id"] == "gem-1-bulk_predict-metadata"
    # The same values as the vendor-style frames of the same document.
    frames = to_frames(result, result_kind="metadata-prediction")
    assert frames["metadata"]["sex"].tolist() == predicted["sex"].tolist()


def test_a_gem2_prediction_result_is_read_by_gem2s_field_names(tmp_path):
    """GEM-2 predict-metadata: predicted_metadata, classifier_probabilities, latents.encoded, no counts."""
    document = {
        "gene_order": GENES,
        "model_version": "emulator-2",
        "outputs": [
            {
                "predicted_metadata": {"tissue": "liver", "sex": "female"},
                "classifier_probabilities": {"tissue": {"liver": 0.7, "lung": 0.3}},
                "latents": {"encoded": [0.1, 0.2]},
            }
        ],
    }
    (tmp_path / "r.json").write_text(json.dumps(document))
    write_prediction_part(
        tmp_path / "r.json",
        sample_ids=["d0"],
        model_id="gem-2-bulk_predict-metadata",
        query_id="q",
        predicted_out=tmp_path / "p.parquet",
        probs_out=tmp_path / "c.parquet",
        latents_out=tmp_path / "l.parquet",
    )
    assert pq.read_table(tmp_path / "p.parquet").to_pydict() == {
        "sample_id": ["d0"],
        "sex": ["female"],
        "tissue": ["liver"],
    }
    probs = pd.read_parquet(tmp_path / "c.parquet")
    assert probs.set_index("value").probability.to_dict() == {"liver": 0.7, "lung": 0.3}
    # latents.encoded is kept: what the model encoded the sample to, labelled like the others.
    latents = pq.read_table(tmp_path / "l.parquet")
    assert latents.to_pydict() == {"sample_id": ["d0"], "encoded": [[0.1, 0.2]]}
    label = json.loads(latents.schema.metadata[b"synthbio"])
    assert label["values"] == "encoded latents" and label["backend"] == "emulator"
    assert label["model_id"] == "gem-2-bulk_predict-metadata"


def test_gem2_metadata_prediction_bodies_and_result_kinds(tmp_path):
    counts = [np.array([1, 0, 4]), np.array([2, 2, 2])]
    body = prediction_body("gem-2-sc_metadata-ensemble", counts, seed=3)
    assert body["operation"] == "predict-metadata" and body["options"] == {"seed": 3}
    assert body["inputs"]["modality"] == "single-cell"
    assert body["inputs"]["items"] == [{"counts": [1, 0, 4]}, {"counts": [2, 2, 2]}]
    assert prediction_body("gem-2", counts, modality="bulk")["inputs"]["modality"] == "bulk"
    assert result_kind("gem-2-bulk_predict-metadata") == result_kind("gem-1-bulk_predict-metadata")
    assert result_kind("gem-2", body) == "metadata-prediction"
    assert result_kind("gem-2", {"operation": "autoencode"}) == result_kind("gem-2-bulk_autoencode") == "expression"


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", float("nan")])
def test_a_probability_that_is_not_one_is_refused(tmp_path, bad):
    result = prediction_document(tmp_path / "r.json", [({"sex": "male"}, {"sex": {"male": bad}})])
    with pytest.raises(ResultError, match="classifier_probs"):
        write_prediction_part(
            result,
            sample_ids=["a_1"],
            model_id="m",
            query_id="q",
            predicted_out=tmp_path / "p.parquet",
            probs_out=tmp_path / "c.parquet",
        )
    assert not (tmp_path / "p.parquet").exists() and not (tmp_path / "c.parquet").exists()


def test_parts_merge_in_order_with_missing_fields_null(tmp_path):
    parts = []
    for i, outputs in enumerate(
        [[({"sex": "male"}, {"sex": {"male": 1.0}})], [({"tissue_ontology_id": "UBERON:0002048"}, {})]]
    ):
        result = prediction_document(tmp_path / f"r{i}.json", outputs)
        p, c = tmp_path / f"p{i}.parquet", tmp_path / f"c{i}.parquet"
        write_prediction_part(result, sample_ids=[f"s{i}"], model_id="m", query_id="q", predicted_out=p, probs_out=c)
        parts.append((p, c))
    summary = merge_prediction_parts(*zip(*parts), tmp_path / "P.parquet", tmp_path / "C.parquet")
    assert summary == {"samples": 2, "parts": 2, "fields": 2, "backend": "emulator"}
    assert pq.read_table(tmp_path / "P.parquet").to_pydict() == {
        "sample_id": ["s0", "s1"],
        "sex": ["male", None],
        "tissue_ontology_id": [None, "UBERON:0002048"],
    }
    assert pd.read_parquet(tmp_path / "C.parquet").sample_id.tolist() == ["s0"]
    with pytest.raises(MergeError, match="more than one part"):
        merge_prediction_parts([parts[0][0]] * 2, [parts[0][1]] * 2, tmp_path / "X.parquet", tmp_path / "Y.parquet")


def expression_pair(tmp_path, counts, model_id="gem-1-bulk", extra_columns=None, body=None, condition="c"):
    document = {
        "gene_order": GENES,
        "model_version": "emulator-2",
        "outputs": [{"counts": column.tolist(), "metadata": {}} for column in counts.T],
    }
    (tmp_path / f"{condition}.json").write_text(json.dumps(document))
    body = body or {"inputs": [{"metadata": {}, "num_samples": counts.shape[1]}]}
    write_part(
        tmp_path / f"{condition}.json",
        PartTarget(
            condition=condition,
            model_id=model_id,
            body=body,
            expression_out=tmp_path / f"{condition}_e.parquet",
            metadata_out=tmp_path / f"{condition}_m.parquet",
            extra_columns=extra_columns,
        ),
        query_id=f"q-{condition}",
    )
    return tmp_path / f"{condition}_e.parquet", tmp_path / f"{condition}_m.parquet"


def test_reference_rows_carry_their_provenance_and_baseline_rows_nulls(tmp_path):
    counts = np.arange(40).reshape(20, 2)
    base = expression_pair(tmp_path, counts, condition="lung")
    reference_body = {
        "sampling_strategy": "mean estimation",
        "conditioning": ["biological"],
        "inputs": [{"counts": [1] * 20, "metadata": {"perturbation_type": "crispr"}, "num_samples": 2}],
    }
    ref = expression_pair(
        tmp_path,
        counts,
        model_id="gem-1-bulk_reference-conditioning",
        extra_columns={"reference": "ref.tsv", "reference_sample": "S1", "reference_library_size": 1234},
        body=reference_body,
        condition="ko",
    )
    part = pd.read_parquet(ref[1])
    assert part[["conditioning", "reference", "reference_sample", "reference_library_size"]].iloc[0].tolist() == [
        "biological",
        "ref.tsv",
        "S1",
        1234,
    ]
    assert "conditioning" not in pd.read_parquet(base[1]).columns  # a baseline part has no reference options
    merge_parts([base[0], ref[0]], [base[1], ref[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    merged = pd.read_parquet(tmp_path / "m.parquet")
    assert merged.reference.isna().tolist() == [True, True, False, False]
    assert merged.reference_library_size.tolist()[2:] == [1234, 1234]
    assert str(merged.reference_library_size.dtype) == "Int64" and merged.reference_library_size.isna().sum() == 2
    label = json.loads(pq.read_schema(tmp_path / "e.parquet").metadata[b"synthbio"])
    assert label["modality"] == "bulk"
    assert label["model_ids"] == ["gem-1-bulk", "gem-1-bulk_reference-conditioning"]


def test_a_result_in_another_gene_order_than_the_reference_was_sent_in_is_refused(tmp_path):
    with pytest.raises(GeneOrderError, match="stale"):
        write_part(
            prediction_document(tmp_path / "r.json", []),
            PartTarget(
                condition="ko",
                model_id="gem-1-bulk",
                body={"inputs": []},
                expression_out=tmp_path / "e.parquet",
                metadata_out=tmp_path / "m.parquet",
                expected_genes=list(reversed(GENES)),
            ),
            query_id="q",
        )


def test_queries_of_generated_samples_are_chunked(tmp_path):
    counts = np.arange(100).reshape(20, 5)
    expression, _ = expression_pair(tmp_path, counts)
    samples = queries_from_expression(
        expression, tmp_path / "q", tmp_path / "s.json", model_id="gem-1-bulk_predict-metadata", batch=2, seed=4
    )
    assert samples == {"0001": ["c_1", "c_2"], "0002": ["c_3", "c_4"], "0003": ["c_5"]}
    assert chunk_names(5, 2) == list(samples)
    assert json.loads((tmp_path / "s.json").read_text()) == samples
    body = json.loads((tmp_path / "q" / "0002.json").read_text())
    assert body["seed"] == 4 and body["source"] == "synthbio-pipeline"
    assert body["inputs"] == [{"counts": counts[:, 2].tolist()}, {"counts": counts[:, 3].tolist()}]


def test_a_users_file_is_aligned_and_checked_sample_by_sample(tmp_path):
    frame = pd.DataFrame({"gene_id": [g + ".1" for g in reversed(GENES)], "x": range(20), "y": range(20, 40)})
    frame.to_csv(tmp_path / "mine.tsv", sep="\t", index=False)
    entry = Annotation("mine", str(tmp_path / "mine.tsv"), "bulk", 0)
    samples = queries_from_counts_file(entry, GENES, tmp_path / "q", tmp_path / "s.json", model_id="m", batch=50)
    assert samples == {"0001": ["x", "y"]}
    body = json.loads((tmp_path / "q" / "0001.json").read_text())
    assert body["inputs"][0]["counts"] == list(range(19, -1, -1))
    frame["y"] = frame["y"].astype(float)
    frame.loc[7, "y"] = 2.5
    frame.to_csv(tmp_path / "mine.tsv", sep="\t", index=False)
    with pytest.raises(ReferenceError, match="sample 'y'.*fractional"):
        queries_from_counts_file(entry, GENES, tmp_path / "q2", tmp_path / "s2.json", model_id="m")


def test_a_metadata_prediction_batch_against_the_emulator(make_emulator, tmp_path):
    """Generated samples' metadata predicted in two queries, merged in sample order."""
    from synthbio_pipeline.pipeline.conditions import read_conditions, write_query
    from synthbio_pipeline.pipeline.runner import run_prediction

    emulator = make_emulator(genes=300, latency=0.1)
    (tmp_path / "c.tsv").write_text(
        "condition\tnum_samples\ttissue_ontology_id\tsex\tsample_type\n"
        "liver\t3\tUBERON:0002107\tfemale\tprimary tissue\n"
    )
    (liver,) = read_conditions(tmp_path / "c.tsv", {"seed": 2})
    write_query(liver, tmp_path / "liver.json")
    out = tmp_path / "gen"
    run_prediction(
        tmp_path / "liver.json",
        model_id="gem-1-bulk",
        condition="liver",
        expression_out=out / "expression.parquet",
        metadata_out=out / "metadata.parquet",
        base_url=emulator.url,
        poll_interval=1,
    )
    samples = queries_from_expression(
        out / "expression.parquet", tmp_path / "q", tmp_path / "s.json", model_id="gem-1-bulk_predict-metadata", batch=2
    )
    summary = run_batch(
        [
            BatchQuery(name, tmp_path / "q" / f"{name}.json", "gem-1-bulk_predict-metadata", sample_ids=tuple(ids))
            for name, ids in samples.items()
        ],
        predicted_out=tmp_path / "predicted_metadata.parquet",
        probs_out=tmp_path / "classifier_probs.parquet",
        latents_out=tmp_path / "encoded_latents.parquet",
        in_flight=2,
        base_url=emulator.url,
        poll_interval=1,
    )
    assert [s["samples"] for s in summary["conditions"]] == [2, 1]
    predicted = pd.read_parquet(tmp_path / "predicted_metadata.parquet")
    assert predicted.sample_id.tolist() == ["liver_1", "liver_2", "liver_3"]
    assert set(predicted.tissue_ontology_id) == {"UBERON:0002107"}  # the emulator recovers what it generated
    probs = pd.read_parquet(tmp_path / "classifier_probs.parquet")
    sums = probs.groupby(["sample_id", "field"]).probability.sum()
    assert np.allclose(sums, 1.0, atol=1e-6)
    top = probs.loc[probs.groupby(["sample_id", "field"]).probability.idxmax()]
    assert top[top.field == "sex"].value.tolist() == predicted.sex.tolist()
    # Each sample's latents, merged in the same order, with the backend that made them.
    latents = pq.read_table(tmp_path / "encoded_latents.parquet")
    assert latents.column("sample_id").to_pylist() == predicted.sample_id.tolist()
    assert {"biological", "technical", "perturbation"} <= set(latents.column_names)
    assert all(len(vector) > 0 for vector in latents.column("biological").to_pylist())
    label = json.loads(latents.schema.metadata[b"synthbio"])
    assert label["backend"] == "emulator" and label["parts"] == 2
    assert not list(tmp_path.glob(".predicted_metadata.parquet.work"))  # the work folder is gone
