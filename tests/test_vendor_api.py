"""The vendor clients' Python API as a drop-in: ``import synthbio_pipeline as pysynthbio``.

The same code runs against our package and against pysynthbio 4.2.4 itself, and the
DataFrames are compared: for GEM-1 against the emulator (pysynthbio's README Quickstart,
only its import changed), for every GEM-2 operation against canned results served by a
scripted loopback server, compared with pysynthbio's own transformers on the same JSON.
"""

from __future__ import annotations

import copy
import getpass
import inspect
import io
import json
import sys
import warnings
import webbrowser

import keyring
import pandas as pd
import pysynthbio
import pytest
from keyring.backends import fail
from pysynthbio.gem2_output_transformers import gem2_output_transformer
from pysynthbio.output_transformers import OUTPUT_TRANSFORMERS
from scripted_server import ScriptedServer, start

import synthbio_pipeline
from synthbio_pipeline import errors
from synthbio_pipeline.client import token_store
from synthbio_pipeline.client.http import resolve_base_url
from synthbio_pipeline.emulator import start_emulator
from synthbio_pipeline.vocabulary import families
from synthbio_pipeline.vocabulary.models import get_model, is_known_model

TOKEN = "tok-VENDOR-api-5e1d"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("SYNTHESIZE_API_KEY", "SYNTHESIZE_API_BASE_URL", "SYNTHESIZE_SELF_HOSTED"):
        monkeypatch.delenv(name, raising=False)
    # No browser, ever: any attempt fails the test.
    monkeypatch.setattr(webbrowser, "open", lambda *a, **k: pytest.fail("a browser was opened"))


@pytest.fixture
def server(monkeypatch):
    state = ScriptedServer()
    httpd, url = start(state)
    state.url = url
    yield state
    httpd.shutdown()


# --- names and signatures ------------------------------------------------------------------

VENDOR_NAMES = [
    "predict_query",
    "get_example_query",
    "list_models",
    "set_synthesize_token",
    "load_synthesize_token_from_keyring",
    "has_synthesize_token",
    "clear_synthesize_token",
    "SynthesizeAPIError",
    "AuthenticationError",
    "NotFoundError",
    "ValidationError",
]


@pytest.mark.parametrize("name", VENDOR_NAMES)
def test_every_vendor_name_is_at_the_package_root(name):
    assert name in dir(pysynthbio)  # the name is the vendor's
    assert hasattr(synthbio_pipeline, name) and name in synthbio_pipeline.__all__


def test_the_token_names_are_our_functions():
    assert synthbio_pipeline.set_synthesize_token is token_store.set_token is synthbio_pipeline.set_token
    assert synthbio_pipeline.has_synthesize_token is token_store.has_token
    assert synthbio_pipeline.clear_synthesize_token is token_store.clear_token
    assert synthbio_pipeline.load_synthesize_token_from_keyring is token_store.load_token_from_keyring
    assert issubclass(errors.AuthenticationError, synthbio_pipeline.SynthesizeAPIError)
    assert synthbio_pipeline.SynthesizeAPIError is errors.SynthbioError


@pytest.mark.parametrize("name", ["predict_query", "get_example_query", "list_models", "clear_synthesize_token"])
def test_every_vendor_parameter_is_accepted_by_name(name):
    ours = inspect.signature(getattr(synthbio_pipeline, name)).parameters
    for parameter in inspect.signature(getattr(pysynthbio, name)).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            assert any(p.kind is p.VAR_KEYWORD for p in ours.values())
        else:
            assert parameter.name in ours, parameter.name


# --- the token functions -------------------------------------------------------------------


def test_set_token_takes_either_signature_and_returns_true(memory_keyring):
    assert synthbio_pipeline.set_synthesize_token(token=TOKEN) is True
    assert synthbio_pipeline.has_synthesize_token() and memory_keyring.entries == {}
    assert synthbio_pipeline.set_synthesize_token(True, TOKEN) is True  # positional, as pysynthbio's
    assert memory_keyring.entries == {("pysynthbio", "api_token"): TOKEN}
    synthbio_pipeline.clear_synthesize_token(remove_from_keyring=True)
    assert synthbio_pipeline.set_token(TOKEN, use_keyring=True) is True  # ours
    assert memory_keyring.entries == {("pysynthbio", "api_token"): TOKEN}
    assert synthbio_pipeline.clear_synthesize_token() is True and not synthbio_pipeline.has_synthesize_token()
    assert synthbio_pipeline.load_synthesize_token_from_keyring() is True and synthbio_pipeline.has_synthesize_token()
    assert synthbio_pipeline.clear_synthesize_token(remove_from_keyring=True) is True
    assert synthbio_pipeline.load_synthesize_token_from_keyring() is False


