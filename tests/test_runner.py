"""One prediction job against the emulator: query file in, parts out, status changes logged."""

from __future__ import annotations

import json
import logging

import pytest

from synthbio_pipeline.errors import (
    APIConnectionError,
    AuthenticationError,
    MissingTokenError,
    PollTimeoutError,
    QueryFailedError,
    ValidationError,
)
from synthbio_pipeline.formats.parquet import load_expression
from synthbio_pipeline.pipeline.conditions import read_conditions, write_query
from synthbio_pipeline.pipeline.preflight import check_token
from synthbio_pipeline.pipeline.runner import BatchQuery, failure_line, run_batch, run_prediction


@pytest.fixture
def lung_query(tmp_path):
    (tmp_path / "c.tsv").write_text("condition\tnum_samples\ttissue_ontology_id\nlung\t3\tUBERON:0002048\n")
    (lung,) = read_conditions(tmp_path / "c.tsv", {"seed": 9})
    write_query(lung, tmp_path / "lung.json")
    return tmp_path / "lung.json"


def test_run_prediction_writes_parts_and_logs_each_status(emulator, lung_query, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="synthbio_pipeline.pipeline.runner"):
        summary = run_prediction(
            lung_query,
            model_id="gem-1-bulk",
            condition="lung",
            expression_out=out / "expression.parquet",
            metadata_out=out / "metadata.parquet",
            base_url=emulator.url,
            poll_interval=1,
        )
    expression, metadata = load_expression(out / "expression.parquet", out / "metadata.parquet", orientation="samples")
    assert list(expression.index) == ["lung_1", "lung_2", "lung_3"]
    assert (expression.to_numpy() >= 0).all() and expression.shape[1] == summary["genes"]
    assert metadata.query_id.nunique() == 1 and metadata.backend.eq("emulator").all()
    log = caplog.text
    assert "submitted to gem-1-bulk" in log and "status ready after" in log and "wrote 3 samples" in log
    assert sorted(p.name for p in out.iterdir()) == ["expression.parquet", "metadata.parquet"]
    assert sum(emulator.stats()["submissions"].values()) >= 1


def test_a_refused_query_leaves_no_output(emulator, tmp_path):
    query = tmp_path / "bad.json"
    query.write_text(
        json.dumps(
            {"sampling_strategy": "sample generation", "inputs": [{"metadata": {"sex": "male"}, "num_samples": 1}]}
        )
    )
    with pytest.raises(ValidationError):
        run_prediction(
            query,
            model_id="gem-1-sc",
            condition="bad",
            expression_out=tmp_path / "o" / "e.parquet",
            metadata_out=tmp_path / "o" / "m.parquet",
            base_url=emulator.url,
            poll_interval=1,
        )
    assert not (tmp_path / "o" / "e.parquet").exists()


def test_check_token_without_a_token_says_how_to_get_going(monkeypatch, memory_keyring):
    monkeypatch.delenv("SYNTHESIZE_API_KEY", raising=False)
    with pytest.raises(MissingTokenError) as caught:
        check_token("https://app.synthesize.bio")
    text = str(caught.value)
    assert "SYNTHESIZE_API_KEY" in text and "emulator" in text and "before any job" in text


def run(query, out, url, **options):
    return run_prediction(
        query,
        model_id="gem-1-bulk",
        condition="lung",
        expression_out=out / "expression.parquet",
        metadata_out=out / "metadata.parquet",
        base_url=url,
        poll_interval=1,
        **options,
    )


def test_a_timed_out_job_is_resumed_not_resubmitted(make_emulator, lung_query, tmp_path):
    from synthbio_pipeline.errors import PollTimeoutError
    from synthbio_pipeline.pipeline.runner import TICKET_NAME, load_ticket

    emulator = make_emulator(latency=2.5)
    out = tmp_path / "out"
    with pytest.raises(PollTimeoutError):
        run(lung_query, out, emulator.url, poll_timeout=1)
    ticket = load_ticket(out / TICKET_NAME)
    assert ticket is not None and ticket.submissions == 1
    assert not (out / "expression.parquet").exists()

    summary = run(lung_query, out, emulator.url)
    assert summary["query_id"] == ticket.query_id and summary["submissions"] == 1
    assert list(emulator.stats()["submissions"].values()) == [1]
    assert (out / "expression.parquet").exists() and not (out / TICKET_NAME).exists()


