"""The one retry policy: its decision table, its waits, and one quiet log line per retry."""

from __future__ import annotations

import ast
import json
import logging
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from scripted_server import DROP, SCRIPTED_TOKEN

from synthbio_pipeline import errors
from synthbio_pipeline.client import retry as R
from synthbio_pipeline.client.http import SynthesizeClient
from synthbio_pipeline.vocabulary.query import example_wire_query

ROOT = Path(__file__).resolve().parents[1]
TOKEN = SCRIPTED_TOKEN
RETRY_LOGGER = "synthbio_pipeline.client.retry"


def retry_records(caplog):
    return [r for r in caplog.records if r.name == RETRY_LOGGER]


# --- the decision table ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "get", "post"])
def test_every_status_code_is_decided_by_the_table(method):
    retried = {status for status in range(100, 600) if R.should_retry(method, status)}
    assert retried == {429, 500, 502, 503, 504}


@pytest.mark.parametrize(
    "method, outcome, expected",
    [
        ("GET", R.CONNECT, True),
        ("POST", R.CONNECT, True),  # never sent: safe
        ("GET", R.READ, True),
        ("POST", R.READ, False),  # sent, maybe accepted and paid for
        ("GET", R.OTHER, False),
        ("POST", R.OTHER, False),
        ("PUT", R.CONNECT, False),
        ("DELETE", 503, False),
        ("PATCH", R.READ, False),
    ],
)
def test_failures_without_a_status(method, outcome, expected):
    assert R.should_retry(method, outcome) is expected


def test_backoff_doubles_from_the_second_retry_and_is_capped():
    no_jitter = [R.backoff(n, draw=lambda: 0.0) for n in range(1, 8)]
    assert no_jitter == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    full_jitter = [R.backoff(n, draw=lambda: 0.999) for n in range(1, 6)]
    assert full_jitter[0] == 0.0
    assert all(0 < j - n < R.BACKOFF_JITTER for j, n in zip(full_jitter[1:4], no_jitter[1:4]))
    assert max(full_jitter) == R.BACKOFF_MAX


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("3", 3.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("100000", R.MAX_RETRY_AFTER),
        ("-5", None),
        ("soon", None),
        ("1.5", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),  # no such year
        ("9" * 400, R.MAX_RETRY_AFTER),
    ],
)
def test_retry_after_is_read_in_seconds_capped_and_garbage_ignored(header, expected):
    assert R.parse_retry_after(header) == expected


def test_retry_after_as_an_http_date():
    now = time.time()
    assert R.parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert R.parse_retry_after(formatdate(now + 3600, usegmt=True), now=now) == R.MAX_RETRY_AFTER


def test_the_wait_is_retry_after_when_given_else_the_backoff():
    assert R.wait_before(3, 5.0, draw=lambda: 0.0) == 5.0
    assert R.wait_before(3, None, draw=lambda: 0.0) == 2.0
    assert R.wait_before(3, 0.0, draw=lambda: 0.0) == 2.0  # "0" asks for no wait: the backoff still applies
    assert R.wait_before(1, None) == 0.0


def test_admission_waits_until_the_deadline():
    assert R.admission_wait(deadline=100.0, now=50.0) == R.ADMISSION_WAIT_SECONDS
    assert R.admission_wait(deadline=100.0, now=99.5) == pytest.approx(0.5)
    assert R.admission_wait(deadline=100.0, now=100.0) is None


def test_the_retry_line():
    assert R.retry_line("GET /api/models/x", "503", 2, 5, 1.0) == "GET /api/models/x: 503, retry 2 of 5 in 1.0 s"
    assert R.retry_line("c: submission", "busy", 3, wait=2) == "c: submission: busy, retry 3 in 2.0 s"
    assert R.retry_line("c: model query q", "failed", 1, 2) == "c: model query q: failed, retry 1 of 2"


