"""rsynthbio's query functions and the local validation that runs before anything is sent."""

from __future__ import annotations

import copy

import pytest

from synthbio_pipeline import (
    QueryValidationError,
    get_valid_modalities,
    get_valid_modes,
    get_valid_query,
    validate_modality,
    validate_query,
)
from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS
from synthbio_pipeline.vocabulary.models import MODELS, get_model
from synthbio_pipeline.vocabulary.query import example_wire_query, query_problems, to_wire


def test_modalities_and_modes():
    assert get_valid_modalities() == ["bulk", "single-cell"]
    assert get_valid_modes("bulk") == ["sample generation", "mean estimation"]
    assert get_valid_modes("single-cell") == ["mean estimation"]
    with pytest.raises(QueryValidationError):
        get_valid_modes("spatial")


@pytest.mark.parametrize("modality", ["bulk", "single-cell"])
def test_example_queries_are_valid_and_independent_copies(modality):
    query = get_valid_query(modality)
    validate_query(query)
    validate_modality(query)
    query["inputs"][0]["metadata"]["sex"] = "female"
    assert get_valid_query(modality)["inputs"][0]["metadata"]["sex"] == "male"


def test_to_wire_moves_modality_to_the_path_and_mode_to_sampling_strategy():
    query = get_valid_query("bulk")
    query.update(total_count=5_000_000, deterministic_latents=True, some_future_field=[1])
    model_id, body = to_wire(query)
    assert model_id == "gem-1-bulk"
    assert body["sampling_strategy"] == "sample generation"
    assert "mode" not in body and "modality" not in body
    assert body["total_count"] == 5_000_000 and body["deterministic_latents"] is True
    assert body["some_future_field"] == [1]  # passed through; the server validates it
    assert body["source"] == "synthbio-pipeline"
    assert body["inputs"] == query["inputs"] and body["inputs"] is not query["inputs"]


def test_sampling_strategy_is_accepted_as_a_synonym_of_mode():
    query = get_valid_query("bulk")
    del query["mode"]
    query["sampling_strategy"] = "mean estimation"
    assert to_wire(query)[1]["sampling_strategy"] == "mean estimation"


def test_model_id_addresses_any_model_in_the_table():
    query = {
        "model_id": "gem-1-bulk_reference-conditioning",
        "mode": "mean estimation",
        "inputs": [{"counts": [1, 2], "metadata": {"perturbation_type": "crispr"}, "num_samples": 2}],
    }
    assert to_wire(query)[0] == "gem-1-bulk_reference-conditioning"


def test_an_unknown_model_id_is_passed_through_for_the_server_to_judge():
    query = {
        "model_id": "gem-9-bulk",
        "mode": "mean estimation",
        "inputs": [{"metadata": {"whatever_gem9_takes": 1}, "num_samples": 1}],
    }
    assert to_wire(query)[0] == "gem-9-bulk"


def test_a_gem2_id_gets_gem2s_checks_in_the_querys_own_words():
    query = {
        "model_id": "gem-2-bulk",
        "mode": "mean estimation",
        "inputs": [{"metadata": {"tissue": "liver"}, "num_samples": 1}],
    }
    model_id, body = to_wire(query)
    assert model_id == "gem-2-bulk" and body["sampling_strategy"] == "mean estimation"
    query["mode"] = "best guess"
    query["inputs"][0]["metadata"]["tissue_ontology_id"] = "UBERON:0002107"
    assert sorted(messages(query)) == ["inputs[0].metadata.tissue_ontology_id", "mode"]


def messages(query):
    return {problem.path: problem.message for problem in query_problems(query)}


def broken(base="bulk", **changes):
    query = get_valid_query(base)
    for path, value in changes.items():
        target = query
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
    return query


