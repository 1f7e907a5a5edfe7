"""GEM-2 and self-hosted mode through the vendor's own client (pysynthbio 4.2.4), against the
emulator: its DataFrames equal ours (``synthbio_pipeline.predict_query`` with ``model_id``)
for the same bodies and seeds, and its README code runs with only the import changed."""

from __future__ import annotations

import copy
import getpass
import io
import re
import sys
import warnings

import keyring
import keyring.backends.fail
import pandas as pd
import pysynthbio
import pysynthbio.key_handlers
import pytest
import requests

import synthbio_pipeline
from synthbio_pipeline.emulator import start_emulator
from synthbio_pipeline.vocabulary.families import GEM2_MODEL_IDS

TOKEN = "conformance-gem2-token"
GENES = 300


@pytest.fixture(scope="module")
def hosted():
    with start_emulator(latency=0, genes=GENES, tokens=[TOKEN]) as running:
        yield running


@pytest.fixture(scope="module")
def container():
    """A self-hosted model container without auth."""
    with start_emulator(latency=0, genes=GENES, self_hosted=True) as running:
        yield running


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    for name in ("SYNTHESIZE_API_BASE_URL", "SYNTHESIZE_SELF_HOSTED"):
        monkeypatch.delenv(name, raising=False)


def example(emulator, model_id):
    return pysynthbio.get_example_query(model_id, api_base_url=emulator.url)["example_query"]


def assert_same_frames(vendor: dict, ours: dict) -> None:
    assert list(ours) == list(vendor)
    for name, frame in vendor.items():
        pd.testing.assert_frame_equal(ours[name], frame, check_dtype=False, obj=name)


# --- hosted: every operation through gem-2, a sample of compatibility ids, an ensemble member --


def bodies():
    liver = {
        "tissue": "liver",
        "sample_type": "primary tissue",
        "library_layout": "PAIRED",
        "library_selection": "cDNA",
    }
    molecules = [{"smiles": "CCO"}, {"entity_ontology_id": "CHEMBL3261331"}]
    return {
        "gem-2 predict-expression": ("gem-2", None),
        "gem-2 predict-expression-from-reference": ("gem-2", "predict-expression-from-reference"),
        "gem-2 predict-metadata": ("gem-2", "predict-metadata"),
        "gem-2 autoencode": ("gem-2", "autoencode"),
        "gem-2-sc_baseline": ("gem-2-sc_baseline", None),
        "gem-2-bulk gem-1 shape": (
            "gem-2-bulk",
            {
                "inputs": [
                    {"metadata": dict(liver, bioactive_entity_perturbations=molecules), "num_samples": 2},
                    {"metadata": dict(liver, tissue="lung"), "num_samples": 1},
                ],
                "seed": 4,
                "sampling_strategy": "sample generation",
            },
        ),
        "gem-2-bulk_reference-conditioning-ensemble": ("gem-2-bulk_reference-conditioning-ensemble", None),
        "gem-2-sc_reference-conditioning-x4s7hdmu (member)": ("gem-2-sc_reference-conditioning-x4s7hdmu", None),
        "gem-2-bulk_metadata": ("gem-2-bulk_metadata", None),
        "gem-2-sc_predict-metadata-ensemble": ("gem-2-sc_predict-metadata-ensemble", None),
        "gem-2-bulk_autoencode": ("gem-2-bulk_autoencode", None),
    }


BODIES = bodies()


def body_for(emulator, model_id, spec):
    """The body of a case: given, or the example of the id (``gem-2``: of the operation named)."""
    if isinstance(spec, dict):
        return copy.deepcopy(spec)
    if model_id == "gem-2" and spec is not None:
        source = next(m for m, row in GEM2_MODEL_IDS.items() if row.operation == spec and row.modality == "single-cell")
        body = example(emulator, source)
        body["operation"] = spec
        return body
    return example(emulator, model_id)