def test_no_sleep_with_a_literal_in_the_package():
    """Every wait has a name: a retry waits what the policy says, a poll its interval."""
    found = []
    for path in sorted((ROOT / "src/synthbio_pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "sleep":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


# --- one line per retry, against a scripted server ---------------------------------------


def test_one_line_per_status_retry_with_attempt_reason_and_wait(server, caplog):
    server.answer("GET", "/api/models", (503, {}, {}), (429, {"Retry-After": "1"}, {}), (200, {}, {"models": []}))
    with caplog.at_level(logging.INFO):
        assert SynthesizeClient(server.url, max_retries=3).list_models() == {"models": []}
    lines = [r.getMessage() for r in retry_records(caplog)]
    assert lines == ["GET /api/models: 503, retry 1 of 3 in 0.0 s", "GET /api/models: 429, retry 2 of 3 in 1.0 s"]
    assert all(r.levelno == logging.INFO for r in retry_records(caplog))
    assert len(caplog.records) == 2  # nothing else, from us or urllib3
    assert TOKEN not in caplog.text


def test_spent_retries_log_no_line_for_the_retry_that_is_not_made(server, caplog):
    server.answer("GET", "/api/models", (502, {}, {}))
    with caplog.at_level(logging.INFO), pytest.raises(errors.ServerError):
        SynthesizeClient(server.url, max_retries=2).list_models()
    assert server.count() == 3
    assert [r.getMessage().split(" in ")[0] for r in retry_records(caplog)] == [
        "GET /api/models: 502, retry 1 of 2",
        "GET /api/models: 502, retry 2 of 2",
    ]


def test_a_malformed_retry_after_falls_back_to_the_backoff(server, caplog):
    server.answer("GET", "/api/models", (503, {"Retry-After": "tomorrow-ish"}, {}), (200, {}, {"models": []}))
    with caplog.at_level(logging.INFO):
        assert SynthesizeClient(server.url).list_models() == {"models": []}
    assert [r.getMessage() for r in retry_records(caplog)] == ["GET /api/models: 503, retry 1 of 5 in 0.0 s"]


def test_a_dropped_get_is_retried_with_one_line_and_no_urllib3_warning(server, caplog):
    server.answer("GET", "/api/models", (0, {}, DROP), (200, {}, {"models": []}))
    with caplog.at_level(logging.INFO):
        assert SynthesizeClient(server.url, max_retries=2).list_models() == {"models": []}
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("GET /api/models: no answer (") and line.endswith("retry 1 of 2 in 0.0 s")
    assert "Retrying" not in caplog.text


def test_nothing_listening_gives_one_line_per_retry_and_no_urllib3_flood(monkeypatch, caplog):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(R, "backoff", lambda retry, draw=None: 0.0)  # no need to wait for a closed port
    with caplog.at_level(logging.INFO), pytest.raises(errors.APIConnectionError) as caught:
        SynthesizeClient(f"http://127.0.0.1:{port}", max_retries=3).list_models()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"GET /api/models: no connection (NewConnectionError), retry {n} of 3 in 0.0 s" for n in (1, 2, 3)]
    assert "could not get an answer from 127.0.0.1" in str(caught.value)


def test_a_signed_urls_query_never_reaches_the_log(server, caplog, tmp_path):
    server.answer("GET", "/files/r.json", (503, {}, b""), (200, {}, b"[]"))
    with caplog.at_level(logging.INFO):
        SynthesizeClient(server.url).download(f"{server.url}/files/r.json?signature=SECRETSIG", tmp_path / "r")
    assert [r.getMessage() for r in caplog.records] == ["GET /files/r.json: 503, retry 1 of 5 in 0.0 s"]
    assert "SECRETSIG" not in caplog.text and "127.0.0.1" not in caplog.text


def test_a_refused_signed_url_is_refreshed_with_one_line(server, caplog, tmp_path):
    fresh = f"{server.url}/files/new.json?sig=FRESH"
    server.answer("GET", "/files/old.json", (403, {}, b"<Error>expired</Error>"))
    server.answer("GET", "/api/model-queries/q7/status", (200, {}, {"status": "ready", "downloadUrl": fresh}))
    server.answer("GET", "/files/new.json", (200, {}, b"[]"))
    with caplog.at_level(logging.INFO):
        SynthesizeClient(server.url).fetch_result(
            "q7", {"downloadUrl": f"{server.url}/files/old.json?sig=OLD"}, tmp_path / "r"
        )
    assert [r.getMessage() for r in caplog.records] == [
        "download of model query q7: signed URL refused (403), asking for a fresh one, retry 1 of 3"
    ]
    assert "sig=" not in caplog.text


# --- against the emulator with a fault plan ----------------------------------------------


def run_lung(tmp_path, base_url):
    """One prediction job of the example bulk query, as the workflow runs it."""
    from synthbio_pipeline.pipeline.runner import run_prediction

    query = tmp_path / "q.json"
    query.write_text(json.dumps(example_wire_query("gem-1-bulk")))
    return run_prediction(
        query,
        model_id="gem-1-bulk",
        condition="lung",
        expression_out=tmp_path / "o/e.parquet",
        metadata_out=tmp_path / "o/m.parquet",
        base_url=base_url,
        poll_interval=1,
    )


def test_a_job_through_a_fault_plan_logs_one_line_per_retry(make_emulator, emulator_token, tmp_path, caplog):
    emulator = make_emulator(
        faults={
            "faults": [
                {"endpoint": "predict", "fault": "503", "requests": [1]},
                {"endpoint": "status", "fault": "429", "requests": [1], "retry_after": 1},
                {"endpoint": "download", "fault": "500", "requests": [1]},
                {"endpoint": "download", "fault": "truncate", "requests": [2]},
            ]
        }
    )
    with caplog.at_level(logging.INFO):
        run_lung(tmp_path, emulator.url)
    assert sum(emulator.stats()["faults"].values()) == 4
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries[:3] == [
        "POST /api/models/gem-1-bulk/predict: 503, retry 1 of 5 in 0.0 s",
        f"GET /api/model-queries/{retries[1].split('/')[3]}/status: 429, retry 1 of 5 in 1.0 s",
        f"GET /download/{retries[1].split('/')[3]}: 500, retry 1 of 5 in 0.0 s",
    ]
    assert len(retries) == 4 and retries[3].startswith("lung: download of model query ")
    assert retries[3].endswith(", retry 1 of 2")
    assert "Retrying" not in caplog.text and emulator_token not in caplog.text and "signature=" not in caplog.text


def test_an_unknown_query_id_is_submitted_afresh_once_not_forever(server, tmp_path, caplog):
    """A server that forgets every id it hands out would otherwise be paid again and again."""

    path = "/api/models/gem-1-bulk/predict"
    server.answer("POST", path, (200, {}, {"modelQueryId": "q1"}), (200, {}, {"modelQueryId": "q2"}))
    with caplog.at_level(logging.INFO), pytest.raises(errors.NotFoundError):
        run_lung(tmp_path, server.url)
    assert server.count("POST", path) == 2
    assert "lung: model query q1: unknown to the server, submitting afresh, retry 1 of 1" in caplog.text
    assert "q2: unknown" not in caplog.text
