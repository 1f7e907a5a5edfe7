"""One prediction job, as the workflow's wrapper runs it: query file in, Parquet parts out.

Model queries are paid for, and jobs get killed (node loss, ``kill -9``, poll timeouts).
So the job keeps a *ticket* next to its outputs: the moment the server accepts the query,
its ``modelQueryId`` and a hash of the exact body are written there durably, before the
first poll. A rerun finds the ticket and resumes polling that query instead of submitting
it again, as long as the body (and model and host) are unchanged; a changed query is
submitted afresh. The ticket is removed once the outputs are written.

What is still not covered, because the API has no idempotency key: a submission the
server accepted whose answer was lost on the way back. The client does not resend it (a
POST is never retried after it was sent): the job fails with an
:class:`~synthbio_pipeline.errors.AmbiguousSubmissionError` saying so, and a note is written
beside the ticket (``{ticket}.ambiguous``). Its rerun submits again, and says that it does
and why, since the first submission may have been paid for. The window is the time between
the server accepting and its answer reaching us.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthbio_pipeline.client import constants as C
from synthbio_pipeline.client import retry as R
from synthbio_pipeline.client.download import DownloadLimits, samples_asked
from synthbio_pipeline.client.http import SynthesizeClient
from synthbio_pipeline.errors import (
    AmbiguousSubmissionError,
    APIConnectionError,
    NotFoundError,
    QueryFailedError,
    RateLimitError,
    ResultError,
)
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.parquet import merge_parts, write_part

logger = logging.getLogger(__name__)

TICKET_NAME = ".synthbio-query.json"
#: Next to a batch's outputs: one folder per condition (ticket, finished part) until the batch is done.
WORK_DIR_SUFFIX = ".work"
#: Written next to a condition's finished part in a batch's work folder: the body it answers.
DONE_NAME = ".done.json"


@dataclass
class Ticket:
    """What is known about the model query behind a job's outputs."""

    query_id: str
    body_sha256: str
    model_id: str
    base_url: str
    #: How many times this body was submitted (1 + resubmissions after ``failed``).
    submissions: int = 1

    def matches(self, body_sha256: str, model_id: str, base_url: str) -> bool:
        return (self.body_sha256, self.model_id, self.base_url) == (body_sha256, model_id, base_url)


