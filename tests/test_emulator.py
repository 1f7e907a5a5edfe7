"""The API emulator: every endpoint over real HTTP, its data, its CLI, and the vendor client."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from conftest import EMULATOR_TOKEN

from synthbio_pipeline.emulator import body_hash, encode_ints, gene_order, generate
from synthbio_pipeline.vocabulary.families import GEM2_MODEL_IDS
from synthbio_pipeline.vocabulary.models import MODELS
from synthbio_pipeline.vocabulary.query import example_wire_query

AUTH = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}


# --- helpers -------------------------------------------------------------------------------


def submit(emulator, body, model_id="gem-1-bulk") -> str:
    answer = requests.post(f"{emulator.url}/api/models/{model_id}/predict", json=body, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["modelQueryId"]


def status(emulator, query_id) -> dict:
    answer = requests.get(f"{emulator.url}/api/model-queries/{query_id}/status", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_ready(emulator, query_id, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        payload = status(emulator, query_id)
        if payload["status"] in ("ready", "failed"):
            return payload
        time.sleep(0.05)
    raise AssertionError(f"query {query_id} not ready after {timeout} s")


def run(emulator, body, model_id="gem-1-bulk") -> dict:
    """Submit, wait and download: the result document."""
    payload = wait_ready(emulator, submit(emulator, body, model_id))
    assert payload["status"] == "ready", payload
    return requests.get(payload["downloadUrl"], timeout=10).json()


def counts_matrix(result) -> np.ndarray:
    return np.array([output["counts"] for output in result["outputs"]])


def bulk_query(strategy="sample generation", **options) -> dict:
    body = example_wire_query("gem-1-bulk")
    body["sampling_strategy"] = strategy
    body.pop("seed", None)
    body.update(options)
    return body


# --- control plane -------------------------------------------------------------------------


def test_list_models_lists_every_model_of_the_table_and_gem2(emulator):
    answer = requests.get(f"{emulator.url}/api/models", headers=AUTH, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    models = answer.json()["models"]
    gem1 = [model for model in models if model["family"] == "gem-1"]
    assert [model["model_id"] for model in gem1] == [spec.model_id for spec in MODELS]
    assert all(set(model) == {"model_id", "family", "modality", "kind"} for model in gem1)
    assert {model["kind"] for model in gem1} == {"baseline", "reference-conditioning", "predict-metadata"}
    assert [model["model_id"] for model in models if model["family"] == "gem-2"] == list(GEM2_MODEL_IDS)


@pytest.mark.parametrize("model_id", ["gem-1-bulk", "gem-1-sc"])
def test_example_query_is_the_wire_example(emulator, model_id):
    answer = requests.get(f"{emulator.url}/api/models/{model_id}/example-query", headers=AUTH, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"example_query": example_wire_query(model_id)}


@pytest.mark.parametrize("model_id", ["gem-9", "gem-2-bulk_predict", "gem-1-sc_reference"])
def test_unknown_models_are_404(emulator, model_id):
    base = f"{emulator.url}/api/models/{model_id}"
    assert requests.get(f"{base}/example-query", headers=AUTH, timeout=10).status_code == 404
    answer = requests.post(f"{base}/predict", json=bulk_query(), headers=AUTH, timeout=10)
    assert answer.status_code == 404
    assert "error" in answer.json()


def test_unknown_query_id_and_unknown_path_are_404(emulator):
    assert requests.get(f"{emulator.url}/api/model-queries/nope/status", headers=AUTH, timeout=10).status_code == 404
    assert requests.get(f"{emulator.url}/api/nothing-here", headers=AUTH, timeout=10).status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Bearer "}, {"Authorization": EMULATOR_TOKEN}],
    ids=["missing", "wrong", "empty", "not-bearer"],
)
def test_bad_or_missing_token_is_401(emulator, headers):
    answer = requests.get(f"{emulator.url}/api/models", headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]
    assert EMULATOR_TOKEN not in answer.text
    assert emulator.stats()["auth_failures"] == 1


def test_without_configured_tokens_any_bearer_token_is_accepted(make_emulator):
    open_emulator = make_emulator(tokens=())
    url = f"{open_emulator.url}/api/models"
    assert requests.get(url, headers={"Authorization": "Bearer anything"}, timeout=10).status_code == 200
    assert requests.get(url, timeout=10).status_code == 401


# --- validation ----------------------------------------------------------------------------


def predict_errors(emulator, body, model_id="gem-1-bulk"):
    answer = requests.post(f"{emulator.url}/api/models/{model_id}/predict", json=body, headers=AUTH, timeout=10)
    assert answer.status_code == 422, answer.text
    payload = answer.json()
    assert payload["error"] == "Invalid query"
    assert all(set(item) == {"path", "message"} and item["message"] for item in payload["errors"])
    return {item["path"]: item["message"] for item in payload["errors"]}


def test_unknown_metadata_key_is_422_with_its_path(emulator):
    body = bulk_query()
    body["inputs"][0]["metadata"]["sexx"] = "male"
    errors = predict_errors(emulator, body)
    assert list(errors) == ["inputs[0].metadata.sexx"]
    assert "did you mean 'sex'" in errors["inputs[0].metadata.sexx"]


def test_sample_generation_on_single_cell_is_refused(emulator):
    body = example_wire_query("gem-1-sc")
    body["sampling_strategy"] = "sample generation"
    errors = predict_errors(emulator, body, "gem-1-sc")
    assert list(errors) == ["sampling_strategy"]
    assert "mean estimation" in errors["sampling_strategy"]


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda body: body.pop("sampling_strategy"), "sampling_strategy"),
        (lambda body: body.update(sampling_strategy="best guess"), "sampling_strategy"),
        (lambda body: body.update(inputs=[]), "inputs"),
        (lambda body: body["inputs"][1].pop("num_samples"), "inputs[1].num_samples"),
        (lambda body: body["inputs"][0].update(num_samples=0), "inputs[0].num_samples"),
        (lambda body: body["inputs"][0].pop("metadata"), "inputs[0].metadata"),
        (lambda body: body["inputs"][0]["metadata"].update(sex="yes"), "inputs[0].metadata.sex"),
        (lambda body: body.update(seed="eleven"), "seed"),
        (lambda body: body.update(total_count=-5), "total_count"),
        (lambda body: body.update(deterministic_latents="yes"), "deterministic_latents"),
    ],
)
def test_invalid_queries_are_422_naming_the_field(emulator, change, path):
    body = bulk_query()
    change(body)
    assert path in predict_errors(emulator, body)


def test_a_body_that_is_not_an_object_is_422_and_malformed_json_is_400(emulator):
    assert list(predict_errors(emulator, [1, 2])) == [""]
    answer = requests.post(
        f"{emulator.url}/api/models/gem-1-bulk/predict",
        data=b'{"inputs": [',
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert emulator.stats()["submissions"] == {}


# --- status and downloads ------------------------------------------------------------------


def test_status_goes_from_queued_or_running_to_ready(make_emulator):
    emulator = make_emulator(latency=0.4)
    query_id = submit(emulator, bulk_query())
    assert status(emulator, query_id)["status"] in ("queued", "running")
    payload = wait_ready(emulator, query_id)
    assert payload["status"] == "ready"
    assert payload["downloadUrl"].startswith(f"{emulator.url}/download/{query_id}?expires=")
    assert re.search(r"&signature=[0-9a-f]{64}$", payload["downloadUrl"])
    assert "downloadUrl" in status(emulator, query_id)  # every ready status signs a URL again


def test_download_needs_no_token_and_refuses_one(emulator):
    url = wait_ready(emulator, submit(emulator, bulk_query()))["downloadUrl"]
    refused = requests.get(url, headers=AUTH, timeout=10)
    assert refused.status_code == 400
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    assert len(answer.json()["outputs"]) == 10
    stats = emulator.stats()
    assert (stats["downloads"], stats["downloads_with_auth"]) == (1, 1)
    assert stats["requests"]["download"] == 2


def test_tampered_or_unsigned_download_urls_are_403(emulator):
    query_id = submit(emulator, bulk_query())
    url = wait_ready(emulator, query_id)["downloadUrl"]
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert requests.get(tampered, timeout=10).status_code == 403
    assert requests.get(f"{emulator.url}/download/{query_id}", timeout=10).status_code == 403
    later = url.replace("expires=", "expires=1")  # a longer life is not covered by the signature
    assert requests.get(later, timeout=10).status_code == 403


def test_expired_url_is_403_and_status_gives_a_fresh_one(make_emulator):
    emulator = make_emulator(url_ttl=0.2)
    query_id = submit(emulator, bulk_query())
    url = wait_ready(emulator, query_id)["downloadUrl"]
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 403
    assert "expired" in refused.text
    fresh = status(emulator, query_id)["downloadUrl"]
    assert requests.get(fresh, timeout=10).status_code == 200


def test_failed_generation_is_reported_with_a_message(emulator, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of GPUs")

    monkeypatch.setattr(generate, "write_result", broken)
    payload = wait_ready(emulator, submit(emulator, bulk_query()))
    assert payload["status"] == "failed"
    assert payload["message"].startswith("generation failed: out of GPUs\nTraceback")
    assert "downloadUrl" not in payload


def test_stats_count_submissions_per_body_without_source(emulator):
    body = bulk_query(seed=3)
    submit(emulator, {**body, "source": "one client"})
    submit(emulator, {**body, "source": "another client"})
    submit(emulator, bulk_query(seed=4))
    stats = emulator.stats()
    assert stats["submissions"][body_hash(body)] == 2
    assert sorted(stats["submissions"].values()) == [1, 2]
    assert stats["requests"]["predict"] == 3
    headers = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}
    assert requests.get(f"{emulator.url}/_emulator/stats", headers=headers, timeout=10).json() == emulator.stats()


# --- the result document -------------------------------------------------------------------


def test_result_document_shape_and_order(emulator):
    body = bulk_query(seed=5)
    body["inputs"][0]["num_samples"], body["inputs"][1]["num_samples"] = 2, 3
    url = wait_ready(emulator, submit(emulator, body))["downloadUrl"]
    raw = requests.get(url, timeout=10).content
    assert raw.startswith(b'{"gene_order":')
    result = json.loads(raw)
    assert result["gene_order"] == list(gene_order(200))
    assert result["model_version"] == "emulator-2"
    assert "not a model prediction" in result["emulator"]["note"]
    outputs = result["outputs"]
    assert [output["metadata"] for output in outputs] == [body["inputs"][0]["metadata"]] * 2 + [
        body["inputs"][1]["metadata"]
    ] * 3
    for output in outputs:
        assert len(output["counts"]) == 200 and all(isinstance(count, int) for count in output["counts"])
        assert set(output["latents"]) == {"biological", "technical", "perturbation"}
        assert all(len(vector) == 16 for vector in output["latents"].values())


def test_same_seed_same_counts_different_seed_different_counts(emulator):
    first = run(emulator, bulk_query(seed=7))
    again = run(emulator, bulk_query(seed=7))
    other = run(emulator, bulk_query(seed=8))
    unseeded = [run(emulator, bulk_query()) for _ in range(2)]
    assert first["outputs"] == again["outputs"]
    assert not np.array_equal(counts_matrix(first), counts_matrix(other))
    assert not np.array_equal(counts_matrix(unseeded[0]), counts_matrix(unseeded[1]))
    # samples of one input differ from each other: real noise, not copies
    assert len({tuple(row) for row in counts_matrix(first)[:5]}) == 5


def test_mean_estimation_with_deterministic_latents_is_fixed(emulator):
    body = bulk_query("mean estimation", deterministic_latents=True)
    first, again = counts_matrix(run(emulator, body)), counts_matrix(run(emulator, body))
    assert np.array_equal(first, again)
    assert (first[:5] == first[0]).all() and (first[5:] == first[5]).all()
    seeded = bulk_query("mean estimation", seed=1)
    assert np.array_equal(counts_matrix(run(emulator, seeded)), counts_matrix(run(emulator, seeded)))


def test_different_tissues_give_different_profiles(emulator):
    body = bulk_query("mean estimation", deterministic_latents=True)
    body["inputs"][0]["num_samples"] = body["inputs"][1]["num_samples"] = 1
    body["inputs"][1]["metadata"] = {**body["inputs"][0]["metadata"], "tissue_ontology_id": "UBERON:0000955"}
    liver_like, brain_like = counts_matrix(run(emulator, body)) + 1
    fold = np.abs(np.log2(liver_like / brain_like))
    assert (fold > 1).sum() >= 10  # many genes at least two-fold apart
    assert np.median(fold) < 0.5  # most genes unchanged


def test_total_count_sets_the_library_size(emulator):
    means = counts_matrix(run(emulator, bulk_query("mean estimation", total_count=123_456)))
    assert np.all(np.abs(means.sum(axis=1) - 123_456) <= 200 / 2)
    samples = counts_matrix(run(emulator, bulk_query(seed=2, total_count=123_456)))
    assert np.all(np.abs(samples.sum(axis=1) / 123_456 - 1) < 0.25)
    default = counts_matrix(run(emulator, bulk_query("mean estimation")))
    assert np.all(np.abs(default.sum(axis=1) - 10_000_000) <= 100)


def test_single_cell_counts_are_sparse_with_library_size_near_10000(make_emulator):
    emulator = make_emulator(genes=5000)
    result = run(emulator, example_wire_query("gem-1-sc"), "gem-1-sc")
    genes = set(result["gene_order"])
    assert len(result["outputs"]) == 6
    for output in result["outputs"]:
        counts = output["counts"]
        assert isinstance(counts, dict) and set(counts) <= genes
        assert all(isinstance(value, int) and value > 0 for value in counts.values())
        assert len(counts) < 0.5 * len(genes)  # most genes are zero, and absent
        assert abs(sum(counts.values()) - 10_000) <= 100


# --- the generator's building blocks -------------------------------------------------------


def test_encoder_matches_json():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            [0, 1, 9, 10, 99, 100, -1, -10, 2**62, -(2**62)],
            rng.integers(-(10**15), 10**15, 5000),
            rng.integers(0, 50, 5000),
        ]
    )
    assert json.loads(b"[" + encode_ints(values) + b"]") == values.tolist()
    assert encode_ints(np.array([], dtype=np.int64)) == b""
    tables = generate.gene_tables(50)
    picked = np.array([0, 7, 49])
    sparse = b"{" + encode_ints(np.array([5, 0, 123]), tables.sparse_keys[picked]) + b"}"
    assert json.loads(sparse) == {gene_order(50)[0]: 5, gene_order(50)[7]: 0, gene_order(50)[49]: 123}


def test_gene_order_is_deterministic_unique_and_sorted():
    ids = gene_order(44_590)
    assert len(set(ids)) == len(ids) == 44_590
    assert list(ids) == sorted(ids)
    assert all(re.fullmatch(r"ENSG\d{11}", gene) for gene in ids)
    assert ids[0] == "ENSG00000000003"  # TSPAN6, the first human Ensembl gene id
    assert gene_order(44_590) == ids


# The project's shared data folder lies beside the checkout (where it is present).
SHARED_GENE_IDS = Path(__file__).resolve().parents[2] / "shared/data/ensembl_human_gene_ids.txt"


def test_gene_ids_are_real_human_ensembl_ids_with_the_well_known_genes():
    """TP53, GAPDH and APOB exist at every size; a smaller gene set lies inside every larger one."""
    known = {"ENSG00000141510": "TP53", "ENSG00000111640": "GAPDH", "ENSG00000084674": "APOB"}
    everything = set(gene_order(44_590))
    if SHARED_GENE_IDS.exists():  # the list the packaged ids were taken from (its README says where)
        assert everything <= set(SHARED_GENE_IDS.read_text().split())
    smaller = set()
    for n in (3, 20, 200, 5_000, 44_590):
        ids = gene_order(n)
        assert len(ids) == n and list(ids) == sorted(ids) and set(known) <= set(ids)
        assert smaller <= set(ids) <= everything
        smaller = set(ids)
    assert set(generate.WELL_KNOWN_GENES) <= everything
    with pytest.raises(ValueError, match="1 to 44,590 genes"):
        gene_order(44_591)


def test_an_emulated_result_has_tp53(make_emulator):
    result = run(make_emulator(genes=50), bulk_query("mean estimation"))
    assert "ENSG00000141510" in result["gene_order"] and len(result["gene_order"]) == 50


def test_condition_effects_do_not_depend_on_python_hash_seed():
    code = (
        "from synthbio_pipeline.emulator import generate as g;"
        "c = g.condition(g.gene_tables(100), {'tissue_ontology_id': 'UBERON:0002371'});"
        "print(round(float(c.log_profile.sum()), 9))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and outputs != {""}


# --- lifecycle and CLI ---------------------------------------------------------------------


def test_stop_removes_its_temporary_results_but_keeps_a_workdir(make_emulator, tmp_path):
    temporary = make_emulator()
    run(temporary, bulk_query())
    folder = temporary.workdir
    assert any(folder.iterdir())
    temporary.stop()
    assert not folder.exists()
    kept = make_emulator(workdir=tmp_path / "results")
    run(kept, bulk_query())
    kept.stop()
    assert len(list((tmp_path / "results").glob("*.json"))) == 1


def test_cli_prints_its_url_and_stops_on_sigterm():
    token = "cli-secret-token"
    command = [sys.executable, "-m", "synthbio_pipeline.emulator", "--port", "0", "--genes", "50", "--token", token]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        assert token not in line
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{url}/api/models", headers=headers, timeout=10).status_code == 200
        assert requests.get(f"{url}/_emulator/stats", timeout=10).status_code == 401  # control needs the token
        assert requests.get(f"{url}/_emulator/stats", headers=headers, timeout=10).json()["requests"] == {
            "list_models": 1
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert token not in process.stdout.read() + process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- the vendor's client -------------------------------------------------------------------


def test_vendor_client_works_unchanged(emulator):
    pysynthbio = pytest.importorskip("pysynthbio")
    listed = {model["model_id"] for model in pysynthbio.list_models(api_base_url=emulator.url)["models"]}
    assert listed == {spec.model_id for spec in MODELS} | set(GEM2_MODEL_IDS)
    assert pysynthbio.get_example_query("gem-1-bulk", api_base_url=emulator.url)["example_query"]["inputs"]
    result = pysynthbio.predict_query(
        example_wire_query("gem-1-bulk"), model_id="gem-1-bulk", api_base_url=emulator.url, poll_interval_seconds=1
    )
    assert result["expression"].shape == (10, 200)
    assert list(result["expression"].columns) == list(gene_order(200))
    assert result["metadata"]["sex"].tolist() == ["male"] * 5 + ["female"] * 5
    assert emulator.stats()["downloads_with_auth"] == 0


def test_vendor_client_shows_each_validation_problem(emulator):
    pysynthbio = pytest.importorskip("pysynthbio")
    query = copy.deepcopy(example_wire_query("gem-1-sc"))
    query["sampling_strategy"] = "sample generation"
    with pytest.raises(pysynthbio.ValidationError) as caught:
        pysynthbio.predict_query(query, model_id="gem-1-sc", api_base_url=emulator.url)
    assert "- sampling_strategy: 'sample generation' is not available" in str(caught.value)


def test_max_in_flight_refuses_submissions_beyond_the_cap(make_emulator, emulator_token):
    """A cap of C: the (C+1)th concurrent submission gets 429 with Retry-After; later ones pass."""
    import time

    import requests

    emulator = make_emulator(latency=0.6, genes=20, max_in_flight=2)
    headers = {"Authorization": f"Bearer {emulator_token}"}
    url = f"{emulator.url}/api/models/gem-1-bulk/predict"
    from synthbio_pipeline.vocabulary.query import example_wire_query

    body = example_wire_query("gem-1-bulk")
    answers = [requests.post(url, json=body, headers=headers, timeout=5) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "1"
    time.sleep(0.8)  # the first two are ready now
    assert requests.post(url, json=body, headers=headers, timeout=5).status_code == 200
    stats = emulator.stats()
    assert stats["peak_in_flight"] == 2 and stats["refused_over_capacity"] == 1


# --- control endpoints and binding (issue 12) --------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}])
def test_the_control_endpoints_need_the_emulators_token(emulator, headers):
    """Before: anyone who could reach the emulator could read its stats and replace its fault plan."""
    stats = requests.get(f"{emulator.url}/_emulator/stats", headers=headers, timeout=10)
    faults = requests.post(
        f"{emulator.url}/_emulator/faults",
        json={"faults": [{"endpoint": "status", "fault": "503", "fraction": 1}]},
        headers=headers,
        timeout=10,
    )
    assert stats.status_code == faults.status_code == 401
    assert emulator.app.faults.rules == []
    assert requests.get(f"{emulator.url}/_emulator/stats", headers=AUTH, timeout=10).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "emulator.lan"])
def test_binding_beyond_loopback_prints_a_warning(host, monkeypatch, capsys):
    from synthbio_pipeline.emulator import serve as cli

    class Started(Exception):
        pass

    def fake_start(bound_host, *args, **kwargs):  # never bind anything but loopback in a test
        raise Started(bound_host)

    monkeypatch.setattr(cli, "start_emulator", fake_start)
    with pytest.raises(Started):
        cli.main(["--host", host, "--port", "0"])
    warning = capsys.readouterr().err
    assert f"listening on {host}" in warning and "ANY token" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_binding_to_loopback_prints_no_warning(host):
    from synthbio_pipeline.emulator.serve import exposure_warning

    assert exposure_warning(host, []) is None
    assert "--token values" in exposure_warning("0.0.0.0", ["t"])
