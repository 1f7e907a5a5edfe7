"""The vendor's own client (pysynthbio 4.2.4) against our emulator, and our parser against it.

If the vendor's client works unchanged against the emulator, the emulator speaks the
protocol; if its DataFrames equal ours for the same result, our parser reads results
the way the vendor does. Every GEM-1 model: the baselines, reference conditioning and
metadata prediction (whose example queries carry counts of the emulator's gene length).
"""

from __future__ import annotations

import json

import pandas as pd
import pysynthbio
import pytest
import requests
from pysynthbio.output_transformers import OUTPUT_TRANSFORMERS, transform_standard_model_output

from synthbio_pipeline import predict_query, to_frames
from synthbio_pipeline.emulator import start_emulator
from synthbio_pipeline.vocabulary.models import MODELS as MODEL_TABLE
from synthbio_pipeline.vocabulary.models import get_model

TOKEN = "conformance-token"
GENES = 300
MODELS = ["gem-1-bulk", "gem-1-sc"]
#: Every model of the table: the vendor's client has a formatter for each.
ALL_MODELS = [spec.model_id for spec in MODEL_TABLE]
COUNTS_MODELS = [spec.model_id for spec in MODEL_TABLE if spec.takes_counts]


@pytest.fixture(scope="module")
def emulator():
    with start_emulator(latency=0.2, genes=GENES, tokens=[TOKEN]) as running:
        yield running


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    monkeypatch.delenv("SYNTHESIZE_API_BASE_URL", raising=False)


def vendor_query(emulator, model_id, seed=7):
    query = pysynthbio.get_example_query(model_id, api_base_url=emulator.url)["example_query"]
    query["seed"] = seed
    return query


def test_vendor_lists_models_and_example_queries(emulator):
    models = pysynthbio.list_models(api_base_url=emulator.url)["models"]
    listed = [model["model_id"] for model in models if model["family"] == "gem-1"]
    assert listed == ALL_MODELS
    assert set(listed) <= set(OUTPUT_TRANSFORMERS)  # (GEM-2's: tests/test_conformance_gem2.py)
    for model_id in ALL_MODELS:
        spec = get_model(model_id)
        query = pysynthbio.get_example_query(model_id, api_base_url=emulator.url)["example_query"]
        assert query["inputs"]
        assert ("sampling_strategy" in query) == bool(spec.modes)
        assert all(set(item) == set(spec.input_keys) for item in query["inputs"])
        if spec.takes_counts:
            assert all(len(item["counts"]) == GENES for item in query["inputs"])


@pytest.mark.parametrize("model_id", COUNTS_MODELS)
def test_vendor_predicts_each_example_and_its_frames_equal_ours_on_the_same_result(emulator, model_id, tmp_path):
    """The example query fed back as it is: the vendor's client gets a result, and its formatter's
    DataFrames equal our parser's (to_frames with the model's result kind) for the same document."""
    spec = get_model(model_id)
    query = pysynthbio.get_example_query(model_id, api_base_url=emulator.url)["example_query"]
    frames = pysynthbio.predict_query(
        dict(query), model_id=model_id, api_base_url=emulator.url, poll_interval_seconds=1
    )
    expected_samples = sum(item.get("num_samples", 1) for item in query["inputs"])
    assert frames["expression"].shape == (expected_samples, GENES)
    assert len(frames["metadata"]) == expected_samples

    link = pysynthbio.predict_query(
        dict(query), model_id=model_id, api_base_url=emulator.url, poll_interval_seconds=1, return_download_url=True
    )
    path = tmp_path / "result.json"
    path.write_bytes(requests.get(link["download_url"], timeout=30).content)
    vendor = OUTPUT_TRANSFORMERS[model_id](json.loads(path.read_text()))
    ours = to_frames(path, result_kind=spec.result_kind)
    assert set(ours) == set(vendor)
    pd.testing.assert_frame_equal(ours["expression"], vendor["expression"], check_dtype=False)
    pd.testing.assert_frame_equal(ours["metadata"], vendor["metadata"])
    pd.testing.assert_frame_equal(ours["latents"], vendor["latents"])
    if spec.result_kind == "metadata-prediction":
        pd.testing.assert_frame_equal(ours["classifier_probs"], vendor["classifier_probs"])
        assert list(vendor["classifier_probs"].columns) == list(vendor["metadata"].columns)
    else:
        assert (vendor["metadata"].columns.str.startswith("perturbation_")).all()


