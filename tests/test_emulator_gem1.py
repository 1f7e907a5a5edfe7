"""The emulator's other GEM-1 models: reference conditioning and metadata prediction.

Validation (the vocabulary's checks, given the emulator's gene count), the example queries,
the plausibility rules (a reference moved by its perturbation; metadata prediction recovering
what the generator used), and speed at the real gene count.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import requests
from conftest import EMULATOR_TOKEN

from synthbio_pipeline.emulator import annotate, generate, reference
from synthbio_pipeline.vocabulary.models import BULK, MEAN_ESTIMATION, SAMPLE_GENERATION, SINGLE_CELL, get_model
from synthbio_pipeline.vocabulary.query import example_wire_query, query_problems, wire_problems

AUTH = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}
RC_BULK, RC_SC = "gem-1-bulk_reference-conditioning", "gem-1-sc_reference-conditioning"
PM_BULK, PM_SC = "gem-1-bulk_predict-metadata", "gem-1-sc_predict-metadata"
TP53 = "ENSG00000141510"
LIVER = {"tissue_ontology_id": "UBERON:0002107", "sex": "female", "sample_type": "primary tissue"}
BRAIN = {"tissue_ontology_id": "UBERON:0000955", "sex": "male", "sample_type": "primary tissue"}


# --- helpers -------------------------------------------------------------------------------


def post(emulator, model_id, body):
    return requests.post(f"{emulator.url}/api/models/{model_id}/predict", json=body, headers=AUTH, timeout=30)


def run(emulator, model_id, body, timeout=60.0) -> dict:
    """Submit, wait and download: the result document."""
    answer = post(emulator, model_id, body)
    assert answer.status_code == 200, answer.text
    query_id = answer.json()["modelQueryId"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = requests.get(f"{emulator.url}/api/model-queries/{query_id}/status", headers=AUTH, timeout=10).json()
        if state["status"] in ("ready", "failed"):
            assert state["status"] == "ready", state
            return requests.get(state["downloadUrl"], timeout=30).json()
        time.sleep(0.05)
    raise AssertionError(f"query {query_id} not ready after {timeout} s")


def refusals(emulator, model_id, body) -> dict[str, list[str]]:
    """The 422's problems, path -> messages."""
    answer = post(emulator, model_id, body)
    assert answer.status_code == 422, answer.text
    found: dict[str, list[str]] = {}
    for error in answer.json()["errors"]:
        found.setdefault(error["path"], []).append(error["message"])
    return found


def example(emulator, model_id) -> dict:
    answer = requests.get(f"{emulator.url}/api/models/{model_id}/example-query", headers=AUTH, timeout=10)
    assert answer.status_code == 200
    return answer.json()["example_query"]


def typical(metadata, genes, modality=BULK, total=10_000_000) -> list[int]:
    return generate.expected_counts(metadata, modality, total, genes).tolist()


def rc_body(counts, metadata, *, num_samples=3, strategy=MEAN_ESTIMATION, **options) -> dict:
    return {
        "sampling_strategy": strategy,
        "seed": 3,
        "inputs": [{"counts": counts, "metadata": metadata, "num_samples": num_samples}],
        **options,
    }


def rc_samples(counts, metadata, genes, model_id=RC_BULK, **options) -> list[generate.Sample]:
    plan = reference.plan_query(model_id, rc_body(counts, metadata, **options))
    return list(plan.samples(genes))