BAD_QUERIES = [
    (broken(modality="spatial"), "modality", "unknown modality"),
    (broken(modality=KeyError), "modality", "required"),
    (broken(modality="Bulk"), "modality", "did you mean 'bulk'"),
    (broken(mode="sample generation "), "mode", "unknown mode"),
    (broken(mode=KeyError), "mode", "required"),
    (broken("single-cell", mode="sample generation"), "mode", "not available for single-cell"),
    (broken(inputs=[]), "inputs", "non-empty"),
    (broken(inputs__0__num_samples=0), "inputs[0].num_samples", "at least 1"),
    (broken(inputs__0__num_samples=-1), "inputs[0].num_samples", "at least 1"),
    (broken(inputs__0__num_samples=2.5), "inputs[0].num_samples", "whole number"),
    (broken(inputs__1__num_samples="ten"), "inputs[1].num_samples", "whole number"),
    (broken(inputs__0__num_samples=True), "inputs[0].num_samples", "whole number"),
    (broken(inputs__0__num_samples=KeyError), "inputs[0].num_samples", "required"),
    (
        broken(inputs__0__metadata__tisue_ontology_id="UBERON:0002371"),
        "inputs[0].metadata.tisue_ontology_id",
        "did you mean 'tissue_ontology_id'",
    ),
    (
        broken(inputs__0__metadata__tissue_ontology_id="UBERON:123"),
        "inputs[0].metadata.tissue_ontology_id",
        "expected an UBERON id",
    ),
    (
        broken(inputs__0__metadata__cell_type_ontology_id="CL_0000786"),
        "inputs[0].metadata.cell_type_ontology_id",
        "Cell Ontology",
    ),
    (broken(inputs__0__metadata__disease_ontology_id="DOID:1612"), "inputs[0].metadata.disease_ontology_id", "MONDO"),
    (
        broken(inputs__0__metadata__cell_line_ontology_id="HeLa"),
        "inputs[0].metadata.cell_line_ontology_id",
        "Cellosaurus",
    ),
    (
        broken(inputs__0__metadata__perturbation_ontology_id="BRCA1"),
        "inputs[0].metadata.perturbation_ontology_id",
        "Ensembl",
    ),
    (
        broken(inputs__0__metadata__perturbation_dose="lots"),
        "inputs[0].metadata.perturbation_dose",
        "number and a unit",
    ),
    (broken(inputs__0__metadata__perturbation_time="24"), "inputs[0].metadata.perturbation_time", "number and a unit"),
    (broken(inputs__0__metadata__perturbation_type="knockout"), "inputs[0].metadata.perturbation_type", "not allowed"),
    (broken(inputs__0__metadata__sex="M"), "inputs[0].metadata.sex", "not allowed"),
    (broken(inputs__0__metadata__sample_type="tissue"), "inputs[0].metadata.sample_type", "not allowed"),
    (
        broken(inputs__0__metadata__library_layout="paired"),
        "inputs[0].metadata.library_layout",
        "did you mean 'PAIRED'",
    ),
    (broken(inputs__0__metadata__study="GSE1234"), "inputs[0].metadata.study", "BioProject"),
    (broken(inputs__0__metadata__age_years="old"), "inputs[0].metadata.age_years", "number of years"),
    (broken(inputs__0__metadata__age_years=-3), "inputs[0].metadata.age_years", "negative"),
    (broken(inputs__0__metadata=["sex", "male"]), "inputs[0].metadata", "mapping"),
    (broken(seed="11"), "seed", "whole number"),
    (broken(seed=1.5), "seed", "whole number"),
    (broken(total_count=0), "total_count", "at least 1"),
    (broken(total_count="1e7"), "total_count", "whole number"),
    (broken(deterministic_latents="yes"), "deterministic_latents", "true or false"),
]


@pytest.mark.parametrize("query, path, fragment", BAD_QUERIES, ids=[f"{p}:{f}" for _, p, f in BAD_QUERIES])
def test_each_bad_query_names_the_input_and_key(query, path, fragment):
    found = messages(query)
    assert path in found, found
    assert fragment in found[path]
    with pytest.raises(QueryValidationError) as caught:
        validate_query(query)
    assert path in str(caught.value)


def test_every_problem_is_reported_at_once():
    query = broken(seed="x", inputs__0__num_samples=0, inputs__1__metadata__sex="M")
    assert set(messages(query)) == {"seed", "inputs[0].num_samples", "inputs[1].metadata.sex"}


def test_valid_values_of_every_formatted_key_pass():
    good = {
        "cell_line_ontology_id": "CVCL_0030",
        "cell_type_ontology_id": "CL:0000786",
        "disease_ontology_id": "MONDO:0005015",
        "tissue_ontology_id": "UBERON:0001155",
        "perturbation_ontology_id": "ENSG00000156127",
        "perturbation_dose": "10 um",
        "perturbation_time": "24 hours",
        "perturbation_type": "crispr",
        "study": "PRJNA123456",
        "library_layout": "PAIRED",
        "age_years": "65",
        "sex": "female",
        "sample_type": "cell line",
    }
    for pert in ("CHEBI:16681", "CHEMBL1234567", "9606"):
        query = get_valid_query("bulk")
        query["inputs"][0]["metadata"] = dict(good, perturbation_ontology_id=pert)
        assert query_problems(query) == []
    assert set(good) <= set(METADATA_KEYS)


def test_not_a_mapping():
    assert query_problems([1, 2])[0].message.startswith("a query is a mapping")


@pytest.mark.parametrize("spec", [m for m in MODELS if m.kind == "baseline"], ids=lambda m: m.model_id)
def test_example_wire_query_per_baseline_model(spec):
    body = example_wire_query(spec.model_id)
    assert body["sampling_strategy"] in get_model(spec.model_id).modes
    assert all({"metadata", "num_samples"} <= set(item) for item in body["inputs"])


def test_validation_does_not_modify_the_query():
    query = broken(seed="x")
    before = copy.deepcopy(query)
    query_problems(query)
    assert query == before