def test_a_changed_query_is_submitted_afresh(make_emulator, lung_query, tmp_path, caplog):
    from synthbio_pipeline.errors import PollTimeoutError

    emulator = make_emulator(latency=2.5)
    out = tmp_path / "out"
    with pytest.raises(PollTimeoutError):
        run(lung_query, out, emulator.url, poll_timeout=1)
    changed = json.loads(lung_query.read_text())
    changed["seed"] = 10
    lung_query.write_text(json.dumps(changed))
    with caplog.at_level(logging.INFO, logger="synthbio_pipeline.pipeline.runner"):
        run(lung_query, out, emulator.url)
    assert sorted(emulator.stats()["submissions"].values()) == [1, 1]
    assert "lung: the query changed since model query" in caplog.text


def test_a_changed_service_url_is_what_the_log_says_changed(make_emulator, lung_query, tmp_path, caplog):
    """Only the URL changed (another emulator): the log must not claim the query did."""
    from synthbio_pipeline.errors import PollTimeoutError

    first, second = make_emulator(latency=2.5), make_emulator()
    out = tmp_path / "out"
    with pytest.raises(PollTimeoutError):
        run(lung_query, out, first.url, poll_timeout=1)
    with caplog.at_level(logging.INFO, logger="synthbio_pipeline.pipeline.runner"):
        run(lung_query, out, second.url)
    assert f"lung: the service URL ({first.url} -> {second.url}) changed since model query" in caplog.text
    assert "the query changed" not in caplog.text and "the model" not in caplog.text


def batch_of(tmp_path, rows):
    """Query files of a batch: {condition: tissue}."""
    table = "condition\tnum_samples\ttissue_ontology_id\n" + "".join(f"{n}\t1\t{t}\n" for n, t in rows.items())
    (tmp_path / "batch.tsv").write_text(table)
    queries = []
    for condition in read_conditions(tmp_path / "batch.tsv", {"seed": 3}):
        write_query(condition, tmp_path / f"{condition.name}.json")
        queries.append(BatchQuery(condition.name, tmp_path / f"{condition.name}.json", condition.model_id))
    return queries


def test_a_batch_logs_each_waiting_query_every_heartbeat_and_each_ready_one(make_emulator, tmp_path, caplog):
    emulator = make_emulator(latency=2.6)
    queries = batch_of(tmp_path, {"lung": "UBERON:0002048", "liver": "UBERON:0002107"})
    out = tmp_path / "0003"
    with caplog.at_level(logging.INFO, logger="synthbio_pipeline.pipeline.runner"):
        run_batch(
            queries,
            expression_out=out / "expression.parquet",
            metadata_out=out / "metadata.parquet",
            in_flight=2,
            base_url=emulator.url,
            poll_interval=1,
            heartbeat=1,
        )
    lines = [record.getMessage() for record in caplog.records]
    for condition in ("lung", "liver"):
        beats = [line for line in lines if line.startswith(f"{condition}: running for")]
        assert beats[:2] == [f"{condition}: running for 1 s", f"{condition}: running for 2 s"], lines
    ready = [line for line in lines if line.startswith("batch 0003:")]
    assert ready == ["batch 0003: 1 of 2 ready", "batch 0003: 2 of 2 ready"]
    # Every heartbeat comes before its query's "ready" line, none after.
    last_beat = max(i for i, line in enumerate(lines) if "running for" in line)
    assert last_beat < lines.index("batch 0003: 2 of 2 ready")


def test_a_heartbeat_of_zero_logs_no_heartbeat(emulator, tmp_path, caplog):
    queries = batch_of(tmp_path, {"lung": "UBERON:0002048"})
    with caplog.at_level(logging.INFO, logger="synthbio_pipeline.pipeline.runner"):
        run_batch(
            queries,
            expression_out=tmp_path / "o" / "expression.parquet",
            metadata_out=tmp_path / "o" / "metadata.parquet",
            base_url=emulator.url,
            poll_interval=1,
            heartbeat=0,
        )
    assert "running for" not in caplog.text and "batch o: 1 of 1 ready" in caplog.text