def log2_cpm(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return np.log2(counts / counts.sum() * 1e6 + 1)


# --- validation ----------------------------------------------------------------------------


def test_a_counts_vector_of_the_wrong_length_is_refused_naming_both_lengths(emulator):
    body = rc_body(typical(LIVER, 199), {"perturbation_type": "control"})
    (message,) = refusals(emulator, RC_BULK, body)["inputs[0].counts"]
    assert "has 199 counts but the model has 200 genes" in message and "gene order" in message
    body = {"inputs": [{"counts": typical(LIVER, 200)}, {"counts": typical(LIVER, 201)}]}
    assert list(refusals(emulator, PM_BULK, body)) == ["inputs[1].counts"]
    assert emulator.stats()["submissions"] == {}


def test_negative_and_fractional_counts_are_refused_and_whole_floats_accepted(emulator):
    counts = typical(LIVER, 200)
    negative, fractional, whole = list(counts), list(counts), [float(x) for x in counts]
    negative[7], negative[9] = -3, -1
    fractional[11] = 2.5
    found = refusals(emulator, PM_BULK, {"inputs": [{"counts": negative}, {"counts": fractional}]})
    assert found["inputs[0].counts"] == ["counts[7] = -3 is negative; counts are never negative (2 of 200 values are)"]
    (message,) = found["inputs[1].counts"]
    assert message.startswith("counts[11] = 2.5 is not a whole number")
    assert post(emulator, PM_BULK, {"inputs": [{"counts": whole}]}).status_code == 200
    wrapped = {"inputs": [{"counts": {"counts": counts}}]}  # rsynthbio's named-list form
    assert post(emulator, PM_BULK, wrapped).status_code == 200


@pytest.mark.parametrize(
    "counts, fragment",
    [
        ("1,2,3", "must be a list of counts"),
        ([], "is empty"),
        ([0] * 200, "all zeros"),
        ([1] * 199 + ["7"], "counts[199] = '7' is not a number"),
        ([1] * 199 + [True], "counts[199] = True is not a number"),
    ],
    ids=["text", "empty", "zeros", "string", "boolean"],
)
def test_counts_that_are_not_counts_are_refused(emulator, counts, fragment):
    (message,) = refusals(emulator, PM_BULK, {"inputs": [{"counts": counts}]})["inputs[0].counts"]
    assert fragment in message


def test_a_biological_or_technical_key_on_a_reference_input_is_refused_as_inferred(emulator):
    metadata = {"perturbation_type": "crispr", "tissue_ontology_id": "UBERON:0002107", "library_layout": "PAIRED"}
    found = refusals(emulator, RC_BULK, rc_body(typical(LIVER, 200), metadata))
    assert set(found) == {"inputs[0].metadata.tissue_ontology_id", "inputs[0].metadata.library_layout"}
    (message,) = found["inputs[0].metadata.tissue_ontology_id"]
    assert message.startswith("a biological key: gem-1-bulk_reference-conditioning infers it from the reference")
    assert "perturbation_ontology_id" in message
    assert found["inputs[0].metadata.library_layout"][0].startswith("a technical key")
    # A perturbation value of the wrong format is checked as on a baseline query.
    found = refusals(emulator, RC_BULK, rc_body(typical(LIVER, 200), {"perturbation_ontology_id": "TP53"}))
    assert "Ensembl" in found["inputs[0].metadata.perturbation_ontology_id"][0]


def test_single_cell_reference_conditioning_takes_mean_estimation_only(emulator):
    body = rc_body(typical(LIVER, 200, SINGLE_CELL, 10_000), {}, strategy=SAMPLE_GENERATION)
    (message,) = refusals(emulator, RC_SC, body)["sampling_strategy"]
    assert "not available for single-cell (gem-1-sc_reference-conditioning)" in message
    body["sampling_strategy"] = MEAN_ESTIMATION
    assert post(emulator, RC_SC, body).status_code == 200


def test_reference_options_and_input_keys_are_checked(emulator):
    body = rc_body(typical(LIVER, 200), {}, conditioning=["biologcal"], fixed_total_count="yes")
    body["inputs"][0]["reference"] = "sample_1"
    found = refusals(emulator, RC_BULK, body)
    assert "did you mean 'biological'" in found["conditioning"][0]
    assert found["fixed_total_count"] == ["must be true or false, not 'yes'"]
    assert found["inputs[0].reference"][0].startswith("not taken by gem-1-bulk_reference-conditioning")
    body = {"inputs": [{"counts": typical(LIVER, 200), "metadata": LIVER, "num_samples": 2}]}
    assert set(refusals(emulator, PM_BULK, body)) == {"inputs[0].metadata", "inputs[0].num_samples"}
    missing = rc_body(typical(LIVER, 200), {})
    del missing["inputs"][0]["counts"]
    assert refusals(emulator, RC_BULK, missing) == {"inputs[0].counts": ["required"]}


def test_the_client_checks_what_it_can_without_the_gene_order():
    """Client and emulator share the checks; only the emulator knows the length to expect."""
    body = rc_body([1, -2, 3], {"sex": "male"})
    client = query_problems({"model_id": RC_BULK, **body})
    assert [p.path for p in client] == ["inputs[0].counts", "inputs[0].metadata.sex"]
    assert wire_problems(RC_BULK, body) == client
    assert [p.path for p in wire_problems(RC_BULK, body, genes=200)] == [
        "inputs[0].counts",
        "inputs[0].counts",
        "inputs[0].metadata.sex",
    ]
    assert query_problems({"model_id": RC_BULK, **rc_body([1, 2, 3], {})}, genes=3) == []


# --- example queries -------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", [RC_BULK, RC_SC, PM_BULK, PM_SC])
def test_example_queries_carry_counts_of_the_emulators_gene_length_and_run(emulator, model_id):
    spec = get_model(model_id)
    query = example(emulator, model_id)
    assert wire_problems(model_id, query, genes=200) == []
    assert all(len(item["counts"]) == 200 and set(item) == set(spec.input_keys) for item in query["inputs"])
    libraries = {sum(item["counts"]) for item in query["inputs"]}
    assert libraries == {spec.default_total_count}
    if spec.kind == "reference-conditioning":
        assert query["conditioning"] == ["biological", "technical"] and query["fixed_total_count"] is False
        assert query["sampling_strategy"] == spec.default_mode
        assert query["inputs"][0]["metadata"]["perturbation_ontology_id"] == TP53
    result = run(emulator, model_id, query)
    samples = sum(item.get("num_samples", 1) for item in query["inputs"])
    assert len(result["outputs"]) == samples and len(result["gene_order"]) == 200


# --- reference conditioning ------------------------------------------------------------------


@pytest.mark.parametrize("perturbation_type, direction", [("crispr", -1), ("shrna", -1), ("overexpression", 1)])
def test_a_gene_perturbation_moves_its_target_gene(perturbation_type, direction):
    genes = 2000
    target = generate.gene_order(genes).index(TP53)
    counts = typical(LIVER, genes)
    metadata = {"perturbation_ontology_id": TP53, "perturbation_type": perturbation_type}
    for sample in rc_samples(counts, metadata, genes, strategy=SAMPLE_GENERATION, num_samples=4):
        change = log2_cpm(sample.counts) - log2_cpm(counts)
        assert direction * change[target] > 2.0
        # Among the genes moved most in that direction (the compound-like effects move others too).
        assert (direction * change > direction * change[target]).sum() < 0.02 * genes


@pytest.mark.parametrize("perturbation_type", ["crispr", "shrna", "overexpression", "compound"])
def test_a_baseline_condition_aimed_at_a_gene_moves_that_gene(perturbation_type):
    """Not only from a reference: a baseline row knocking TP53 out has (almost) no TP53 left;
    a compound named by a gene id aims at nothing."""
    genes = 2000
    tables = generate.gene_tables(genes)
    target = tables.index[TP53]
    control = generate.condition(tables, {"perturbation_type": "control", **LIVER})
    aimed = generate.condition(
        tables, {"perturbation_type": perturbation_type, "perturbation_ontology_id": TP53, **LIVER}
    )
    change = aimed.log_profile - control.log_profile
    moved_by_sets = change.copy()
    for key, value in {"perturbation_type": perturbation_type, "perturbation_ontology_id": TP53}.items():
        sets, lfc = generate.pair_effect(genes, key, value)
        moved_by_sets[sets] -= lfc
    expected = generate.TARGET_EFFECT.get(perturbation_type, 0.0)
    assert moved_by_sets[target] == pytest.approx(expected)
    assert np.allclose(np.delete(moved_by_sets, target), 0.0)


def test_a_crispr_reference_query_over_http_drops_tp53_in_every_sample(emulator):
    counts = typical(LIVER, 200)
    result = run(emulator, RC_BULK, rc_body(counts, {"perturbation_ontology_id": TP53, "perturbation_type": "crispr"}))
    target = result["gene_order"].index(TP53)
    for output in result["outputs"]:
        assert output["counts"][target] < 0.1 * counts[target]
        assert output["metadata"] == {"perturbation_ontology_id": TP53, "perturbation_type": "crispr"}
        assert set(output["latents"]) == {"biological", "technical", "perturbation"}


def test_a_compound_moves_a_fixed_gene_set_seeded_by_its_id():
    """The output's change over the reference is the compound's generator effect, on any reference."""
    genes = 2000
    compound = {"perturbation_ontology_id": "CHEBI:27899", "perturbation_type": "compound"}
    expected = np.zeros(genes)
    for key, value in compound.items():
        moved, lfc = generate.pair_effect(genes, key, value)
        expected[moved] += lfc / np.log(2)
    for metadata in (LIVER, BRAIN):
        counts = typical(metadata, genes)
        (sample,) = rc_samples(counts, compound, genes, num_samples=1, deterministic_latents=True)
        expressed = np.asarray(counts) > 200
        change = log2_cpm(sample.counts) - log2_cpm(counts)
        assert np.corrcoef(change[expressed], expected[expressed])[0, 1] > 0.95
    other = rc_samples(counts, dict(compound, perturbation_ontology_id="CHEMBL25"), genes, num_samples=1)[0]
    change = log2_cpm(other.counts) - log2_cpm(counts)
    assert np.corrcoef(change[expressed], expected[expressed])[0, 1] < 0.6


def test_a_control_or_a_perturbation_taken_from_the_reference_leaves_the_profile_as_it_is():
    genes = 2000
    counts = typical(BRAIN, genes)
    knockout = {"perturbation_ontology_id": TP53, "perturbation_type": "crispr"}
    control = rc_samples(counts, {"perturbation_type": "control"}, genes, num_samples=1, deterministic_latents=True)
    kept = rc_samples(
        counts,
        knockout,
        genes,
        num_samples=1,
        deterministic_latents=True,
        conditioning=["biological", "technical", "perturbation"],
    )
    expressed = np.asarray(counts) > 200
    for (sample,) in (control, kept):
        change = np.abs(log2_cpm(sample.counts) - log2_cpm(counts))[expressed]
        assert np.quantile(change, 0.99) < 0.1 and change.max() < 0.5
    (knocked,) = rc_samples(counts, knockout, genes, num_samples=1, deterministic_latents=True)
    change = np.abs(log2_cpm(knocked.counts) - log2_cpm(counts))[expressed]
    assert np.quantile(change, 0.99) > 1.0


def test_a_latent_space_left_out_of_conditioning_is_drawn_afresh():
    genes = 2000
    counts = typical(LIVER, genes)

    def spread(conditioning):
        samples = rc_samples(counts, {}, genes, num_samples=6, conditioning=conditioning)
        return np.mean([np.std(log2_cpm(s.counts) - log2_cpm(counts)) for s in samples])

    assert spread(["technical"]) > 1.5 * spread(["biological", "technical"])


def test_library_size_is_the_references_unless_fixed_total_count():
    genes = 500
    counts = typical(LIVER, genes, total=3_000_000)
    for sample in rc_samples(counts, {"perturbation_type": "crispr", "perturbation_ontology_id": TP53}, genes):
        assert sample.counts.sum() == 3_000_000  # mean estimation: exact
    noisy = rc_samples(counts, {}, genes, strategy=SAMPLE_GENERATION, num_samples=4)
    assert all(abs(sample.counts.sum() / 3_000_000 - 1) < 0.1 for sample in noisy)
    fixed = rc_samples(counts, {}, genes, fixed_total_count=True, total_count=20_000)
    assert {int(sample.counts.sum()) for sample in fixed} == {20_000}
    default = rc_samples(counts, {}, genes, fixed_total_count=True)
    assert {int(sample.counts.sum()) for sample in default} == {10_000_000}


def test_each_input_keeps_its_own_reference_and_the_seed_reproduces(emulator):
    liver, brain = typical(LIVER, 200, total=2_000_000), typical(BRAIN, 200, total=5_000_000)
    body = {
        "sampling_strategy": SAMPLE_GENERATION,
        "seed": 9,
        "inputs": [
            {"counts": liver, "metadata": {"perturbation_type": "control"}, "num_samples": 2},
            {"counts": brain, "metadata": {"perturbation_type": "control"}, "num_samples": 2},
        ],
    }
    first, second = run(emulator, RC_BULK, body), run(emulator, RC_BULK, copy.deepcopy(body))
    assert [o["counts"] for o in first["outputs"]] == [o["counts"] for o in second["outputs"]]
    profiles = [log2_cpm(output["counts"]) for output in first["outputs"]]
    for profile, own, other in zip(profiles, [liver, liver, brain, brain], [brain, brain, liver, liver]):
        distance = {
            name: np.mean((profile - log2_cpm(counts)) ** 2) for name, counts in (("own", own), ("other", other))
        }
        assert distance["own"] < 0.5 * distance["other"], distance
    assert first["emulator"]["library_sizes"] == [2_000_000, 5_000_000]


def test_single_cell_reference_results_are_sparse_with_the_references_library(make_emulator):
    emulator = make_emulator(genes=1000)
    counts = typical(LIVER, 1000, SINGLE_CELL, 8_000)
    result = run(emulator, RC_SC, rc_body(counts, {"perturbation_type": "control"}, num_samples=2))
    for output in result["outputs"]:
        assert isinstance(output["counts"], dict) and 0 < len(output["counts"]) < 1000
        assert sum(output["counts"].values()) == 8_000


# --- metadata prediction ---------------------------------------------------------------------


CONDITIONS = [
    LIVER,
    BRAIN | {"disease_ontology_id": "MONDO:0004975"},
    {
        "cell_line_ontology_id": "CVCL_0023",
        "sample_type": "cell line",
        "perturbation_ontology_id": "CHEBI:27899",
        "perturbation_type": "compound",
    },
    {"tissue_ontology_id": "UBERON:0002371", "cell_type_ontology_id": "CL:0000786", "sex": "male"},
]


def generated(modality, genes, per_condition=8):
    strategy = SAMPLE_GENERATION if modality == BULK else MEAN_ESTIMATION
    total = get_model("gem-1-bulk" if modality == BULK else "gem-1-sc").default_total_count
    plan = generate.Plan("x", modality, strategy, total, 4, True, False, tuple((c, per_condition) for c in CONDITIONS))
    counts = np.vstack([sample.counts for sample in generate.generate_samples(plan, genes)])
    seen = annotate.SeenValues()
    for metadata in CONDITIONS:
        seen.add(metadata)
    return counts, annotate.predict(generate.gene_tables(genes), counts, modality, annotate.candidates(seen.snapshot()))


def round_trip(predictions, per_condition, shift=0):
    """(share of top predictions equal to the request, mean probability of the requested value),
    over every requested field, comparing condition i's samples with condition i+shift's request."""
    hits, probabilities = [], []
    for index, request in enumerate(CONDITIONS):
        asked = CONDITIONS[(index + shift) % len(CONDITIONS)]
        for prediction in predictions[index * per_condition : (index + 1) * per_condition]:
            for key, value in asked.items():
                if key in request or shift:
                    hits.append(prediction.metadata[key] == value)
                    probabilities.append(prediction.probabilities[key][value])
    return np.mean(hits), np.mean(probabilities)


@pytest.mark.parametrize("modality, high", [(BULK, 0.95), (SINGLE_CELL, 0.8)])
def test_round_trip_reads_high_on_generated_samples_and_low_when_swapped(modality, high):
    counts, predictions = generated(modality, 3000)
    share, probability = round_trip(predictions, 8)
    assert share >= high and probability >= high - 0.15
    swapped_share, swapped_probability = round_trip(predictions, 8, shift=1)
    assert swapped_share < 0.5 and swapped_probability < 0.5
    # Tissue, the strongest field, is never confused.
    for index, request in enumerate(CONDITIONS):
        if "tissue_ontology_id" in request:
            for prediction in predictions[index * 8 : (index + 1) * 8]:
                assert prediction.metadata["tissue_ontology_id"] == request["tissue_ontology_id"]


def test_predictions_have_the_documented_shape():
    counts, predictions = generated(BULK, 1000, per_condition=2)
    fields = list(annotate.candidates({key: [value] for c in CONDITIONS for key, value in c.items()}))
    for row, prediction in zip(counts, predictions):
        assert list(prediction.metadata) == list(prediction.probabilities) == fields
        for key, probs in prediction.probabilities.items():
            assert abs(sum(probs.values()) - 1) < 1e-4
            assert max(probs, key=probs.get) == annotate.label(prediction.metadata[key])
        shapes = {group: vector.shape for group, vector in prediction.latents.items()}
        assert shapes == dict.fromkeys(generate.LATENT_GROUPS, (generate.LATENT_DIM,))
        assert prediction.decoder_counts.sum() == row.sum() and prediction.decoder_counts.dtype == np.int64
        assert np.corrcoef(log2_cpm(prediction.decoder_counts), log2_cpm(row))[0, 1] > 0.9


def test_prediction_over_http_recovers_the_values_the_emulator_was_sent(emulator):
    """A value is a candidate once the emulator has seen it: an unusual tissue is predicted after a
    baseline query used it, and the round trip closes through the API."""
    unusual = {"tissue_ontology_id": "UBERON:0001988", "sex": "female"}  # feces: not a known value
    assert "UBERON:0001988" not in annotate.candidates()["tissue_ontology_id"]
    baseline = run(
        emulator,
        "gem-1-bulk",
        {"sampling_strategy": MEAN_ESTIMATION, "seed": 2, "inputs": [{"metadata": unusual, "num_samples": 3}]},
    )
    inputs = [{"counts": output["counts"]} for output in baseline["outputs"]]
    result = run(emulator, PM_BULK, {"inputs": inputs})
    assert len(result["outputs"]) == 3
    for output, sample in zip(result["outputs"], inputs):
        assert output["metadata"]["tissue_ontology_id"] == "UBERON:0001988"
        assert output["metadata"]["sex"] == "female"
        assert output["classifier_probs"]["tissue_ontology_id"]["UBERON:0001988"] > 0.9
        assert sum(output["decoder_sample"]["counts"]) == sum(sample["counts"])
        assert set(output["latents"]) == {"biological", "technical", "perturbation"}


def test_seen_values_are_kept_once_per_value_and_only_for_known_keys():
    seen = annotate.SeenValues()
    seen.add({"tissue_ontology_id": "UBERON:0001988", "age_years": 65, "nonsense": "x", "sex": None})
    seen.add({"tissue_ontology_id": "UBERON:0001988", "age_years": 65.5})
    seen.add("not a mapping")
    assert seen.snapshot() == {"tissue_ontology_id": ["UBERON:0001988"], "age_years": [65, 65.5]}
    fields = annotate.candidates(seen.snapshot())
    assert fields["sex"] == ["male", "female"] and fields["age_years"] == [65, 65.5]
    assert fields["tissue_ontology_id"].count("UBERON:0001988") == 1
    assert "study" not in fields  # nothing to choose from


# --- speed at the real gene count --------------------------------------------------------------


def test_reference_conditioning_and_prediction_are_fast_at_44590_genes(tmp_path):
    genes = generate.DEFAULT_GENES
    generate.gene_tables(genes)
    baseline = example_wire_query("gem-1-bulk")
    baseline["inputs"] = [dict(item, num_samples=2) for item in baseline["inputs"]]
    started = time.perf_counter()
    generate.write_result(tmp_path / "baseline.json", generate.plan_query("gem-1-bulk", baseline), genes=genes)
    baseline_seconds = time.perf_counter() - started

    query = example_wire_query(RC_BULK, lambda metadata: typical(metadata, genes))
    started = time.perf_counter()
    generate.write_result(tmp_path / "reference.json", reference.plan_query(RC_BULK, query), genes=genes)
    reference_seconds = time.perf_counter() - started
    assert reference_seconds < 2 * baseline_seconds + 1.0, (reference_seconds, baseline_seconds)

    samples = [typical(CONDITIONS[i % 4], genes) for i in range(100)]
    started = time.perf_counter()
    annotate.write_result(
        tmp_path / "predicted.json", PM_BULK, {"inputs": [{"counts": c} for c in samples]}, genes=genes
    )
    assert time.perf_counter() - started < 15.0  # a few seconds on an idle machine
