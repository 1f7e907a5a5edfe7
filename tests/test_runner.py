"""One prediction job against the emulator: query file in, parts out, status changes logged."""

from __future__ import annotations

import json
import logging

import pytest

from synthbio_pipeline.errors import MissingTokenError, ValidationError
from synthbio_pipeline.formats.parquet import load_expression
from synthbio_pipeline.pipeline.conditions import read_conditions, write_query
from synthbio_pipeline.pipeline.preflight import check_token
from synthbio_pipeline.pipeline.runner import run_prediction


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


def test_a_changed_query_is_submitted_afresh(make_emulator, lung_query, tmp_path):
    from synthbio_pipeline.errors import PollTimeoutError

    emulator = make_emulator(latency=2.5)
    out = tmp_path / "out"
    with pytest.raises(PollTimeoutError):
        run(lung_query, out, emulator.url, poll_timeout=1)
    changed = json.loads(lung_query.read_text())
    changed["seed"] = 10
    lung_query.write_text(json.dumps(changed))
    run(lung_query, out, emulator.url)
    assert sorted(emulator.stats()["submissions"].values()) == [1, 1]


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