def test_a_keyring_that_cannot_store_warns_and_the_session_keeps_the_token(capsys):
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.warns(UserWarning, match="session only") as caught:
            assert synthbio_pipeline.set_synthesize_token(use_keyring=True, token=TOKEN) is True
    finally:
        keyring.set_keyring(previous)
    assert synthbio_pipeline.has_synthesize_token()
    shown = capsys.readouterr()
    assert TOKEN not in shown.out + shown.err + "".join(str(w.message) for w in caught)


def test_without_a_token_and_without_a_terminal_nothing_prompts(monkeypatch, memory_keyring):
    monkeypatch.setattr(getpass, "getpass", lambda *a, **k: pytest.fail("prompted without a terminal"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(KeyError) as caught:  # what the vendor's client raises
        synthbio_pipeline.set_synthesize_token()
    assert isinstance(caught.value, errors.MissingTokenError)
    assert "SYNTHESIZE_API_KEY" in str(caught.value) and not str(caught.value).startswith("'")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_token_is_asked_for_hidden_and_no_browser_opens(monkeypatch, memory_keyring):
    prompts = []
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": prompts.append(prompt) or f"  {TOKEN}\n")
    assert synthbio_pipeline.set_synthesize_token(use_keyring=True) is True
    assert len(prompts) == 1 and "hidden" in prompts[0]
    assert token_store.resolve_token() == TOKEN and memory_keyring.entries == {("pysynthbio", "api_token"): TOKEN}


def test_auto_authenticate_false_without_a_token_raises_key_error_before_any_request(server, memory_keyring):
    server.answer("POST", "/api/models/gem-2/predict", (200, {}, {"modelQueryId": "q"}))
    query = {"operation": "predict-expression", "inputs": {"modality": "bulk", "items": []}}
    with pytest.raises(KeyError):
        synthbio_pipeline.predict_query(query, model_id="gem-2", api_base_url=server.url, auto_authenticate=False)
    with pytest.raises(KeyError):  # True, but nobody to ask
        synthbio_pipeline.predict_query(query, model_id="gem-2", api_base_url=server.url)
    assert server.requests == []


# --- list_models and get_example_query: the server's JSON as it is -------------------------


def test_list_models_and_example_query_return_the_servers_json(server, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    models = {"models": [{"model_id": "gem-2", "extra": [1, 2]}, {"model_id": "gem-1-bulk"}]}
    example = {"example_query": {"operation": "autoencode", "inputs": {"modality": "bulk", "items": []}}}
    server.answer("GET", "/api/models", (200, {}, models))
    server.answer("GET", "/api/models/gem-2/example-query", (200, {}, example))
    assert synthbio_pipeline.list_models(api_base_url=server.url) == models
    assert synthbio_pipeline.get_example_query("gem-2", api_base_url=server.url) == example
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in server.requests)


def test_the_production_url_given_explicitly_counts_as_not_given(monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_BASE_URL", "https://global.example")
    monkeypatch.setenv("SYNTHESIZE_API_BASE_URL__GEM_2_BULK", "https://gem2bulk.example")
    assert resolve_base_url("https://app.synthesize.bio") == "https://global.example"
    assert resolve_base_url("https://app.synthesize.bio", "gem-2-bulk_reference-conditioning") == (
        "https://gem2bulk.example"
    )
    assert resolve_base_url("https://app.synthesize.bio", "gem-2-bulk_metadata") == "https://global.example"
    assert resolve_base_url("https://other.example/", "gem-2-bulk") == "https://other.example"
    for model_id in ("gem-2-bulk", "gem-2-sc_baseline", "gem-1-bulk_predict-metadata", "gem-2"):
        assert resolve_base_url(None, model_id) == pysynthbio.http_client.resolve_base_url(None, model_id).rstrip("/")


# --- pysynthbio's README Quickstart, only the import changed -------------------------------

QUICKSTART = """
import pysynthbio

# Set your API token (or use environment variable SYNTHESIZE_API_KEY)
pysynthbio.set_synthesize_token(use_keyring=True, token=TOKEN)

# Get an example query for the bulk RNA-seq baseline model
query = pysynthbio.get_example_query(model_id="gem-1-bulk")["example_query"]

# Generate synthetic expression data
result = pysynthbio.predict_query(query, model_id="gem-1-bulk")

# Access the results
metadata = result["metadata"]
expression = result["expression"]
"""


def run(code: str) -> dict:
    namespace = {"TOKEN": TOKEN}
    exec(compile(code, "<quickstart>", "exec"), namespace)
    return namespace


def test_the_readme_quickstart_runs_with_only_the_import_changed(monkeypatch, memory_keyring):
    with start_emulator(latency=0.2, genes=300, tokens=[TOKEN]) as emulator:
        monkeypatch.setenv("SYNTHESIZE_API_BASE_URL", emulator.url)
        theirs = run(QUICKSTART)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning from our side of the same code
            ours = run(QUICKSTART.replace("import pysynthbio", "import synthbio_pipeline as pysynthbio"))
        assert emulator.stats()["requests"].get("predict") == 2
    assert ours["pysynthbio"] is synthbio_pipeline and theirs["pysynthbio"] is pysynthbio
    assert memory_keyring.entries == {("pysynthbio", "api_token"): TOKEN}
    assert set(ours["result"]) == set(theirs["result"]) == {"metadata", "expression", "latents"}
    assert ours["expression"].shape == (10, 300)
    for key in theirs["result"]:
        pd.testing.assert_frame_equal(ours["result"][key], theirs["result"][key])


def test_the_rsynthbio_style_call_without_model_id_still_works(emulator):
    result = synthbio_pipeline.predict_query(
        synthbio_pipeline.get_valid_query("single-cell"), api_base_url=emulator.url, poll_interval_seconds=1
    )
    assert result["expression"].shape == (6, 200) and list(result) == ["metadata", "expression", "latents"]
    log_cpm = synthbio_pipeline.predict_query(
        synthbio_pipeline.get_valid_query("single-cell"),
        as_counts=False,
        api_base_url=emulator.url,
        poll_interval_seconds=1,
    )["expression"]
    pd.testing.assert_frame_equal(log_cpm, synthbio_pipeline.log_cpm(result["expression"]))


# --- GEM-2 (and GEM-1) hosted results: the same DataFrames as pysynthbio's transformers ----

GENES = ["ENSG00000141510", "ENSG00000111640"]


def outputs_for(operation: str) -> list[dict]:
    if operation == "predict-metadata":
        row = {
            "predicted_metadata": {"tissue_ontology_id": "UBERON:0002107", "age_years": None},
            "classifier_probabilities": {"tissue_ontology_id": {"UBERON:0002107": 0.75, "UBERON:0000955": 0.25}},
            "latents": {"encoded": [0.3, 0.4]},
        }
        return [row, copy.deepcopy(row) | {"predicted_metadata": {"tissue_ontology_id": "UBERON:0000955"}}]
    rows = [
        {"counts": [16777217, 2], "metadata": None},  # exact large counts, null metadata
        {"counts": [3, 4], "metadata": {"tissue": "liver"}, "latents": {"generated": [0.1, 0.2]}},
        {"counts": [5, 0], "metadata": {"tissue": "lung", "sex": "female"}, "latents": None},
    ]
    if operation == "predict-expression-from-reference":
        rows[1]["latents"] = {"z_ref": [0.1], "z_target": [0.2], "z_displacement": [0.1]}
    if operation == "autoencode":
        for index, row in enumerate(rows):
            row.update(model_release_id="release-3", vae_run_id=f"vae-{index}")
    return rows


CASES = [
    ("gem-2", "predict-expression"),
    ("gem-2", "predict-expression-from-reference"),
    ("gem-2", "predict-metadata"),
    ("gem-2", "autoencode"),
    ("gem-2-bulk", None),
    ("gem-2-sc_baseline-ensemble", None),
    ("gem-2-bulk_reference-conditioning", None),
    ("gem-2-sc_reference-conditioning-p3rz5xv7", None),
    ("gem-2-bulk_predict-metadata", None),
    ("gem-2-sc_metadata-ensemble", None),
    ("gem-2-bulk_autoencode", None),
    ("gem-2_baseline", None),
]


def serve_result(server, model_id, content):
    server.answer("POST", f"/api/models/{model_id}/predict", (200, {}, {"modelQueryId": " q-1 "}))
    server.answer(
        "GET", "/api/model-queries/q-1/status", (200, {}, {"status": "ready", "downloadUrl": f"{server.url}/dl/q-1"})
    )
    server.answer("GET", "/dl/q-1", (200, {"Content-Type": "application/json"}, content))


@pytest.mark.parametrize("model_id, operation", CASES)
def test_gem2_results_give_the_vendors_dataframes(server, monkeypatch, model_id, operation):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    query = (
        {"operation": operation, "inputs": {"modality": "single-cell", "items": []}}
        if operation
        else {"inputs": {"modality": "bulk", "items": []}}
    )
    kind = families.result_kind(model_id, query)
    vendor_operation = operation or families.gem2_operation(model_id)
    content = {"outputs": outputs_for(vendor_operation), "gene_order": GENES, "model_version": "gem-2.1"}
    serve_result(server, model_id, content)
    before = copy.deepcopy(query)

    ours = synthbio_pipeline.predict_query(
        query, model_id=model_id, api_base_url=server.url, seed=42, release="2025-06", as_counts=True
    )

    expected = gem2_output_transformer(model_id, query)(copy.deepcopy(content))
    assert list(ours) == list(expected)
    for key in expected:
        pd.testing.assert_frame_equal(ours[key], expected[key])
    if kind == families.GEM2_METADATA_PREDICTION:
        assert ours["expression"].shape == (2, 0)
    else:
        assert ours["expression"].iloc[0, 0] == 16777217 and ours["latents"].shape[0] == 3
    assert query == before  # the caller's dict is not changed
    sent = json.loads(server.requests[0].body)
    assert sent == {**query, "source": "synthbio-pipeline", "seed": 42, "release": "2025-06"}  # no as_counts
    assert server.requests[0].path == f"/api/models/{model_id}/predict"


@pytest.mark.parametrize("model_id", sorted(OUTPUT_TRANSFORMERS))
def test_gem1_model_ids_give_the_vendors_dataframes(server, monkeypatch, model_id):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    if "predict-metadata" in model_id:
        row = {
            "metadata": {"sex": "male"},
            "classifier_probs": {"sex": {"male": 0.9, "female": 0.1}},
            "latents": {"biological": [0.1], "technical": [0.2], "perturbation": []},
            "decoder_sample": {"counts": [1, 2]},
        }
        content, query = {"outputs": [row, row]}, {"inputs": [{"counts": [1, 2]}, {"counts": [3, 4]}]}
    else:
        rows = [{"counts": [1, 2], "metadata": {"sex": "male"}}, {"counts": {"counts": [3, 4]}}]
        content = {"outputs": rows, "gene_order": GENES, "model_version": 2}
        # Each model's own input keys (a baseline input carrying counts is refused locally).
        item = {"counts": [1, 2], "metadata": {}, "num_samples": 2}
        if is_known_model(model_id) and not get_model(model_id).takes_counts:
            del item["counts"]
        query = {"inputs": [item], "sampling_strategy": "mean estimation"}
    serve_result(server, model_id, content)
    ours = synthbio_pipeline.predict_query(query, model_id=model_id, api_base_url=server.url)
    expected = OUTPUT_TRANSFORMERS[model_id](copy.deepcopy(content))
    assert list(ours) == list(expected)
    for key in expected:
        pd.testing.assert_frame_equal(ours[key], expected[key])


def test_raw_response_and_download_url(server, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    content = {"outputs": outputs_for("predict-expression"), "gene_order": GENES}
    serve_result(server, "gem-2-sc", content)
    assert synthbio_pipeline.predict_query({"inputs": []}, "gem-2-sc", api_base_url=server.url, raw_response=True) == (
        content
    )
    link = synthbio_pipeline.predict_query(
        {"inputs": []}, "gem-2-sc", api_base_url=server.url, return_download_url=True
    )
    assert link == {"download_url": f"{server.url}/dl/q-1", "query_id": "q-1"}


@pytest.mark.parametrize("model_id", ["gem-2-ensemble", "gem-2-bulk_reference-conditioning-zzz", "gem-3"])
def test_a_model_without_a_formatter_raises_before_anything_is_sent(server, monkeypatch, model_id):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    assert gem2_output_transformer(model_id, {}) is None and model_id not in OUTPUT_TRANSFORMERS
    with pytest.raises(ValueError, match="raw_response=True"):
        synthbio_pipeline.predict_query({"inputs": []}, model_id=model_id, api_base_url=server.url)
    with pytest.raises(ValueError, match="raw_response=True"):  # gem-2 with an unknown operation
        synthbio_pipeline.predict_query({"operation": "predict-everything"}, model_id="gem-2", api_base_url=server.url)
    assert server.requests == []
    content = {"outputs": [], "gene_order": []}
    serve_result(server, model_id, content)
    assert synthbio_pipeline.predict_query({}, model_id, api_base_url=server.url, raw_response=True) == content


def test_a_gem1_query_with_model_id_is_checked_locally_before_sending(server, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    query = {
        "inputs": [{"metadata": {"sex": "mlae", "tisue_ontology_id": "UBERON:0002107"}, "num_samples": 2}],
        "sampling_strategy": "sample generation",
    }
    with pytest.raises(errors.QueryValidationError) as caught:
        synthbio_pipeline.predict_query(query, model_id="gem-1-sc", api_base_url=server.url, seed="x")
    message = str(caught.value)
    assert "inputs[0].metadata.sex" in message and "tissue_ontology_id" in message
    assert "'sample generation' is not available" in message and "seed" in message
    assert server.requests == []
