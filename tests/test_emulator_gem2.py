"""The emulator's GEM-2: every id and operation over real HTTP, its checks, releases, the
plausibility of its numbers, and self-hosted mode (Arrow streams)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import requests
from conftest import EMULATOR_TOKEN

from synthbio_pipeline.emulator import gem2, generate
from synthbio_pipeline.emulator.self_hosted import BATCH_BYTES
from synthbio_pipeline.vocabulary.families import GEM2_MODEL_IDS, GEM2_OPERATION_BY_NAME
from synthbio_pipeline.vocabulary.gem2 import gem2_problems
from synthbio_pipeline.vocabulary.models import MEAN_ESTIMATION, SAMPLE_GENERATION
from synthbio_pipeline.vocabulary.query import query_problems, wire_problems

AUTH = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}
GENES = 200
ARROW = "application/vnd.apache.arrow.stream"


# --- helpers -------------------------------------------------------------------------------


def post(emulator, model_id, body, headers=AUTH):
    return requests.post(f"{emulator.url}/api/models/{model_id}/predict", json=body, headers=headers, timeout=30)


def run(emulator, model_id, body) -> dict:
    """Submit, wait, download: the result document."""
    answer = post(emulator, model_id, body)
    assert answer.status_code == 200, answer.text
    query_id = answer.json()["modelQueryId"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        payload = requests.get(f"{emulator.url}/api/model-queries/{query_id}/status", headers=AUTH, timeout=10).json()
        if payload["status"] == "ready":
            return requests.get(payload["downloadUrl"], timeout=10).json()
        assert payload["status"] != "failed", payload
        time.sleep(0.05)
    raise AssertionError("not ready in time")


def example(emulator, model_id) -> dict:
    answer = requests.get(f"{emulator.url}/api/models/{model_id}/example-query", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["example_query"]


def expression_body(metadata, *, num_samples=1, seed=5, strategy=MEAN_ESTIMATION, total=None, modality="bulk"):
    item = {"metadata": metadata, "num_samples": num_samples}
    if total is not None:
        item["output_total"] = {"type": "custom", "value": total}
    return {
        "operation": "predict-expression",
        "inputs": {"modality": modality, "items": [item]},
        "options": {"seed": seed, "sampling_strategy": strategy},
    }


def counts_of(result) -> np.ndarray:
    return np.array([output["counts"] for output in result["outputs"]], dtype=np.int64)


LIVER = {"tissue": "liver", "sample_type": "primary tissue", "library_layout": "PAIRED", "library_selection": "cDNA"}


# --- ids, examples, result shapes -----------------------------------------------------------


def test_every_gem2_id_is_listed_with_what_it_runs(emulator):
    models = requests.get(f"{emulator.url}/api/models", headers=AUTH, timeout=10).json()["models"]
    listed = {model["model_id"]: model for model in models if model["family"] == "gem-2"}
    assert set(listed) == set(GEM2_MODEL_IDS) and len(listed) == 31
    assert listed["gem-2"]["operation"] is None and listed["gem-2"]["modality"] is None
    assert listed["gem-2-sc_metadata-ensemble"] == {
        "model_id": "gem-2-sc_metadata-ensemble",
        "family": "gem-2",
        "modality": "single-cell",
        "operation": "predict-metadata",
        "ensemble": True,
    }
    assert listed["gem-2-bulk_reference-conditioning-x4s7hdmu"]["member"] == "x4s7hdmu"
    assert listed["gem-2-bulk_reference-conditioning-x4s7hdmu"]["operation"] == "predict-expression-from-reference"


OUTPUT_KEYS = {
    "predict-expression": {"counts", "metadata", "latents"},
    "predict-expression-from-reference": {"counts", "metadata", "latents"},
    "predict-metadata": {"predicted_metadata", "classifier_probabilities", "latents"},
    "autoencode": {"counts", "metadata", "model_release_id", "vae_run_id"},
}
LATENT_NAMES = {
    "predict-expression": {"generated"},
    "predict-expression-from-reference": {"z_ref", "z_target", "z_displacement"},
    "predict-metadata": {"encoded"},
}


@pytest.mark.parametrize("model_id", sorted(GEM2_MODEL_IDS))
def test_every_example_query_runs_and_answers_in_its_operations_shape(emulator, model_id):
    body = example(emulator, model_id)
    row = GEM2_MODEL_IDS[model_id]
    operation = row.operation or body["operation"]
    assert body["operation"] == operation
    assert row.modality in (None, body["inputs"]["modality"])
    assert gem2_problems(model_id, body, n_genes=GENES) == []
    result = run(emulator, model_id, body)
    spec = GEM2_OPERATION_BY_NAME[operation]
    expected = sum(item.get("num_samples", 1) for item in body["inputs"]["items"])
    assert len(result["outputs"]) == expected
    assert result["gene_order"] == list(generate.gene_order(GENES))
    assert result["release"] == result["model_version"] == gem2.DEFAULT_RELEASE
    for output in result["outputs"]:
        assert set(output) == OUTPUT_KEYS[operation]
        if "counts" in output:
            assert len(output["counts"]) == GENES and all(type(c) is int and c >= 0 for c in output["counts"])
        if "latents" in output:
            assert set(output["latents"]) == LATENT_NAMES[operation]
    if spec.result_kind == "gem-2-autoencode":
        assert {o["model_release_id"] for o in result["outputs"]} == {gem2.DEFAULT_RELEASE}
        assert {o["vae_run_id"] for o in result["outputs"]} == {gem2.vae_run_id(gem2.DEFAULT_RELEASE)}
    if operation == "predict-metadata":
        (output,) = result["outputs"]
        assert set(output["predicted_metadata"]) == set(gem2.CLASSIFIED)
        for name, probabilities in output["classifier_probabilities"].items():
            assert set(probabilities) == set(gem2.CLASSIFIED[name])
            assert abs(sum(probabilities.values()) - 1) < 1e-3
            assert output["predicted_metadata"][name] == max(probabilities, key=probabilities.get)


def test_unknown_gem2_ids_are_404(emulator):
    for model_id in ("gem-2-ensemble", "gem-2_baseline", "gem-2-bulk_reference-conditioning-zzz", "gem-2-tissue"):
        assert post(emulator, model_id, {"inputs": []}).status_code == 404
        assert requests.get(f"{emulator.url}/api/models/{model_id}/example-query", headers=AUTH).status_code == 404


@pytest.mark.parametrize("model_id", ["gem-2-bulk", "gem-2-sc_reference-conditioning", "gem-2-bulk_metadata"])
def test_a_compatibility_id_takes_the_gem1_shaped_empty_body_of_pysynthbios_tests(emulator, model_id):
    result = run(emulator, model_id, {"inputs": [], "source": "pysynthbio"})
    assert result["outputs"] == []
    assert result["emulator"]["operation"] == GEM2_MODEL_IDS[model_id].operation


def test_a_gem1_shaped_body_gives_what_the_gem2_shaped_body_gives(emulator):
    metadata = dict(LIVER, bioactive_entity_perturbations=[{"entity": "ethanol"}])
    gem1_shaped = {
        "inputs": [{"metadata": metadata, "num_samples": 2}],
        "seed": 9,
        "sampling_strategy": SAMPLE_GENERATION,
        "total_count": 500_000,
    }
    gem2_shaped = expression_body(metadata, num_samples=2, seed=9, strategy=SAMPLE_GENERATION, total=500_000)
    via_id = run(emulator, "gem-2-bulk_baseline", gem1_shaped)
    canonical = run(emulator, "gem-2", gem2_shaped)
    assert via_id["outputs"] == canonical["outputs"]
    assert counts_of(via_id).sum(axis=1).tolist() != [500_000, 500_000]  # sample generation: noisy totals
    ensemble = run(emulator, "gem-2-bulk-ensemble", {k: v for k, v in gem2_shaped.items() if k != "operation"})
    assert ensemble["outputs"] == canonical["outputs"]


# --- validation --------------------------------------------------------------------------------


def bad_bodies():
    good = expression_body(dict(LIVER, bioactive_entity_perturbations=[{"smiles": "CCO"}]))

    def changed(change, body=good):
        body = copy.deepcopy(body)
        change(body)
        return body

    items = lambda b: b["inputs"]["items"]
    return [
        ("gem-2", changed(lambda b: b.pop("operation")), ["operation"]),
        ("gem-2", changed(lambda b: b.update(operation="predict-expresion")), ["operation"]),
        ("gem-2", changed(lambda b: b["inputs"].update(modality="sc")), ["inputs.modality"]),
        ("gem-2", {"inputs": []}, ["inputs"]),
        ("gem-2", changed(lambda b: b.update(seed=1)), ["seed"]),
        ("gem-2", changed(lambda b: b["options"].update(sampling_strategy="best")), ["options.sampling_strategy"]),
        (
            "gem-2",
            changed(
                lambda b: (
                    b["inputs"].update(modality="single-cell")
                    or b["options"].update(sampling_strategy=SAMPLE_GENERATION)
                )
            ),
            ["options.sampling_strategy"],
        ),
        (
            "gem-2",
            changed(
                lambda b: items(b)[0]["metadata"].update(
                    bioactive_entity_perturbations=[{"smiles": "CCO", "entity": "x"}]
                )
            ),
            ["inputs.items[0].metadata.bioactive_entity_perturbations[0]"],
        ),
        (
            "gem-2",
            changed(
                lambda b: items(b)[0]["metadata"].update(bioactive_entity_perturbations=[{}, "CCO", {"smiles": "C C"}])
            ),
            [
                "inputs.items[0].metadata.bioactive_entity_perturbations[0]",
                "inputs.items[0].metadata.bioactive_entity_perturbations[1]",
                "inputs.items[0].metadata.bioactive_entity_perturbations[2].smiles",
            ],
        ),
        (
            "gem-2",
            changed(
                lambda b: items(b)[0]["metadata"].update(tissue_ontology_id="UBERON:0002107", gene_perturbations="TP53")
            ),
            ["inputs.items[0].metadata.tissue_ontology_id", "inputs.items[0].metadata.gene_perturbations"],
        ),
        (
            "gem-2",
            changed(lambda b: items(b)[0].update(num_samples=0, output_total={"type": "fixed", "value": 0})),
            ["inputs.items[0].num_samples", "inputs.items[0].output_total.type", "inputs.items[0].output_total.value"],
        ),
        ("gem-2", changed(lambda b: b.update(release="")), ["release"]),
        (
            "gem-2-bulk_autoencode",
            {"operation": "predict-metadata", "inputs": {"modality": "bulk", "items": []}},
            ["operation"],
        ),
        ("gem-2-sc", changed(lambda b: b["options"].pop("sampling_strategy")), ["inputs.modality"]),
        (
            "gem-2-bulk_autoencode",
            {"inputs": [{"counts": [1, 2.5, *[1] * (GENES - 2)]}], "sampling_strategy": MEAN_ESTIMATION},
            ["sampling_strategy", "inputs[0].counts"],
        ),
        (
            "gem-2-sc_predict-metadata",
            {"inputs": [{"counts": [1] * GENES, "num_samples": 2}]},
            ["inputs[0].num_samples"],
        ),
        (
            "gem-2-bulk_reference-conditioning",
            {"inputs": [{"counts": [1, 2, 3], "num_samples": 1}]},
            ["inputs[0].counts"],
        ),
        (
            "gem-2-bulk",
            {"inputs": [{"metadata": {}, "num_samples": 1}], "deterministic_latents": True},
            ["deterministic_latents"],
        ),
    ]


BAD_BODIES = bad_bodies()


@pytest.mark.parametrize("model_id, body, paths", BAD_BODIES, ids=[f"{m}:{','.join(p)}" for m, _, p in BAD_BODIES])
def test_a_bad_body_gets_a_422_listing_the_vocabularys_own_problems(emulator, model_id, body, paths):
    answer = post(emulator, model_id, body)
    assert answer.status_code == 422, answer.text
    payload = answer.json()
    assert payload["error"] == "Invalid GEM-2 request"
    assert sorted(error["path"] for error in payload["errors"]) == sorted(paths)
    assert all(error["message"].strip() for error in payload["errors"])
    expected = gem2_problems(model_id, body, n_genes=GENES)
    assert [(e["path"], e["message"]) for e in payload["errors"]] == [(p.path, p.message) for p in expected]
    if "counts" not in json.dumps(body):  # without gene-count checks, the client sees the same problems
        assert wire_problems(model_id, body) == expected
        assert query_problems({"model_id": model_id, **body}) == expected
    assert emulator.stats()["submissions"] == {}


def test_molecule_messages_name_the_alternatives(emulator):
    body = expression_body({"bioactive_entity_perturbations": [{"smiles": "CCO", "entity": "ethanol"}]})
    (error,) = post(emulator, "gem-2", body).json()["errors"]
    assert error["message"] == (
        "a molecule has exactly one key, 'smiles', 'entity_ontology_id' or 'entity'; found 'smiles', 'entity'"
    )


# --- releases --------------------------------------------------------------------------------


def test_a_release_pin_is_honoured_echoed_and_checked(emulator):
    body = expression_body(LIVER, total=1_000_000)
    default = run(emulator, "gem-2", body)
    pinned = run(emulator, "gem-2", dict(body, release="gem-2-emulator-1"))
    assert pinned["release"] == pinned["model_version"] == "gem-2-emulator-1"
    assert not np.array_equal(counts_of(default), counts_of(pinned))  # another release, another model
    assert run(emulator, "gem-2", dict(body, release=gem2.DEFAULT_RELEASE))["outputs"] == default["outputs"]

    refused = post(emulator, "gem-2", dict(body, release="gem-2-nightly")).json()
    assert [e["path"] for e in refused["errors"]] == ["release"] and "gem-2-emulator-1" in refused["errors"][0][
        "message"
    ]
    single_cell = copy.deepcopy(body)
    single_cell["inputs"]["modality"] = "single-cell"
    refused = post(emulator, "gem-2", dict(single_cell, release="gem-2-emulator-1")).json()
    assert [e["path"] for e in refused["errors"]] == ["inputs.modality"]
    molecules = expression_body(dict(LIVER, bioactive_entity_perturbations=[{"entity": "ethanol"}, {"smiles": "CCO"}]))
    refused = post(emulator, "gem-2", dict(molecules, release="gem-2-emulator-1")).json()
    assert [e["path"] for e in refused["errors"]] == [
        "inputs.items[0].metadata.bioactive_entity_perturbations[1].smiles"
    ]
    autoencode = {"operation": "autoencode", "inputs": {"modality": "bulk", "items": []}, "release": "gem-2-emulator-1"}
    assert [e["path"] for e in post(emulator, "gem-2", autoencode).json()["errors"]] == ["operation"]


# --- plausibility ------------------------------------------------------------------------------


def changed_genes(a: np.ndarray, b: np.ndarray) -> set[int]:
    """Genes whose log ratio departs from the common one (renormalisation moves all others alike)."""
    ratio = np.log(a.astype(float) + 0.5) - np.log(b.astype(float) + 0.5)
    return set(np.flatnonzero(np.abs(ratio - np.median(ratio)) > 1e-3).tolist())


@pytest.mark.parametrize(
    "molecule", [{"smiles": "CCO"}, {"entity_ontology_id": "CHEMBL3261331"}, {"entity": "ethanol"}]
)
def test_a_molecule_moves_a_fixed_gene_set_seeded_by_it(emulator, molecule):
    total = 10**12  # rounding is negligible: only the molecule's genes change
    without = counts_of(run(emulator, "gem-2", expression_body(LIVER, total=total)))[0]
    perturbed = dict(LIVER, bioactive_entity_perturbations=[molecule])
    with_it = counts_of(run(emulator, "gem-2", expression_body(perturbed, total=total)))[0]
    genes, _ = generate.pair_effect(GENES, "bioactive_entity_perturbations", molecule)
    assert changed_genes(with_it, without) == set(genes.tolist())
    assert with_it.sum() == total and max(with_it) > 2**24  # exact large integers


def test_a_gene_perturbation_knocks_its_gene_down_from_metadata_and_from_a_reference(emulator):
    """GEM-2's gene_perturbations aim at their gene: it drops to about 1% (a knockout), besides the
    gene set the perturbation moves; an unknown gene moves only that set."""
    tp53 = "ENSG00000141510"
    target = generate.gene_order(GENES).index(tp53)
    total = 10**12
    without = counts_of(run(emulator, "gem-2", expression_body(LIVER, total=total)))[0]
    knocked = dict(LIVER, gene_perturbations=[{"gene_id": tp53}])
    with_it = counts_of(run(emulator, "gem-2", expression_body(knocked, total=total)))[0]
    genes, lfc = generate.pair_effect(GENES, "gene_perturbations", {"gene_id": tp53})
    moved_by_set = lfc[genes == target].sum()
    ratio = (with_it / with_it.sum()) / (without / without.sum())
    others = np.delete(ratio, target)
    assert abs(np.log(ratio[target] / np.median(others)) - (moved_by_set + generate.GENE_PERTURBATION_EFFECT)) < 0.01
    assert changed_genes(with_it, without) == set(genes.tolist()) | {target}
    # From a reference: the reference's own TP53 drops the same way.
    reference = counts_of(run(emulator, "gem-2", expression_body(LIVER, total=2_000_000)))[0].tolist()
    item = {"counts": reference, "num_samples": 1, "output_total": {"type": "custom", "value": total}}
    body = {
        "operation": "predict-expression-from-reference",
        "inputs": {"modality": "bulk", "items": [item]},
        "options": {"seed": 3, "sampling_strategy": MEAN_ESTIMATION},
    }
    still = np.array(run(emulator, "gem-2", body)["outputs"][0]["counts"])
    item["metadata"] = {"gene_perturbations": [{"gene_id": tp53}]}
    moved = np.array(run(emulator, "gem-2", body)["outputs"][0]["counts"])
    assert moved[target] < 0.05 * still[target]


def test_metadata_makes_conditions_differ_and_a_seed_reproduces_them(emulator):
    liver = run(emulator, "gem-2", expression_body(LIVER, num_samples=3, strategy=SAMPLE_GENERATION, seed=1))
    again = run(emulator, "gem-2", expression_body(LIVER, num_samples=3, strategy=SAMPLE_GENERATION, seed=1))
    lung = run(
        emulator,
        "gem-2",
        expression_body(dict(LIVER, tissue="lung"), num_samples=3, strategy=SAMPLE_GENERATION, seed=1),
    )
    assert again["outputs"] == liver["outputs"]
    a, b = np.log1p(counts_of(liver)), np.log1p(counts_of(lung))
    within = np.abs(a[0] - a[1]).mean()
    between = np.abs(a.mean(axis=0) - b.mean(axis=0)).mean()
    assert between > within / 3  # tissues differ by more than sampling noise, averaged
    assert [o["metadata"] for o in liver["outputs"]] == [LIVER] * 3
    assert all(len(o["latents"]["generated"]) == 3 * generate.LATENT_DIM for o in liver["outputs"])


def test_from_reference_moves_the_given_counts(emulator):
    reference = counts_of(run(emulator, "gem-2", expression_body(LIVER, total=2_000_000)))[0].tolist()
    body = {
        "operation": "predict-expression-from-reference",
        "inputs": {"modality": "bulk", "items": [{"counts": reference, "num_samples": 1}]},
        "options": {"seed": 3, "sampling_strategy": MEAN_ESTIMATION},
    }
    same = run(emulator, "gem-2", body)["outputs"][0]
    assert same["metadata"] is None  # no metadata given: null, the row stays aligned
    assert sum(same["counts"]) == sum(reference)  # the reference's library size
    assert np.corrcoef(np.log1p(same["counts"]), np.log1p(reference))[0, 1] > 0.95
    assert set(same["latents"]) == {"z_ref", "z_target", "z_displacement"}
    perturbed = copy.deepcopy(body)
    perturbed["inputs"]["items"][0].update(
        metadata={"bioactive_entity_perturbations": [{"smiles": "CCO"}]},
        output_total={"type": "custom", "value": 10**12},
    )
    unperturbed = copy.deepcopy(body)
    unperturbed["inputs"]["items"][0]["output_total"] = {"type": "custom", "value": 10**12}
    moved = run(emulator, "gem-2", perturbed)["outputs"][0]
    still = run(emulator, "gem-2", unperturbed)["outputs"][0]
    genes, _ = generate.pair_effect(GENES, "bioactive_entity_perturbations", {"smiles": "CCO"})
    assert changed_genes(np.array(moved["counts"]), np.array(still["counts"])) == set(genes.tolist())
    assert moved["metadata"] == {"bioactive_entity_perturbations": [{"smiles": "CCO"}]}


def test_predict_metadata_recognises_what_the_emulator_generated(make_emulator):
    emulator = make_emulator(genes=2000)
    for tissue, layout in (("lung", "SINGLE"), ("brain", "PAIRED")):
        metadata = dict(LIVER, tissue=tissue, library_layout=layout)
        counts = counts_of(run(emulator, "gem-2", expression_body(metadata, num_samples=2, strategy=SAMPLE_GENERATION)))
        body = {"inputs": [{"counts": row.tolist()} for row in counts]}
        result = run(emulator, "gem-2-bulk_metadata", body)
        for output in result["outputs"]:
            assert output["predicted_metadata"] == dict(LIVER, tissue=tissue, library_layout=layout)
            assert output["classifier_probabilities"]["tissue"][tissue] > 0.5
            assert len(output["latents"]["encoded"]) == 3 * generate.LATENT_DIM
        assert "counts" not in result["outputs"][0]


def test_autoencode_reconstructs_with_provenance(emulator):
    counts = counts_of(run(emulator, "gem-2", expression_body(LIVER, total=1_000_000)))[0].tolist()
    body = {
        "inputs": {"items": [{"counts": counts}, {"counts": counts, "output_total": {"type": "custom", "value": 5000}}]}
    }
    outputs = run(emulator, "gem-2-bulk_autoencode", dict(body, release="gem-2-emulator-2"))["outputs"]
    assert sum(outputs[0]["counts"]) == sum(counts) and sum(outputs[1]["counts"]) == 5000
    assert outputs[0]["counts"] != counts  # a reconstruction, not a copy
    assert np.corrcoef(np.log1p(outputs[0]["counts"]), np.log1p(counts))[0, 1] > 0.95
    assert [(o["model_release_id"], o["vae_run_id"]) for o in outputs] == [
        ("gem-2-emulator-2", gem2.vae_run_id("gem-2-emulator-2"))
    ] * 2


def test_ensemble_members_differ_slightly_from_each_other(emulator):
    body = example(emulator, "gem-2-bulk_reference-conditioning")
    single = counts_of(run(emulator, "gem-2-bulk_reference-conditioning", body))
    ensemble = counts_of(run(emulator, "gem-2-bulk_reference-conditioning-ensemble", body))
    members = [
        counts_of(run(emulator, f"gem-2-bulk_reference-conditioning-{m}", body)) for m in ("4w6l3p61", "p3rz5xv7")
    ]
    assert np.array_equal(single, ensemble)
    assert not np.array_equal(members[0], members[1]) and not np.array_equal(members[0], single)
    assert np.corrcoef(np.log1p(members[0][0]), np.log1p(members[1][0]))[0, 1] > 0.9


def test_the_json_counts_are_integers_in_the_text(emulator):
    answer = post(emulator, "gem-2", expression_body(LIVER, num_samples=2, total=10**12))
    query_id = answer.json()["modelQueryId"]
    while (status := requests.get(f"{emulator.url}/api/model-queries/{query_id}/status", headers=AUTH).json())[
        "status"
    ] != "ready":
        time.sleep(0.05)
    text = requests.get(status["downloadUrl"], timeout=10).text
    for counts in re.findall(r'"counts":\[([^\]]*)\]', text):
        assert re.fullmatch(r"\d+(,\d+)*", counts)


# --- self-hosted mode -----------------------------------------------------------------------------


def read_stream(answer) -> pa.Table:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == ARROW
    assert answer.headers["Transfer-Encoding"] == "chunked"
    return ipc.open_stream(answer.content).read_all()


def test_self_hosted_needs_no_token_unless_tokens_are_given(make_emulator):
    open_container = make_emulator(self_hosted=True, tokens=[])
    body = example(open_container, "gem-2")
    assert read_stream(post(open_container, "gem-2", body, headers={})).num_rows == 2
    assert requests.get(f"{open_container.url}/api/models", timeout=10).status_code == 200
    locked = make_emulator(self_hosted=True)
    assert post(locked, "gem-2", body, headers={}).status_code == 401
    assert post(locked, "gem-2", body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert read_stream(post(locked, "gem-2", body)).num_rows == 2
    assert locked.stats()["streamed"] == 1


@pytest.mark.parametrize(
    "model_id, request_type, columns",
    [
        (
            "gem-1-bulk",
            "baseline",
            ["counts", "metadata", "biological_latent", "technical_latent", "perturbation_latent"],
        ),
        (
            "gem-1-sc",
            "baseline",
            ["counts", "metadata", "biological_latent", "technical_latent", "perturbation_latent"],
        ),
        ("gem-2", "predict_expression", ["counts", "metadata", "generated_latent"]),
        (
            "gem-2-sc_reference-conditioning",
            "predict_expression_from_reference",
            ["counts", "metadata", "z_ref_latent", "z_target_latent", "z_displacement_latent"],
        ),
        ("gem-2-bulk_autoencode", "autoencode", ["counts", "metadata", "model_release_id", "vae_run_id"]),
        ("gem-2-sc_metadata", "predict_metadata", ["metadata", "latents", "classifier_probs", "decoder_sample"]),
        (
            "gem-1-bulk_reference-conditioning",
            "reference_conditioning",
            ["counts", "metadata", "biological_latent", "technical_latent", "perturbation_latent"],
        ),
        (
            "gem-1-sc_predict-metadata",
            "predict_metadata",
            ["metadata", "latents", "classifier_probs", "decoder_sample"],
        ),
    ],
)
def test_the_self_hosted_stream_has_the_containers_layout_and_the_hosted_numbers(
    make_emulator, model_id, request_type, columns
):
    hosted = make_emulator()
    container = make_emulator(self_hosted=True)
    body = example(hosted, model_id)
    assert example(container, model_id) == body  # (and both have seen its values: the same candidates)
    table = read_stream(post(container, model_id, body))
    meta = {key.decode(): value.decode() for key, value in table.schema.metadata.items()}
    assert json.loads(meta["gene_order"]) == list(generate.gene_order(GENES))
    assert meta["request_type"] == request_type
    assert meta["model_version"] in (generate.MODEL_VERSION, gem2.DEFAULT_RELEASE)
    assert table.column_names == columns
    result = run(hosted, model_id, body)
    if model_id == "gem-1-sc_predict-metadata":
        outputs = result["outputs"]
        assert table.column("metadata").to_pylist() == [o["metadata"] for o in outputs]
        assert table.column("latents").to_pylist() == [o["latents"] for o in outputs]
        assert table.column("decoder_sample").to_pylist() == [o["decoder_sample"] for o in outputs]
        probabilities = table.column("classifier_probs").to_pylist()
        assert [
            {f: {v: p for v, p in values.items() if p is not None} for f, values in row.items()}
            for row in probabilities
        ] == [o["classifier_probs"] for o in outputs]
        return
    if request_type == "predict_metadata":
        assert table.schema.field("decoder_sample").type.field("counts").type == pa.list_(pa.int64())
        assert table.column("metadata").to_pylist() == [o["predicted_metadata"] for o in result["outputs"]]
        assert table.column("classifier_probs").to_pylist() == [
            o["classifier_probabilities"] for o in result["outputs"]
        ]
        assert table.column("latents").to_pylist() == [o["latents"] for o in result["outputs"]]
        return
    assert table.schema.field("counts").type == pa.list_(pa.int64())
    gene_index = {gene: i for i, gene in enumerate(result["gene_order"])}
    expected = []
    for output in result["outputs"]:
        counts = output["counts"]
        if isinstance(counts, dict):  # GEM-1 single-cell JSON is sparse
            dense = [0] * GENES
            for gene, value in counts.items():
                dense[gene_index[gene]] = value
            counts = dense
        expected.append(counts)
    assert table.column("counts").to_pylist() == expected
    latent_columns = [name for name in columns if name.endswith("_latent")]
    if latent_columns:
        # The same latents under the same names as the hosted JSON result's (name_latent -> name).
        streamed = [
            dict(zip((name.removesuffix("_latent") for name in latent_columns), row, strict=True))
            for row in zip(*(table.column(name).to_pylist() for name in latent_columns), strict=True)
        ]
        assert streamed == [o["latents"] for o in result["outputs"]]
    metadata = table.column("metadata").to_pylist()
    for row, output in zip(metadata, result["outputs"], strict=True):
        given = output.get("metadata") or {}
        assert {k: v for k, v in row.items() if k in given} == given


def test_a_big_self_hosted_answer_streams_in_bounded_batches(make_emulator):
    container = make_emulator(self_hosted=True, genes=generate.DEFAULT_GENES)
    body = expression_body(LIVER, num_samples=60, total=1_000_000)
    with requests.post(
        f"{container.url}/api/models/gem-2/predict", json=body, headers=AUTH, stream=True, timeout=60
    ) as answer:
        reader = ipc.open_stream(answer.raw)
        sizes = [batch.num_rows for batch in reader]
    per_batch = BATCH_BYTES // (8 * generate.DEFAULT_GENES)
    assert sum(sizes) == 60 and len(sizes) > 1 and max(sizes) == per_batch


def test_the_self_hosted_command_streams_1000_full_samples_in_bounded_memory(tmp_path):
    """``synthbio-pipeline emulator --self-hosted``: 1,000 × 44,590 counts (357 MB as int64) go
    out with the process's peak memory far below the matrix."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "synthbio_pipeline.emulator", "--self-hosted", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert "self-hosted model container emulator at" in line and "no token needed" in line
        url = re.search(r"http://\S+", line)[0]
        body = expression_body(LIVER, num_samples=1000, total=10_000_000, strategy=MEAN_ESTIMATION)
        started = time.monotonic()
        rows = 0
        with requests.post(f"{url}/api/models/gem-2/predict", json=body, stream=True, timeout=600) as answer:
            for batch in ipc.open_stream(answer.raw):
                rows += batch.num_rows
                assert batch.column("counts").type == pa.list_(pa.int64())
        seconds = time.monotonic() - started
        status = open(f"/proc/{process.pid}/status").read()
        peak_mb = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024
        print(f"self-hosted stream: 1,000 x 44,590 in {seconds:.1f} s, emulator peak RSS {peak_mb:.0f} MB")
        assert rows == 1000
        assert peak_mb < 300  # the whole matrix alone is 357 MB
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_short_fault_cuts_the_self_hosted_stream_after_whole_batches(make_emulator):
    from synthbio_pipeline.client.self_hosted import SelfHostedClient
    from synthbio_pipeline.emulator import FaultPlan, FaultPlanError
    from synthbio_pipeline.errors import APIConnectionError, ResultError
    from synthbio_pipeline.formats.arrow_stream import open_arrow_result

    plan = {"faults": [{"endpoint": "predict", "fault": "short", "requests": [1], "keep_fraction": 0.5}]}
    container = make_emulator(self_hosted=True, genes=generate.DEFAULT_GENES, faults=plan)
    body = expression_body(LIVER, num_samples=60, total=1_000_000)
    per_batch = BATCH_BYTES // (8 * generate.DEFAULT_GENES)
    with SelfHostedClient(container.url) as client, client.predict_stream("gem-2", body) as stream:
        result = open_arrow_result(stream)
        with pytest.raises((APIConnectionError, ResultError), match="broke off|end-of-stream marker|cut short"):
            for _ in result.batches():
                pass
    assert result.rows_read == per_batch * (30 // per_batch)
    assert container.stats()["faults"] == {"predict:short": 1}
    assert container.stats()["requests"]["predict"] == 1  # a prediction that broke off is not resent
    assert read_stream(post(container, "gem-2", body)).num_rows == 60  # the next request is whole
    with pytest.raises(FaultPlanError, match="download endpoint only"):
        FaultPlan.load({"faults": [{"endpoint": "predict", "fault": "truncate", "requests": [1]}]})