@pytest.mark.parametrize("case", list(BODIES))
def test_pysynthbio_runs_each_gem2_case_and_its_frames_equal_ours(hosted, case):
    model_id, spec = BODIES[case]
    body = body_for(hosted, model_id, spec)
    vendor = pysynthbio.predict_query(copy.deepcopy(body), model_id=model_id, api_base_url=hosted.url)
    ours = synthbio_pipeline.predict_query(body, model_id=model_id, api_base_url=hosted.url, poll_interval_seconds=1)
    assert_same_frames(vendor, ours)
    operation = GEM2_MODEL_IDS[model_id].operation or body["operation"]
    rows = len(body["inputs"]) if isinstance(body["inputs"], list) else len(body["inputs"]["items"])
    n = vendor["metadata"].shape[0]
    assert n >= rows > 0
    if operation == "predict-metadata":
        assert set(vendor) == {"metadata", "latents", "classifier_probs", "expression"}
        assert vendor["expression"].shape == (n, 0)
        assert list(vendor["latents"].columns) == ["encoded"]
        assert vendor["metadata"]["tissue"].notna().all()
    else:
        assert vendor["expression"].shape == (n, GENES)
        assert vendor["latents"].shape[0] == n
    if operation == "autoencode":
        assert list(vendor["provenance"].columns) == ["model_release_id", "vae_run_id"]


def test_the_same_seed_gives_the_same_frames_twice(hosted):
    body = example(hosted, "gem-2")
    first = pysynthbio.predict_query(copy.deepcopy(body), model_id="gem-2", api_base_url=hosted.url)
    second = pysynthbio.predict_query(copy.deepcopy(body), model_id="gem-2", api_base_url=hosted.url)
    assert_same_frames(first, second)


def test_large_counts_stay_exact_through_both_clients(hosted):
    body = example(hosted, "gem-2")
    body["inputs"]["items"][0]["output_total"]["value"] = 10**17
    raw = pysynthbio.predict_query(copy.deepcopy(body), model_id="gem-2", api_base_url=hosted.url, raw_response=True)
    vendor = pysynthbio.predict_query(copy.deepcopy(body), model_id="gem-2", api_base_url=hosted.url)
    ours = synthbio_pipeline.predict_query(body, model_id="gem-2", api_base_url=hosted.url, poll_interval_seconds=1)
    exact = [output["counts"] for output in raw["outputs"]]
    assert max(max(row) for row in exact) > 2**53  # beyond what a float holds exactly
    assert vendor["expression"].values.tolist() == exact == ours["expression"].values.tolist()
    assert raw["release"] == raw["model_version"]


def test_a_gem2_validation_error_reaches_pysynthbio_at_once_with_each_path(hosted):
    body = example(hosted, "gem-2-sc")
    body["inputs"]["items"][0]["metadata"]["bioactive_entity_perturbations"] = [{"smiles": "CCO", "entity": "x"}]
    before = hosted.stats()["requests"]
    with pytest.raises(pysynthbio.ValidationError) as caught:
        pysynthbio.predict_query(body, model_id="gem-2-sc", api_base_url=hosted.url)
    assert caught.value.status_code == 422
    assert str(caught.value) == (
        "Invalid GEM-2 request (422):\n- inputs.items[0].metadata.bioactive_entity_perturbations[0]: a molecule "
        "has exactly one key, 'smiles', 'entity_ontology_id' or 'entity'; found 'smiles', 'entity'"
    )
    after = hosted.stats()["requests"]
    assert after["predict"] == before.get("predict", 0) + 1 and after.get("status") == before.get("status")
    with pytest.raises(synthbio_pipeline.ValidationError) as ours:
        synthbio_pipeline.predict_query(body, model_id="gem-2-sc", api_base_url=hosted.url)
    assert [(p.path, p.message) for p in ours.value.problems] == [
        (line[2:].split(": ", 1)[0], line[2:].split(": ", 1)[1]) for line in str(caught.value).splitlines()[1:]
    ]


# --- self-hosted ----------------------------------------------------------------------------------


def per_model_variable(model_id: str) -> str:
    """pysynthbio's per-model base URL variable (its documented rule)."""
    stem = re.sub(r"_(reference-conditioning|predict-metadata)$", "", model_id)
    return "SYNTHESIZE_API_BASE_URL__" + re.sub(r"[^A-Z0-9]+", "_", stem.upper())


SELF_HOSTED = [
    "gem-1-bulk",
    "gem-1-sc",
    "gem-1-sc_reference-conditioning",
    "gem-1-bulk_predict-metadata",
    "gem-2",
    "gem-2-sc_reference-conditioning",
    "gem-2-bulk_predict-metadata",
    "gem-2-sc_autoencode-ensemble",
    "gem-2-bulk_reference-conditioning-4w6l3p61",
]


