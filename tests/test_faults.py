"""The emulator's fault plan, and the client and runner living through it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

from synthbio_pipeline.client import SynthesizeClient
from synthbio_pipeline.emulator.faults import FaultPlan, FaultRule
from synthbio_pipeline.errors import QueryFailedError
from synthbio_pipeline.query import example_wire_query

BODY = example_wire_query("gem-1-bulk")


def call(emulator, token, path="/api/models", method="GET", **kwargs):
    return requests.request(method, emulator.url + path, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def ready_query(emulator, token):
    query_id = call(emulator, token, "/api/models/gem-1-bulk/predict", "POST", json=BODY).json()["modelQueryId"]
    while (status := call(emulator, token, f"/api/model-queries/{query_id}/status").json())["status"] != "ready":
        time.sleep(0.05)
    return query_id, status


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504"])
def test_status_faults_hit_exactly_the_listed_requests(make_emulator, emulator_token, fault):
    emulator = make_emulator(faults={"faults": [{"endpoint": "list_models", "fault": fault, "requests": [2, 3]}]})
    codes = [call(emulator, emulator_token).status_code for _ in range(4)]
    assert codes == [200, int(fault), int(fault), 200]
    assert emulator.stats()["faults"] == {f"list_models:{fault}": 2}


def test_retry_after_in_seconds_and_as_an_http_date(make_emulator, emulator_token):
    emulator = make_emulator(faults={"faults": [
        {"endpoint": "list_models", "fault": "429", "requests": [1], "retry_after": 3},
        {"endpoint": "list_models", "fault": "503", "requests": [2], "retry_after": "http-date"}]})
    assert call(emulator, emulator_token).headers["Retry-After"] == "3"
    assert call(emulator, emulator_token).headers["Retry-After"].endswith("GMT")


def test_drop_has_no_effect_and_drop_after_does(make_emulator, emulator_token):
    emulator = make_emulator(faults={"faults": [
        {"endpoint": "predict", "fault": "drop", "requests": [1]},
        {"endpoint": "predict", "fault": "drop_after", "requests": [2]}]})
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY)
    assert list(emulator.stats()["submissions"].values()) == [1]  # only drop_after was accepted


def test_stall_outlasts_a_read_timeout(make_emulator, emulator_token):
    emulator = make_emulator(faults={"faults": [
        {"endpoint": "list_models", "fault": "stall", "requests": [1], "stall_seconds": 2}]})
    with pytest.raises(requests.Timeout):
        call(emulator, emulator_token, timeout=0.5)


def test_failed_status_carries_a_traceback_and_stays_failed(make_emulator, emulator_token):
    emulator = make_emulator(faults={"faults": [{"endpoint": "status", "fault": "failed", "requests": [1]}]})
    query_id = call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY).json()["modelQueryId"]
    for _ in range(2):
        payload = call(emulator, emulator_token, f"/api/model-queries/{query_id}/status").json()
        assert payload["status"] == "failed" and "\nTraceback" in payload["message"]


def test_expired_url_and_corrupt_downloads(make_emulator, emulator_token):
    emulator = make_emulator(faults={"faults": [
        {"endpoint": "status", "fault": "expire_url", "fraction": 1.0},
        {"endpoint": "download", "fault": "truncate", "requests": [2], "keep_fraction": 0.5},
        {"endpoint": "download", "fault": "short", "requests": [3]}]})
    query_id, status = ready_query(emulator, emulator_token)
    assert requests.get(status["downloadUrl"]).status_code == 403  # download 1: expired
    emulator.set_faults({"faults": [
        {"endpoint": "download", "fault": "truncate", "requests": [1]},
        {"endpoint": "download", "fault": "short", "requests": [2]}]})
    fresh = call(emulator, emulator_token, f"/api/model-queries/{query_id}/status").json()["downloadUrl"]
    truncated = requests.get(fresh)
    assert truncated.status_code == 200 and int(truncated.headers["Content-Length"]) == len(truncated.content)
    with pytest.raises(ValueError):
        json.loads(truncated.content)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(fresh).content
    assert requests.get(fresh).json()["gene_order"]


def test_fractions_are_reproducible_for_a_seed():
    def hits(seed):
        plan = FaultPlan([FaultRule("status", "503", fraction=0.3)], seed)
        return [plan.decide("status") is not None for _ in range(1, 200)]

    assert hits(1) == hits(1) and hits(1) != hits(2)
    assert 30 < sum(hits(1)) < 90


@pytest.mark.parametrize("rule, fragment", [
    ({"endpoint": "predict", "fault": "failed", "requests": [1]}, "status endpoint only"),
    ({"endpoint": "nowhere", "fault": "500", "requests": [1]}, "unknown endpoint"),
    ({"endpoint": "status", "fault": "418", "requests": [1]}, "unknown fault"),
    ({"endpoint": "status", "fault": "500"}, "either 'fraction' or 'requests'"),
])
def test_bad_plans_are_refused(rule, fragment):
    with pytest.raises(ValueError, match=fragment):
        FaultPlan.load({"faults": [rule]})


def test_the_cli_takes_a_plan_file_and_the_plan_can_be_replaced_over_http(tmp_path, emulator_token):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"faults": [{"endpoint": "list_models", "fault": "500", "requests": [1]}]}))
    process = subprocess.Popen([sys.executable, "-m", "synthbio_pipeline.emulator", "--port", "0", "--genes", "10",
                                "--faults", str(plan)], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().split(" at ")[1].split()[0]
        headers = {"Authorization": f"Bearer {emulator_token}"}
        assert requests.get(url + "/api/models", headers=headers).status_code == 500
        replaced = {"faults": [{"endpoint": "list_models", "fault": "502", "requests": [1]}]}  # counted from now
        assert requests.post(url + "/_emulator/faults", json=replaced).status_code == 200
        assert requests.get(url + "/api/models", headers=headers).status_code == 502
        assert requests.get(url + "/_emulator/stats").json()["faults"] == {"list_models:502": 1}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_client_lives_through_a_mixed_plan(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(faults={"seed": 3, "faults": [
        {"endpoint": "predict", "fault": "503", "requests": [1], "retry_after": 1},
        {"endpoint": "predict", "fault": "429", "requests": [2]},
        {"endpoint": "status", "fault": "drop", "requests": [1]},
        {"endpoint": "status", "fault": "502", "requests": [2]},
        {"endpoint": "status", "fault": "stall", "requests": [3], "stall_seconds": 2},
        {"endpoint": "status", "fault": "expire_url", "requests": [4, 5]},
        {"endpoint": "download", "fault": "500", "requests": [2]}]})
    with SynthesizeClient(emulator.url, max_retries=5, timeout=(5, 1)) as client:
        query_id = client.submit("gem-1-bulk", BODY)
        ready = client.wait(query_id, poll_interval=0)
        path = client.fetch_result(query_id, ready, tmp_path / "r.json")
    assert json.loads(path.read_text())["outputs"]
    assert list(emulator.stats()["submissions"].values()) == [1]


def test_a_failed_query_is_not_resubmitted_unless_allowed(make_emulator, tmp_path):
    from synthbio_pipeline.runner import run_prediction

    query = tmp_path / "q.json"
    query.write_text(json.dumps(BODY))
    emulator = make_emulator(faults={"faults": [{"endpoint": "status", "fault": "failed", "requests": [1]}]})
    options = dict(model_id="gem-1-bulk", condition="c", expression_out=tmp_path / "o/e.parquet",
                   metadata_out=tmp_path / "o/m.parquet", base_url=emulator.url, poll_interval=1)
    with pytest.raises(QueryFailedError) as caught:
        run_prediction(query, **options)
    assert "Traceback" not in str(caught.value)
    with pytest.raises(QueryFailedError):
        run_prediction(query, **options)  # the rerun resumes the failed query: still failed, not paid again
    assert list(emulator.stats()["submissions"].values()) == [1]

    summary = run_prediction(query, resubmit_failed=1, **options)
    assert summary["submissions"] == 2 and list(emulator.stats()["submissions"].values()) == [2]


def test_a_corrupt_or_short_download_is_fetched_again(make_emulator, tmp_path):
    from synthbio_pipeline.runner import run_prediction
    from synthbio_pipeline.tables import load_expression

    query = tmp_path / "q.json"
    query.write_text(json.dumps(BODY))
    emulator = make_emulator(faults={"faults": [
        {"endpoint": "download", "fault": "truncate", "requests": [1]},
        {"endpoint": "download", "fault": "short", "requests": [2]}]})
    summary = run_prediction(query, model_id="gem-1-bulk", condition="c", expression_out=tmp_path / "o/e.parquet",
                             metadata_out=tmp_path / "o/m.parquet", base_url=emulator.url, poll_interval=1)
    expression, _ = load_expression(tmp_path / "o/e.parquet")
    assert expression.shape[1] == summary["samples"] == sum(item["num_samples"] for item in BODY["inputs"])
    assert emulator.stats()["requests"]["download"] == 3