def body_sha256(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_ticket(path: Path) -> Ticket | None:
    try:
        return Ticket(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:  # a damaged ticket is not worth failing over
        logger.warning("ignoring unreadable ticket %s (%s)", path, error)
        return None


def save_ticket(path: Path, ticket: Ticket) -> None:
    with atomic_path(path, durable=True) as temporary:
        temporary.write_text(json.dumps(asdict(ticket), indent=2) + "\n")


#: Appended to a ticket's path: the note of a submission whose answer was lost.
AMBIGUOUS_SUFFIX = ".ambiguous"


def ambiguous_note_path(ticket_path: Path) -> Path:
    return ticket_path.with_name(ticket_path.name + AMBIGUOUS_SUFFIX)


def record_ambiguous(ticket_path: Path, body_sha256: str, model_id: str, base_url: str, error: str) -> Path:
    """Note, beside the ticket, a submission that may have been accepted (and paid for) unanswered."""
    path = ambiguous_note_path(ticket_path)
    note = {
        "body_sha256": body_sha256,
        "model_id": model_id,
        "base_url": base_url,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "error": error,
        "meaning": "this submission was sent and its answer lost: the service may have accepted (and charged "
        "for) it; the next run submits it again",
    }
    with atomic_path(path, durable=True) as temporary:
        temporary.write_text(json.dumps(note, indent=2) + "\n")
    return path


def load_ambiguous(ticket_path: Path) -> dict | None:
    try:
        note = json.loads(ambiguous_note_path(ticket_path).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def run_prediction(
    query_path: str | os.PathLike,
    *,
    model_id: str,
    condition: str,
    expression_out: str | os.PathLike,
    metadata_out: str | os.PathLike,
    base_url: str | None = None,
    poll_interval: float = C.DEFAULT_POLL_INTERVAL_SECONDS,
    poll_timeout: float = C.DEFAULT_POLL_TIMEOUT_SECONDS,
    as_counts: bool = True,
    resubmit_failed: int = R.DEFAULT_RESUBMIT_FAILED,
    log: logging.Logger = logger,
    cpu_lock: ContextManager | None = None,
    ticket_path: str | os.PathLike | None = None,
    keep_ticket: bool = False,
    download_limits: DownloadLimits | None = None,
) -> dict[str, Any]:
    """Submit (or resume) the query in ``query_path``, wait, download, parse, write parts.

    ``cpu_lock``, when given, is held while the result is parsed: a batch runs many
    queries at once but parses one result at a time, on one core.

    Each change of status is logged with the time since polling began. A ``failed``
    query is resubmitted at most ``resubmit_failed`` times (default 0: a failure usually
    means metadata the model refuses, and every submission costs credits). The token is
    read from the environment (or keyring) inside the job: it is never a parameter.
    ``download_limits`` bounds the result download (size per sample asked, deadline).
    """
    body = json.loads(Path(query_path).read_text())
    digest = body_sha256(body)
    outputs = Path(expression_out).parent
    outputs.mkdir(parents=True, exist_ok=True)
    ticket_path = Path(ticket_path) if ticket_path is not None else outputs / TICKET_NAME
    started = time.monotonic()

    with SynthesizeClient(base_url, model_id=model_id, download_limits=download_limits) as client:
        ticket = load_ticket(ticket_path)
        if ticket is not None and not ticket.matches(digest, model_id, client.base_url):
            log.info("%s: the query changed since model query %s; submitting afresh", condition, ticket.query_id)
            ticket = None

        def on_status(status: str, payload: dict, elapsed: float) -> None:
            log.info("%s: status %s after %.1f s", condition, status, elapsed)

        submitted_before, unknown_ids = 0, 0
        while True:
            if ticket is None:
                earlier = load_ambiguous(ticket_path)
                if earlier is not None and earlier.get("body_sha256") == digest:
                    log.warning(
                        "%s: submitting again: an earlier submission of this query (%s) was sent but its answer "
                        "was lost, so the service may have accepted (and charged for) it; the API has no way to "
                        "tell, so this query may be paid for twice (note: %s)",
                        condition,
                        earlier.get("when", "time unknown"),
                        ambiguous_note_path(ticket_path),
                    )
                try:
                    query_id = _submit_when_admitted(client, model_id, body, condition, started + poll_timeout, log)
                except AmbiguousSubmissionError as error:
                    note = record_ambiguous(ticket_path, digest, model_id, client.base_url, str(error))
                    raise AmbiguousSubmissionError(f"{condition}: {error} (recorded in {note})") from None
                ticket = Ticket(query_id, digest, model_id, client.base_url, submitted_before + 1)
                save_ticket(ticket_path, ticket)
                ambiguous_note_path(ticket_path).unlink(missing_ok=True)
                log.info("%s: submitted to %s as model query %s", condition, model_id, query_id)
            else:
                log.info(
                    "%s: resuming model query %s (already submitted; not sending it again)", condition, ticket.query_id
                )
            try:
                ready = client.wait(
                    ticket.query_id, poll_interval=poll_interval, poll_timeout=poll_timeout, on_status=on_status
                )
                break
            except NotFoundError:
                # The server does not know the id (it was never accepted, or has been purged).
                unknown_ids += 1
                if unknown_ids > R.MAX_UNKNOWN_ID_RESUBMISSIONS:
                    raise
                what = f"{condition}: model query {ticket.query_id}"
                log.warning(
                    R.retry_line(
                        what, "unknown to the server, submitting afresh", unknown_ids, R.MAX_UNKNOWN_ID_RESUBMISSIONS
                    )
                )
            except QueryFailedError:
                if ticket.submissions > resubmit_failed:
                    raise
                what = f"{condition}: model query {ticket.query_id}"
                log.warning(R.retry_line(what, "failed, resubmitting", ticket.submissions, resubmit_failed))
            submitted_before, ticket = ticket.submissions, None

        summary = _download_and_write(
            client,
            ticket.query_id,
            ready,
            body,
            condition,
            model_id,
            expression_out,
            metadata_out,
            as_counts,
            log,
            cpu_lock or nullcontext(),
        )
    if not keep_ticket:
        ticket_path.unlink(missing_ok=True)
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["submissions"] = ticket.submissions
    log.info(
        "%s: wrote %d samples x %d genes (%s) in %.1f s",
        condition,
        summary["samples"],
        summary["genes"],
        summary["backend"],
        summary["seconds"],
    )
    return summary


def _submit_when_admitted(client, model_id, body, condition, deadline, log) -> str:
    """Submit; while the service refuses for too many queries in flight (429), wait and retry.

    The client already retried a few times honouring ``Retry-After``; a full concurrency
    cap is routine for a batch, so it waits on, until the poll deadline.
    """
    for retry in itertools.count(1):
        try:
            return client.submit(model_id, body)
        except RateLimitError:
            wait = R.admission_wait(deadline)
            if wait is None:
                raise
            reason = "the service is at its concurrency limit (429)"
            log.info(R.retry_line(f"{condition}: submission", reason, retry, wait=wait))
            time.sleep(wait)
    raise AssertionError("unreachable")


def _download_and_write(
    client, query_id, ready, body, condition, model_id, expression_out, metadata_out, as_counts, log, cpu_lock
) -> dict[str, Any]:
    """Download the result and write the parts; a broken or corrupt download is fetched again."""
    with tempfile.TemporaryDirectory(prefix=".download-", dir=Path(expression_out).parent) as scratch:
        for attempt in range(1, R.DOWNLOAD_ATTEMPTS + 1):
            try:
                result = client.fetch_result(
                    query_id, ready, Path(scratch) / "result.json", expected_samples=samples_asked(body)
                )
                log.info("%s: downloaded %.1f MB", condition, result.stat().st_size / 1e6)
                with cpu_lock:
                    return write_part(
                        result,
                        condition=condition,
                        model_id=model_id,
                        query_id=query_id,
                        body=body,
                        expression_out=expression_out,
                        metadata_out=metadata_out,
                        as_counts=as_counts,
                    )
            except (ResultError, APIConnectionError) as error:
                if attempt == R.DOWNLOAD_ATTEMPTS:
                    raise
                what = f"{condition}: download of model query {query_id}"
                log.warning(R.retry_line(what, f"unusable ({error})", attempt, R.DOWNLOAD_ATTEMPTS - 1))
                ready = client.status(query_id)  # a fresh signed URL
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class BatchQuery:
    """One condition of a batch: its name, its query file and its model."""

    condition: str
    query_path: Path
    model_id: str


def run_batch(
    queries: Sequence[BatchQuery],
    *,
    expression_out: str | os.PathLike,
    metadata_out: str | os.PathLike,
    in_flight: int = 1,
    ticket_dir: str | os.PathLike | None = None,
    log: logging.Logger = logger,
    **options: Any,
) -> dict[str, Any]:
    """Run many predictions in one job: ``in_flight`` queries at a time, one parse at a time.

    Waiting on the API costs no CPU, so one job keeps ``in_flight`` queries going with
    threads, while parsing (the CPU-bound part) is serialised, so the job never needs more
    than one core. Each condition works in its own folder under ``.{expression file name}.work/``
    (its ticket, then its finished part with a note of the body it answers), so a killed
    batch resumes: finished conditions are not downloaded again, pending ones resume their
    model query. The batch's pair is the conditions' parts merged in the given order; the
    work folder is removed once it is written.

    Tickets (``{condition}.json``) are kept in ``ticket_dir`` (default: a folder next to
    the outputs) after success: when the batch runs again (a row of it was edited), its
    unchanged conditions download their answered queries again rather than buy them again.
    Delete the folder to buy every query afresh. ``options`` are :func:`run_prediction`'s.
    """
    if not queries:
        raise ValueError("a batch needs at least one query")
    names = [query.condition for query in queries]
    if len(set(names)) != len(names):
        raise ValueError(f"a batch lists a condition twice: {sorted({n for n in names if names.count(n) > 1})}")
    started = time.monotonic()
    # Named after the output, so that jobs writing into one folder keep apart.
    work = Path(expression_out).parent / f".{Path(expression_out).name}{WORK_DIR_SUFFIX}"
    tickets = Path(ticket_dir) if ticket_dir is not None else work.with_name(f".{Path(expression_out).name}.tickets")
    tickets.mkdir(parents=True, exist_ok=True)
    cpu_lock = threading.Lock()

    def one(query: BatchQuery) -> dict[str, Any]:
        folder = work / query.condition
        expression, metadata = folder / "expression.parquet", folder / "metadata.parquet"
        digest = body_sha256(json.loads(Path(query.query_path).read_text()))
        done = folder / DONE_NAME
        note = _done_note(done)
        if expression.exists() and metadata.exists() and note is not None and note["body_sha256"] == digest:
            log.info("%s: already done in an earlier run of this batch", query.condition)
            return note["summary"]
        done.unlink(missing_ok=True)
        summary = run_prediction(
            query.query_path,
            model_id=query.model_id,
            condition=query.condition,
            expression_out=expression,
            metadata_out=metadata,
            log=log,
            cpu_lock=cpu_lock,
            ticket_path=tickets / f"{query.condition}.json",
            keep_ticket=True,
            **options,
        )
        with atomic_path(done, durable=True) as temporary:
            temporary.write_text(json.dumps({"body_sha256": digest, "summary": summary}) + "\n")
        return summary

    with ThreadPoolExecutor(max_workers=max(1, min(in_flight, len(queries))), thread_name_prefix="query") as pool:
        futures = [pool.submit(one, query) for query in queries]
        # Every query is waited for, so that a failure does not abandon paid queries in flight.
        errors = [future.exception() for future in futures]
    failed = [(query.condition, error) for query, error in zip(queries, errors) if error is not None]
    if failed:
        for condition, error in failed:
            log.error("%s: %s", condition, error)
        raise failed[0][1]
    summaries = [future.result() for future in futures]
    with cpu_lock:
        merge_parts(
            [work / name / "expression.parquet" for name in names],
            [work / name / "metadata.parquet" for name in names],
            expression_out,
            metadata_out,
        )
    shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - started, 2)
    log.info(
        "batch of %d conditions (%d samples) done in %.1f s, %d queries in flight at most",
        len(queries),
        sum(s["samples"] for s in summaries),
        seconds,
        min(in_flight, len(queries)),
    )
    return {"conditions": summaries, "seconds": seconds}


def _done_note(path: Path) -> dict | None:
    """A finished condition's note (the body hash and its summary), or None if missing or damaged."""
    try:
        note = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return note if isinstance(note, dict) and {"body_sha256", "summary"} <= note.keys() else None