@pytest.mark.parametrize("model_id", SELF_HOSTED)
def test_pysynthbio_in_self_hosted_mode_works_and_its_frames_equal_ours(container, hosted, monkeypatch, model_id):
    monkeypatch.delenv("SYNTHESIZE_API_KEY")  # the container has no auth
    monkeypatch.setenv("SYNTHESIZE_SELF_HOSTED", "1")
    monkeypatch.setenv(per_model_variable(model_id), container.url)
    body = pysynthbio.get_example_query(model_id)["example_query"]
    vendor = pysynthbio.predict_query(copy.deepcopy(body), model_id=model_id)
    ours = synthbio_pipeline.predict_query(copy.deepcopy(body), model_id=model_id)
    assert_same_frames(vendor, ours)
    raw = pysynthbio.predict_query(copy.deepcopy(body), model_id=model_id, raw_response=True)
    assert raw == synthbio_pipeline.predict_query(copy.deepcopy(body), model_id=model_id, raw_response=True)

    # The same body and seed through the hosted path: the same counts (GEM-2 predict-metadata
    # has none hosted; the container sends its decoder sample).
    monkeypatch.delenv("SYNTHESIZE_SELF_HOSTED")
    monkeypatch.delenv(per_model_variable(model_id))
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    assert example(hosted, model_id) == body  # the hosted emulator has seen the example's values too
    hosted_frames = pysynthbio.predict_query(copy.deepcopy(body), model_id=model_id, api_base_url=hosted.url)
    if model_id.startswith("gem-1") and "predict-metadata" in model_id:
        assert_same_frames(hosted_frames, vendor)
    elif "predict-metadata" in model_id:
        pd.testing.assert_frame_equal(vendor["metadata"], hosted_frames["metadata"], check_dtype=False)
        assert vendor["expression"].shape == (len(body["inputs"]["items"]), GENES)
    else:
        pd.testing.assert_frame_equal(vendor["expression"], hosted_frames["expression"])


def test_self_hosted_with_auth_sends_the_token_and_refuses_without(monkeypatch):
    with start_emulator(latency=0, genes=GENES, self_hosted=True, tokens=["container-key"]) as locked:
        monkeypatch.setenv("SYNTHESIZE_SELF_HOSTED", "yes")
        monkeypatch.setenv("SYNTHESIZE_API_BASE_URL__GEM_2", locked.url)
        monkeypatch.delenv("SYNTHESIZE_API_KEY")
        with pytest.raises(pysynthbio.AuthenticationError):
            pysynthbio.get_example_query("gem-2")
        monkeypatch.setenv("SYNTHESIZE_API_KEY", "container-key")
        body = pysynthbio.get_example_query("gem-2")["example_query"]
        frames = pysynthbio.predict_query(body, model_id="gem-2")
        assert frames["expression"].shape == (2, GENES)
        assert locked.stats()["streamed"] == 1


# --- the vendor's README, verbatim but for the import -----------------------------------------

# pysynthbio 4.2.4 README, "## Quickstart" (verbatim).
QUICKSTART = """\
import pysynthbio

# Set your API token (or use environment variable SYNTHESIZE_API_KEY)
pysynthbio.set_synthesize_token(use_keyring=True)

# Get an example query for the bulk RNA-seq baseline model
query = pysynthbio.get_example_query(model_id="gem-1-bulk")["example_query"]

# Generate synthetic expression data
result = pysynthbio.predict_query(query, model_id="gem-1-bulk")

# Access the results
metadata = result["metadata"]
expression = result["expression"]
"""

# pysynthbio 4.2.4 README, "## Hosted GEM-2 operations" (verbatim).
GEM2_EXAMPLE = """\
import pysynthbio

query = {
    "operation": "predict-expression",
    "inputs": {
        "modality": "bulk",
        "items": [{
            "metadata": {
                "sample_type": "primary tissue",
                "library_layout": "PAIRED",
                "library_selection": "cDNA",
                "tissue": "liver",
                "bioactive_entity_perturbations": [{"smiles": "CCO"}],
                "gene_perturbations": [],
                "infection_perturbations": [],
            },
            "num_samples": 1,
            "output_total": {"type": "custom", "value": 8478},
        }],
    },
    "options": {"seed": 42, "sampling_strategy": "mean estimation"},
}
result = pysynthbio.predict_query(query, model_id="gem-2")
"""

