"""The emulator's fault plan, and the client and runner living through it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime

import pytest
import requests

from synthbio_pipeline.client.http import SynthesizeClient
from synthbio_pipeline.emulator.faults import FaultPlan, FaultRule
from synthbio_pipeline.errors import QueryFailedError
from synthbio_pipeline.vocabulary.query import example_wire_query

BODY = example_wire_query("gem-1-bulk")


def call(emulator, token, path="/api/models", method="GET", **kwargs):
    return requests.request(method, emulator.url + path, headers={"Authorization": f"Bearer {token}"}, **kwargs)


def ready_query(emulator, token):
    """Submit the example query and wait (without asking the status endpoint) until it is ready."""
    query_id = call(emulator, token, "/api/models/gem-1-bulk/predict", "POST", json=BODY).json()["modelQueryId"]
    job = emulator.app._job(query_id)
    deadline = time.monotonic() + 10
    while job.status(emulator.config.latency) != "ready" and time.monotonic() < deadline:
        time.sleep(0.02)
    return query_id, call(emulator, token, f"/api/model-queries/{query_id}/status").json()


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504"])
def test_status_faults_hit_exactly_the_listed_requests(make_emulator, emulator_token, fault):
    emulator = make_emulator(faults={"faults": [{"endpoint": "list_models", "fault": fault, "requests": [2, 3]}]})
    codes = [call(emulator, emulator_token).status_code for _ in range(4)]
    assert codes == [200, int(fault), int(fault), 200]
    assert emulator.stats()["faults"] == {f"list_models:{fault}": 2}


def test_retry_after_in_seconds_and_as_an_http_date(make_emulator, emulator_token):
    emulator = make_emulator(
        faults={
            "faults": [
                {"endpoint": "list_models", "fault": "429", "requests": [1], "retry_after": 3},
                {"endpoint": "list_models", "fault": "503", "requests": [2], "retry_after": "http-date"},
            ]
        }
    )
    assert call(emulator, emulator_token).headers["Retry-After"] == "3"
    date = parsedate_to_datetime(call(emulator, emulator_token).headers["Retry-After"])  # e.g. "Wed, 25 Nov ... GMT"
    assert 0 < date.timestamp() - time.time() <= 2


def test_drop_has_no_effect_and_drop_after_does(make_emulator, emulator_token):
    emulator = make_emulator(
        faults={
            "faults": [
                {"endpoint": "predict", "fault": "drop", "requests": [1]},
                {"endpoint": "predict", "fault": "drop_after", "requests": [2]},
            ]
        }
    )
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY)
    stats = emulator.stats()
    assert list(stats["submissions"].values()) == [1]  # only drop_after was accepted
    assert stats["faults"] == {"predict:drop": 1, "predict:drop_after": 1}
    assert stats["requests"]["predict"] == 2


def test_a_dropped_status_or_download_is_a_connection_error(make_emulator, emulator_token):
    emulator = make_emulator(
        faults={
            "faults": [
                {"endpoint": "status", "fault": "drop", "requests": [2]},
                {"endpoint": "download", "fault": "drop", "requests": [1]},
            ]
        }
    )
    query_id, status = ready_query(emulator, emulator_token)  # status 1 is answered
    with pytest.raises(requests.ConnectionError):
        call(emulator, emulator_token, f"/api/model-queries/{query_id}/status")  # status 2 is not
    with pytest.raises(requests.ConnectionError):
        requests.get(status["downloadUrl"])
    assert requests.get(status["downloadUrl"]).json()["outputs"]


def test_stall_outlasts_a_read_timeout(make_emulator, emulator_token):
    emulator = make_emulator(
        faults={"faults": [{"endpoint": "list_models", "fault": "stall", "requests": [1], "stall_seconds": 2}]}
    )
    with pytest.raises(requests.Timeout):
        call(emulator, emulator_token, timeout=0.5)
    assert call(emulator, emulator_token, timeout=5).status_code == 200  # only request 1 stalls
    assert emulator.stats()["faults"] == {"list_models:stall": 1}


def test_a_long_stall_does_not_hold_up_stopping(make_emulator, emulator_token):
    emulator = make_emulator(
        faults={"faults": [{"endpoint": "predict", "fault": "stall", "requests": [1], "stall_seconds": 60}]}
    )
    with pytest.raises(requests.Timeout):
        call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY, timeout=0.3)
    assert len(emulator.stats()["submissions"]) == 1  # a stalled submission was accepted
    started = time.monotonic()
    emulator.stop()
    assert time.monotonic() - started < 5


def test_failed_status_carries_a_traceback_and_stays_failed(make_emulator, emulator_token):
    emulator = make_emulator(faults={"faults": [{"endpoint": "status", "fault": "failed", "requests": [1]}]})
    query_id = call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY).json()[
        "modelQueryId"
    ]
    for _ in range(2):
        payload = call(emulator, emulator_token, f"/api/model-queries/{query_id}/status").json()
        assert payload["status"] == "failed" and "\nTraceback" in payload["message"]


def test_expired_url_and_corrupt_downloads(make_emulator, emulator_token):
    emulator = make_emulator(
        faults={
            "faults": [
                {"endpoint": "status", "fault": "expire_url", "fraction": 1.0},
                {"endpoint": "download", "fault": "truncate", "requests": [2], "keep_fraction": 0.5},
                {"endpoint": "download", "fault": "short", "requests": [3]},
            ]
        }
    )
    query_id, status = ready_query(emulator, emulator_token)
    assert requests.get(status["downloadUrl"]).status_code == 403  # download 1: expired
    emulator.set_faults(
        {
            "faults": [
                {"endpoint": "download", "fault": "truncate", "requests": [1]},
                {"endpoint": "download", "fault": "short", "requests": [2]},
            ]
        }
    )
    fresh = call(emulator, emulator_token, f"/api/model-queries/{query_id}/status").json()["downloadUrl"]
    truncated = requests.get(fresh)
    assert truncated.status_code == 200 and int(truncated.headers["Content-Length"]) == len(truncated.content)
    with pytest.raises(ValueError):
        json.loads(truncated.content)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = requests.get(fresh).content
    assert requests.get(fresh).json()["gene_order"]


def test_an_expire_url_hit_on_a_running_query_expires_the_next_ready_answer(make_emulator, emulator_token):
    emulator = make_emulator(
        latency=0.5, faults={"faults": [{"endpoint": "status", "fault": "expire_url", "requests": [1]}]}
    )
    query_id = call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY).json()[
        "modelQueryId"
    ]
    path = f"/api/model-queries/{query_id}/status"
    assert call(emulator, emulator_token, path).json()["status"] != "ready"  # request 1: hit, carried
    assert emulator.stats()["faults"] == {}
    while (status := call(emulator, emulator_token, path).json())["status"] != "ready":
        time.sleep(0.05)
    expired = requests.get(status["downloadUrl"])
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    assert emulator.stats()["faults"] == {"status:expire_url": 1}
    assert requests.get(call(emulator, emulator_token, path).json()["downloadUrl"]).status_code == 200  # once only


def test_fractions_are_reproducible_for_a_seed():
    def hits(seed):
        plan = FaultPlan([FaultRule("status", "503", fraction=0.3)], seed)
        return [plan.decide("status") is not None for _ in range(1, 200)]

    assert hits(1) == hits(1) and hits(1) != hits(2)
    assert 30 < sum(hits(1)) < 90


def test_a_fraction_plan_replays_the_same_over_http(make_emulator, emulator_token):
    plan = {
        "seed": 7,
        "faults": [
            {"endpoint": "list_models", "fault": "503", "fraction": 0.4},
            {"endpoint": "list_models", "fault": "429", "fraction": 0.2},
        ],
    }

    def codes(seed):
        emulator = make_emulator(faults={**plan, "seed": seed})
        return [call(emulator, emulator_token).status_code for _ in range(30)], emulator.stats()["faults"]

    first, injected = codes(7)
    assert codes(7) == (first, injected)
    assert codes(8)[0] != first
    assert set(first) == {200, 429, 503}
    assert injected == {f"list_models:{code}": first.count(code) for code in (429, 503)}


def test_plans_load_from_json_text_json_and_yaml_files(tmp_path):
    plan = {
        "seed": 4,
        "faults": [
            {"endpoint": "status", "fault": 429, "fraction": 0.5, "retry_after": "http-date"},
            {"endpoint": "download", "fault": "short", "requests": [2], "keep_fraction": 0.1},
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "plan.yaml").write_text(
        "seed: 4\nfaults:\n"
        "  - {endpoint: status, fault: 429, fraction: 0.5, retry_after: http-date}\n"
        "  - endpoint: download\n    fault: short\n    requests: [2]\n    keep_fraction: 0.1\n"
    )
    loaded = [
        FaultPlan.load(source)
        for source in (
            plan,
            json.dumps(plan),
            str(tmp_path / "plan.json"),
            tmp_path / "plan.json",
            tmp_path / "plan.yaml",
        )
    ]
    assert all(item.to_dict() == loaded[0].to_dict() for item in loaded)
    assert loaded[0].rules[0].fault == "429" and loaded[0].rules[1].requests == {2}
    assert FaultPlan.load(None).rules == []


@pytest.mark.parametrize(
    "rule, fragment",
    [
        ({"endpoint": "predict", "fault": "failed", "requests": [1]}, "status endpoint only"),
        ({"endpoint": "nowhere", "fault": "500", "requests": [1]}, "unknown endpoint"),
        ({"endpoint": "status", "fault": "418", "requests": [1]}, "unknown fault"),
        ({"endpoint": "status", "fault": "500"}, "either 'fraction' or 'requests'"),
        ({"endpoint": "status", "fault": "500", "requests": [1], "fraction": 0.5}, "either 'fraction' or 'requests'"),
        ({"endpoint": "status", "fault": "500", "requests": [0]}, "1-based"),
        ({"endpoint": "status", "fault": "500", "fraction": 1.5}, "between 0 and 1"),
        ({"endpoint": "status", "fault": "429", "requests": [1], "retry_after": "soon"}, "http-date"),
        ({"endpoint": "status", "fault": "drop", "requests": [1], "retry_after": 1}, "429 or 5xx"),
        ({"endpoint": "download", "fault": "truncate", "requests": [1], "keep_fraction": 1}, "keep_fraction"),
        ({"endpoint": "status", "fault": "500", "requests": [1], "stall": 3}, "unknown rule field"),
    ],
)
def test_bad_plans_are_refused(rule, fragment):
    with pytest.raises(ValueError, match=fragment):
        FaultPlan.load({"faults": [rule]})


def test_the_cli_takes_a_plan_file_and_the_plan_can_be_replaced_over_http(tmp_path, emulator_token):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"faults": [{"endpoint": "list_models", "fault": "500", "requests": [1]}]}))
    process = subprocess.Popen(
        [sys.executable, "-m", "synthbio_pipeline.emulator", "--port", "0", "--genes", "10", "--faults", str(plan)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().split(" at ")[1].split()[0]
        headers = {"Authorization": f"Bearer {emulator_token}"}
        assert requests.get(url + "/api/models", headers=headers).status_code == 500
        replaced = {"faults": [{"endpoint": "list_models", "fault": "502", "requests": [1]}]}  # counted from now
        assert requests.post(url + "/_emulator/faults", json={}).status_code == 401  # control needs a token
        assert requests.post(url + "/_emulator/faults", json=replaced, headers=headers).status_code == 200
        assert requests.get(url + "/api/models", headers=headers).status_code == 502
        assert requests.get(url + "/_emulator/stats", headers=headers).json()["faults"] == {"list_models:502": 1}
        bad_plan = {"faults": [{"endpoint": "status", "fault": "oops"}]}
        refused = requests.post(url + "/_emulator/faults", json=bad_plan, headers=headers)
        assert refused.status_code == 400 and "bad fault plan" in refused.json()["error"]
        # JSON only, never a path
        assert requests.post(url + "/_emulator/faults", data=str(plan), headers=headers).status_code == 400
        assert requests.post(url + "/_emulator/faults", json={}, headers=headers).status_code == 200  # no faults
        assert requests.get(url + "/api/models", headers=headers).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_client_lives_through_a_mixed_plan(make_emulator, emulator_token, tmp_path):
    # One fault per call where possible (retries inside one call back off longer and longer).
    # Polls come 1 s apart and the query is ready 2.5 s after its submission, so the status
    # requests go: drop+running, 503+running, stall (1 s read timeout)+ready with an expired
    # URL, then the refresh after the 403 gets an expired URL again, and the next a good one.
    emulator = make_emulator(
        latency=2.5,
        faults={
            "seed": 3,
            "faults": [
                {"endpoint": "predict", "fault": "429", "requests": [1], "retry_after": 1},
                {"endpoint": "status", "fault": "drop", "requests": [1]},
                {"endpoint": "status", "fault": "503", "requests": [3]},
                {"endpoint": "status", "fault": "stall", "requests": [5], "stall_seconds": 3},
                {"endpoint": "status", "fault": "expire_url", "requests": [6, 7]},
                {"endpoint": "download", "fault": "500", "requests": [3]},
            ],
        },
    )
    with SynthesizeClient(emulator.url, max_retries=5, timeout=(5, 1)) as client:
        query_id = client.submit("gem-1-bulk", BODY)
        ready = client.wait(query_id, poll_interval=0)
        path = client.fetch_result(query_id, ready, tmp_path / "r.json")
    assert json.loads(path.read_text())["outputs"]
    stats = emulator.stats()
    assert list(stats["submissions"].values()) == [1]
    assert stats["faults"] == {
        "predict:429": 1,
        "status:drop": 1,
        "status:503": 1,
        "status:stall": 1,
        "status:expire_url": 2,
        "download:500": 1,
    }
    assert stats["requests"]["download"] == 4 and stats["downloads"] == 1  # expired, expired, 500, the result


def test_a_failed_query_is_not_resubmitted_unless_allowed(make_emulator, tmp_path):
    from synthbio_pipeline.pipeline.runner import run_prediction

    query = tmp_path / "q.json"
    query.write_text(json.dumps(BODY))
    emulator = make_emulator(faults={"faults": [{"endpoint": "status", "fault": "failed", "requests": [1]}]})
    options = {
        "model_id": "gem-1-bulk",
        "condition": "c",
        "expression_out": tmp_path / "o/e.parquet",
        "metadata_out": tmp_path / "o/m.parquet",
        "base_url": emulator.url,
        "poll_interval": 1,
    }
    with pytest.raises(QueryFailedError) as caught:
        run_prediction(query, **options)
    assert "Traceback" not in str(caught.value)
    with pytest.raises(QueryFailedError):
        run_prediction(query, **options)  # the rerun resumes the failed query: still failed, not paid again
    assert list(emulator.stats()["submissions"].values()) == [1]

    summary = run_prediction(query, resubmit_failed=1, **options)
    assert summary["submissions"] == 2 and list(emulator.stats()["submissions"].values()) == [2]


def test_a_corrupt_or_short_download_is_fetched_again(make_emulator, tmp_path):
    from synthbio_pipeline.formats.parquet import load_expression
    from synthbio_pipeline.pipeline.runner import run_prediction

    query = tmp_path / "q.json"
    query.write_text(json.dumps(BODY))
    emulator = make_emulator(
        faults={
            "faults": [
                {"endpoint": "download", "fault": "truncate", "requests": [1]},
                {"endpoint": "download", "fault": "short", "requests": [2]},
            ]
        }
    )
    summary = run_prediction(
        query,
        model_id="gem-1-bulk",
        condition="c",
        expression_out=tmp_path / "o/e.parquet",
        metadata_out=tmp_path / "o/m.parquet",
        base_url=emulator.url,
        poll_interval=1,
    )
    expression, _ = load_expression(tmp_path / "o/e.parquet")
    assert expression.shape[1] == summary["samples"] == sum(item["num_samples"] for item in BODY["inputs"])
    assert emulator.stats()["requests"]["download"] == 3


def test_a_carried_expire_url_does_not_cancel_another_fault(make_emulator, emulator_token):
    emulator = make_emulator(
        latency=0.3,
        faults={
            "faults": [
                {"endpoint": "status", "fault": "expire_url", "requests": [1]},
                {"endpoint": "status", "fault": "stall", "requests": [2], "stall_seconds": 2},
            ]
        },
    )
    query_id = call(emulator, emulator_token, "/api/models/gem-1-bulk/predict", "POST", json=BODY).json()[
        "modelQueryId"
    ]
    path = f"/api/model-queries/{query_id}/status"
    assert call(emulator, emulator_token, path).json()["status"] != "ready"  # expire_url carried
    time.sleep(0.4)
    with pytest.raises(requests.Timeout):
        call(emulator, emulator_token, path, timeout=0.5)  # ready: the carried expire_url, and a stall
    assert emulator.stats()["faults"] == {"status:expire_url": 1, "status:stall": 1}
