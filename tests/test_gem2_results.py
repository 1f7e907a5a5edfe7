"""The streaming parser on GEM-2 result shapes, and the model id -> result kind table."""

from __future__ import annotations

import json

import pytest
from pysynthbio.gem2_output_transformers import gem2_output_transformer
from pysynthbio.output_transformers import OUTPUT_TRANSFORMERS, transform_metadata_model_output

from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.formats.result_json import open_result, to_frames
from synthbio_pipeline.vocabulary import families


def write(tmp_path, document) -> str:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


# --- the table: as the vendor's client chooses its formatter -------------------------------

IDS = [
    "gem-2",
    "gem-2-bulk",
    "gem-2-sc",
    "gem-2-ensemble",
    "gem-2_baseline",
    "gem-2-bulk-ensemble",
    "gem-2-sc_baseline",
    "gem-2-bulk_reference-conditioning",
    "gem-2-sc_reference-conditioning-ensemble",
    "gem-2-bulk_reference-conditioning-4w6l3p61",
    "gem-2-sc_reference-conditioning-x4s7hdmu",
    "gem-2-bulk_reference-conditioning-zzz",
    "gem-2-bulk_predict-metadata",
    "gem-2-sc_metadata",
    "gem-2-sc_metadata-ensemble",
    "gem-2-bulk_autoencode",
    "gem-2-bulk_autoencode-ensemble",
    "gem-2-xl",
    "gem-1-bulk",
    "gem-1-sc_predict-metadata",
    "gem-1-bulk_condition-on-sample-ids",
    "gem-1-sc_condition-on-sample-ids",
    "gem-3",
]
VENDOR_KINDS = {
    "transform_gem2_expression": families.GEM2_EXPRESSION,
    "transform_gem2_metadata": families.GEM2_METADATA_PREDICTION,
    "transform_gem2_autoencode": families.GEM2_AUTOENCODE,
    "transform_standard_model_output": families.EXPRESSION,
    "transform_metadata_model_output": families.METADATA_PREDICTION,
}


@pytest.mark.parametrize("model_id", IDS)
@pytest.mark.parametrize("operation", [None, "predict-expression", "predict-metadata", "autoencode", "other"])
def test_result_kinds_follow_the_vendors_formatter_choice(model_id, operation):
    query = {} if operation is None else {"operation": operation}
    vendor = gem2_output_transformer(model_id, query) or OUTPUT_TRANSFORMERS.get(model_id)
    expected = VENDOR_KINDS[vendor.__name__] if vendor else None
    assert families.result_kind(model_id, query) == expected


# --- the parser --------------------------------------------------------------------------------


def test_gem2_metadata_outputs_need_no_counts_nor_gene_order(tmp_path):
    rows = [
        {
            "predicted_metadata": {"sex": "female"},
            "classifier_probabilities": {"sex": {"female": 0.6}},
            "latents": {"encoded": [0.1]},
        },
        {"predicted_metadata": None, "classifier_probabilities": None, "latents": None},
    ]
    path = write(tmp_path, {"outputs": rows, "model_version": "gem-2.1"})
    with pytest.raises(ResultError, match="no gene_order"):
        open_result(path)
    with open_result(path, require_gene_order=False, require_counts=False) as reader:
        samples = list(reader.samples())
    assert [s.predicted_metadata for s in samples] == [{"sex": "female"}, None]
    assert samples[0].classifier_probabilities == {"sex": {"female": 0.6}} and samples[1].latents is None
    assert all(s.counts.size == 0 for s in samples) and not reader.has_gene_order
    frames = to_frames(path, result_kind=families.GEM2_METADATA_PREDICTION)
    assert frames["metadata"].shape == (2, 1) and frames["metadata"]["sex"].isna().tolist() == [False, True]
    assert frames["latents"].shape == (2, 1) and frames["expression"].shape == (2, 0)


def test_autoencode_provenance_and_missing_keys(tmp_path):
    rows = [
        {"counts": [1, 2], "model_release_id": "r1", "vae_run_id": "v1"},
        {"counts": [3, 4], "model_release_id": "r1"},
    ]
    path = write(tmp_path, {"outputs": rows, "gene_order": ["a", "b"]})
    provenance = to_frames(path, result_kind=families.GEM2_AUTOENCODE)["provenance"]
    assert list(provenance.columns) == ["model_release_id", "vae_run_id"]
    assert provenance["model_release_id"].tolist() == ["r1", "r1"]
    assert provenance["vae_run_id"].iloc[0] == "v1" and provenance["vae_run_id"].isna().tolist() == [False, True]


@pytest.mark.parametrize(
    "document, kind, message",
    [
        (
            {"outputs": [{"predicted_metadata": ["female"]}]},
            families.GEM2_METADATA_PREDICTION,
            "the predicted_metadata of output 0 is not a JSON object",
        ),
        (
            {"outputs": [{"classifier_probabilities": 0.5}]},
            families.GEM2_METADATA_PREDICTION,
            "the classifier_probabilities of output 0 is not a JSON object",
        ),
        ({"outputs": [{"latents": [1]}]}, families.GEM2_METADATA_PREDICTION, "the latents of output 0"),
        (
            {"outputs": [{"decoder_sample": {"counts": [1, 2, 3]}}, {"decoder_sample": {"counts": [1, 2]}}]},
            families.METADATA_PREDICTION,
            "output 1: the decoder_sample counts has 2 values but the first output's counts have 3",
        ),
        (
            {"outputs": [{"counts": {"ENSG1": 3}}]},
            families.METADATA_PREDICTION,
            "sparse the counts \\(gene id -> count\\) need a gene_order",
        ),
        ({"outputs": [{"metadata": {}}], "gene_order": ["a"]}, families.GEM2_EXPRESSION, "has no counts"),
        ({"outputs": [{"counts": [1]}]}, families.GEM2_EXPRESSION, "no gene_order"),
        ({"error": "boom", "outputs": []}, families.GEM2_METADATA_PREDICTION, "the result is an error"),
    ],
)
def test_malformed_gem2_results_raise(tmp_path, document, kind, message):
    with pytest.raises(ResultError, match=message):
        to_frames(write(tmp_path, document), result_kind=kind)


def test_gem1_metadata_prediction_without_gene_order_matches_the_vendor(tmp_path):
    row = {
        "metadata": {"sex": "male"},
        "classifier_probs": {"sex": {"male": 0.9}},
        "decoder_sample": {"counts": [4, 5]},
    }
    document = {"outputs": [row, row], "model_version": 2}
    frames = to_frames(write(tmp_path, document), result_kind=families.METADATA_PREDICTION)
    vendor = transform_metadata_model_output(json.loads(json.dumps(document)))
    assert list(frames) == list(vendor)
    for key in vendor:
        assert frames[key].equals(vendor[key]), key
    assert list(frames["expression"].columns) == [0, 1]