def test_a_failed_batch_is_one_line_naming_the_condition_and_what_to_do(emulator, tmp_path):
    queries = batch_of(tmp_path, {"lung": "UBERON:0002048", "liver": "UBERON:0002107"})
    emulator.set_faults({"faults": [{"endpoint": "status", "fault": "failed", "fraction": 1.0}]})
    with pytest.raises(QueryFailedError) as caught:
        run_batch(
            queries,
            expression_out=tmp_path / "0002" / "expression.parquet",
            metadata_out=tmp_path / "0002" / "metadata.parquet",
            in_flight=2,
            base_url=emulator.url,
            poll_interval=1,
        )
    line = failure_line(caught.value)
    assert "\n" not in line and line.startswith("condition lung; 2 of the 2 conditions of batch 0002 failed: ")
    assert line.endswith(
        "— check the condition's metadata; resubmit_failed in the config retries it (each try is paid for)"
    )


@pytest.mark.parametrize(
    "error, advice",
    [
        (AuthenticationError("GET /x: authentication failed (401)", status_code=401), "synthbio-pipeline token set"),
        (APIConnectionError("POST /x: could not get an answer"), "check that the service at api_base_url is reachable"),
        (PollTimeoutError("not finished after 900 s"), "raise poll_timeout_seconds"),
        (ValidationError("refused\n- inputs[0].metadata.sex: bad", status_code=422), "fix that row"),
    ],
)
def test_failure_lines_say_what_to_do(error, advice):
    line = failure_line(error)
    assert "\n" not in line and advice in line.split(" — ", 1)[1]


def test_an_id_the_server_does_not_know_is_submitted_afresh(emulator, lung_query, tmp_path):
    from synthbio_pipeline.pipeline.runner import TICKET_NAME, Ticket, body_sha256, save_ticket

    out = tmp_path / "out"
    body = json.loads(lung_query.read_text())
    save_ticket(out / TICKET_NAME, Ticket("no-such-query", body_sha256(body), "gem-1-bulk", emulator.url))
    summary = run(lung_query, out, emulator.url)
    assert summary["query_id"] != "no-such-query" and summary["submissions"] == 2
    assert list(emulator.stats()["submissions"].values()) == [1]


def test_a_damaged_ticket_is_ignored(emulator, lung_query, tmp_path):
    from synthbio_pipeline.pipeline.runner import TICKET_NAME

    out = tmp_path / "out"
    out.mkdir()
    (out / TICKET_NAME).write_text("{not json")
    assert run(lung_query, out, emulator.url)["submissions"] == 1


def test_a_lost_submission_answer_stops_is_recorded_and_the_rerun_says_it_submits_again(
    make_emulator, lung_query, tmp_path, caplog
):
    """The emulator accepts the query, then drops the connection: the job stops rather than
    paying twice, notes it beside the ticket, and the rerun says that and why it submits again."""
    from synthbio_pipeline.errors import AmbiguousSubmissionError

    emulator = make_emulator(faults={"faults": [{"endpoint": "predict", "fault": "drop_after", "requests": [1]}]})
    out = tmp_path / "out"
    with pytest.raises(AmbiguousSubmissionError) as caught:
        run(lung_query, out, emulator.url)
    note = out / ".synthbio-query.json.ambiguous"
    assert "may have accepted it" in str(caught.value) and str(note) in str(caught.value)
    assert json.loads(note.read_text())["model_id"] == "gem-1-bulk"
    assert sum(emulator.stats()["submissions"].values()) == 1  # accepted once, sent once
    assert not (out / ".synthbio-query.json").exists()

    with caplog.at_level(logging.INFO, logger="synthbio_pipeline.pipeline.runner"):
        run(lung_query, out, emulator.url)
    assert "submitting again: an earlier submission of this query" in caplog.text
    assert "may be paid for twice" in caplog.text
    assert not note.exists() and (out / "expression.parquet").exists()
    assert sum(emulator.stats()["submissions"].values()) == 2
