"""The vendor's own client (pysynthbio 4.2.4) against our emulator, and our parser against it.

If the vendor's client works unchanged against the emulator, the emulator speaks the
protocol; if its DataFrames equal ours for the same result, our parser reads results
the way the vendor does.
"""

from __future__ import annotations

import json

import pandas as pd
import pysynthbio
import pytest
import requests
from pysynthbio.output_transformers import transform_standard_model_output

from synthbio_pipeline import predict_query, to_frames
from synthbio_pipeline.emulator import start_emulator

TOKEN = "conformance-token"
MODELS = ["gem-1-bulk", "gem-1-sc"]


@pytest.fixture(scope="module")
def emulator():
    with start_emulator(latency=0.2, genes=300, tokens=[TOKEN]) as running:
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
    listed = {model["model_id"] for model in pysynthbio.list_models(api_base_url=emulator.url)["models"]}
    assert set(MODELS) <= listed
    for model_id in MODELS:
        query = pysynthbio.get_example_query(model_id, api_base_url=emulator.url)["example_query"]
        assert query["inputs"] and "sampling_strategy" in query


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