@pytest.mark.parametrize("model_id", COUNTS_MODELS)
def test_our_predict_query_gives_the_vendors_frames_for_a_fixed_seed(emulator, model_id):
    """Our vendor_api.predict_query (pysynthbio's call) and the vendor's client, on the
    same seeded query, give equal DataFrames (reference conditioning is seeded; prediction is
    deterministic)."""
    query = pysynthbio.get_example_query(model_id, api_base_url=emulator.url)["example_query"]
    query["seed"] = 5
    vendor = pysynthbio.predict_query(
        dict(query), model_id=model_id, api_base_url=emulator.url, poll_interval_seconds=1
    )
    ours = predict_query(query, model_id, api_base_url=emulator.url, poll_interval_seconds=1)
    assert set(ours) == set(vendor)
    for name in vendor:
        pd.testing.assert_frame_equal(ours[name], vendor[name], check_dtype=False)


@pytest.mark.parametrize("model_id", MODELS)
def test_vendor_predict_query_works_and_matches_our_parser_on_the_same_result(emulator, model_id, tmp_path):
    query = vendor_query(emulator, model_id)
    link = pysynthbio.predict_query(
        dict(query), model_id=model_id, api_base_url=emulator.url, poll_interval_seconds=1, return_download_url=True
    )
    path = tmp_path / "result.json"
    path.write_bytes(requests.get(link["download_url"], timeout=30).content)

    vendor = transform_standard_model_output(json.loads(path.read_text()))
    ours = to_frames(path)
    expected_samples = sum(item["num_samples"] for item in query["inputs"])
    assert vendor["expression"].shape == (expected_samples, 300)
    pd.testing.assert_frame_equal(ours["expression"], vendor["expression"], check_dtype=False)
    pd.testing.assert_frame_equal(ours["metadata"], vendor["metadata"])


@pytest.mark.parametrize("model_id", MODELS)
def test_a_fixed_seed_reproduces_the_counts_through_either_client(emulator, model_id):
    query = vendor_query(emulator, model_id, seed=123)
    first = pysynthbio.predict_query(dict(query), model_id=model_id, api_base_url=emulator.url, poll_interval_seconds=1)
    second = pysynthbio.predict_query(
        dict(query), model_id=model_id, api_base_url=emulator.url, poll_interval_seconds=1
    )
    pd.testing.assert_frame_equal(first["expression"], second["expression"])

    modality = "bulk" if model_id == "gem-1-bulk" else "single-cell"
    ours = predict_query(
        {
            "modality": modality,
            "mode": query["sampling_strategy"],
            **{k: v for k, v in query.items() if k not in ("sampling_strategy", "source")},
        },
        api_base_url=emulator.url,
        poll_interval_seconds=1,
    )
    pd.testing.assert_frame_equal(ours["expression"], first["expression"], check_dtype=False)


def test_vendor_gets_authentication_error_for_a_wrong_token(emulator, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", "not-the-token")
    with pytest.raises(pysynthbio.AuthenticationError):
        pysynthbio.list_models(api_base_url=emulator.url)
    with pytest.raises(pysynthbio.AuthenticationError):
        pysynthbio.predict_query(
            vendor_query_unauthenticated(), model_id="gem-1-bulk", api_base_url=emulator.url, poll_interval_seconds=1
        )


def vendor_query_unauthenticated():
    from synthbio_pipeline.vocabulary.query import example_wire_query

    return example_wire_query("gem-1-bulk")


def test_vendor_gets_validation_error_for_single_cell_sample_generation(emulator):
    query = vendor_query(emulator, "gem-1-sc")
    query["sampling_strategy"] = "sample generation"
    with pytest.raises(pysynthbio.ValidationError) as caught:
        pysynthbio.predict_query(query, model_id="gem-1-sc", api_base_url=emulator.url, poll_interval_seconds=1)
    assert "sampling_strategy" in str(caught.value)