OUR_IMPORT = "import synthbio_pipeline as pysynthbio"


@pytest.fixture
def failing_keyring():
    """No usable keyring, as on a headless machine (``keyring.backends.fail.Keyring``)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


class Terminal(io.StringIO):
    """Standard input that is a terminal (a person can be asked)."""

    def isatty(self) -> bool:
        return True


def run_readme(code: str, *, ours: bool) -> dict:
    if ours:
        assert code.count("import pysynthbio\n") == 1
        code = code.replace("import pysynthbio\n", OUR_IMPORT + "\n")
    namespace: dict = {}
    exec(compile(code, "<pysynthbio README>", "exec"), namespace)
    return namespace


def test_the_readme_quickstart_and_gem2_example_run_with_only_the_import_changed(
    hosted, monkeypatch, failing_keyring, capsys
):
    monkeypatch.setenv("SYNTHESIZE_API_BASE_URL", hosted.url)
    monkeypatch.delenv("SYNTHESIZE_API_KEY")
    # set_synthesize_token(use_keyring=True) asks for the token: a person at a terminal types
    # it. (The vendor's client also opens a browser; ours never does.)
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": TOKEN)
    monkeypatch.setattr(pysynthbio.key_handlers.webbrowser, "open", lambda url: True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = run_readme(QUICKSTART, ours=True)
    assert any("not stored in the system keyring" in str(w.message) for w in caught)  # a warning, not a failure
    assert ours["pysynthbio"] is synthbio_pipeline
    assert ours["expression"].shape == (10, GENES) and ours["metadata"].shape[0] == 10

    monkeypatch.delenv("SYNTHESIZE_API_KEY")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        vendor = run_readme(QUICKSTART, ours=False)
    pd.testing.assert_frame_equal(ours["expression"], vendor["expression"], check_dtype=False)
    pd.testing.assert_frame_equal(ours["metadata"], vendor["metadata"], check_dtype=False)

    ours_gem2 = run_readme(GEM2_EXAMPLE, ours=True)
    vendor_gem2 = run_readme(GEM2_EXAMPLE, ours=False)
    assert_same_frames(vendor_gem2["result"], ours_gem2["result"])
    assert ours_gem2["result"]["expression"].shape == (1, GENES)
    assert ours_gem2["result"]["expression"].values.sum() == 8478
    assert ours_gem2["result"]["metadata"]["tissue"].tolist() == ["liver"]
    assert "source" not in ours_gem2["query"]  # ours leaves the caller's query alone
    assert vendor_gem2["query"]["source"] == "pysynthbio"
    assert TOKEN not in capsys.readouterr().out


def test_our_drop_in_lists_models_and_examples_like_the_vendors(hosted):
    assert synthbio_pipeline.list_models(hosted.url) == pysynthbio.list_models(api_base_url=hosted.url)
    for model_id in ("gem-2", "gem-2-bulk_autoencode", "gem-1-sc"):
        assert synthbio_pipeline.get_example_query(model_id, hosted.url) == pysynthbio.get_example_query(
            model_id, api_base_url=hosted.url
        )
    assert requests.get(f"{hosted.url}/api/models", timeout=10).status_code == 401


def test_every_id_the_emulator_serves_maps_to_the_operation_pysynthbio_formats_it_as():
    """One mapping: the id table agrees with the vendor client's own formatter choice."""
    from pysynthbio import gem2_output_transformers as vendor

    formatters = {
        "predict-expression": vendor.transform_gem2_expression,
        "predict-expression-from-reference": vendor.transform_gem2_expression,
        "predict-metadata": vendor.transform_gem2_metadata,
        "autoencode": vendor.transform_gem2_autoencode,
    }
    for model_id, row in GEM2_MODEL_IDS.items():
        for operation in [row.operation] if row.operation else list(formatters):
            assert vendor.gem2_output_transformer(model_id, {"operation": operation}) is formatters[operation], model_id
    assert vendor.gem2_output_transformer("gem-2-ensemble", {}) is None and "gem-2-ensemble" not in GEM2_MODEL_IDS
