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
from collections.abc import Callable, Sequence
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
from synthbio_pipeline.client.self_hosted import SelfHostedClient, self_hosted_enabled
from synthbio_pipeline.errors import (
    AmbiguousSubmissionError,
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    DownloadRefusedError,
    MissingTokenError,
    NotFoundError,
    PollTimeoutError,
    QueryFailedError,
    RateLimitError,
    ResultError,
    ServerError,
    ValidationError,
)
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.arrow_stream import ArrowResult, open_arrow_result
from synthbio_pipeline.formats.metadata_prediction import merge_prediction_parts, write_prediction_part
from synthbio_pipeline.formats.parquet import PartTarget, merge_latents, merge_parts, write_part
from synthbio_pipeline.vocabulary.families import GEM2, PREDICT_METADATA, gem2_operation, is_gem2
from synthbio_pipeline.vocabulary.models import get_model, is_known_model

logger = logging.getLogger(__name__)

TICKET_NAME = ".synthbio-query.json"
#: Next to a batch's outputs: one folder per condition (ticket, finished part) until the batch is done.
WORK_DIR_SUFFIX = ".work"
#: A condition's latents part in a batch's work folder (``latents_out``).
LATENTS_NAME = "latents.parquet"
#: Written next to a condition's finished part in a batch's work folder: the body it answers.
DONE_NAME = ".done.json"
#: Seconds between two "still running" lines of a query in the job log (config:
#: progress_interval_seconds); the status changes are logged as well.
DEFAULT_HEARTBEAT_SECONDS = 60.0


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
        return not self.changes(body_sha256, model_id, base_url)

    def changes(self, body_sha256: str, model_id: str, base_url: str) -> list[str]:
        """What differs from the query this ticket is for: the service URL, the model, the query."""
        changed = []
        if self.base_url != base_url:
            changed.append(f"the service URL ({self.base_url} -> {base_url})")
        if self.model_id != model_id:
            changed.append(f"the model ({self.model_id} -> {model_id})")
        if self.body_sha256 != body_sha256:
            changed.append("the query")
        return changed


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


METADATA_PREDICTION = "metadata-prediction"


def result_kind(model_id: str, body: Any = None) -> str:
    """``expression``, or ``metadata-prediction`` for a metadata-prediction model (GEM-2's
    ``predict-metadata`` too: ``gem-2`` names its operation in ``body``)."""
    if is_gem2(model_id):
        return METADATA_PREDICTION if gem2_operation(model_id, body) == PREDICT_METADATA else "expression"
    return get_model(model_id).result_kind if is_known_model(model_id) else "expression"


#: The files a query's answer becomes, per kind of result (a batch's work folder holds these per query).
PART_NAMES = {
    "expression": ("expression.parquet", "metadata.parquet"),
    METADATA_PREDICTION: ("predicted_metadata.parquet", "classifier_probs.parquet"),
}


class Progress:
    """Logs, for every query still waiting on the service, a line every ``interval`` seconds.

    "lung_normal: running for 60 s": status changes alone can leave a job log silent for
    the whole of a long query. One thread serves all the queries of a batch; each query's
    lines come at whole multiples of ``interval`` from when it began waiting. An
    ``interval`` of 0 or less logs nothing.
    """

    def __init__(self, log: logging.Logger = logger, interval: float = DEFAULT_HEARTBEAT_SECONDS):
        self.log = log
        self.interval = float(interval)
        self._waiting: dict[str, list] = {}  # condition -> [began, status, next line due]
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def waiting(self, condition: str, status: str) -> None:
        """``condition`` waits on the service, with this last status (its clock starts at the first call)."""
        with self._lock:
            entry = self._waiting.get(condition)
            if entry is None:
                now = time.monotonic()
                self._waiting[condition] = [now, status, now + self.interval]
                self._changed.notify_all()
            else:
                entry[1] = status

    def finished(self, condition: str) -> None:
        with self._lock:
            self._waiting.pop(condition, None)

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                for condition, entry in self._waiting.items():
                    began, status, due = entry
                    if due <= now:
                        shown = "" if status == "running" else f" (status {status})"
                        self.log.info("%s: running for %.0f s%s", condition, due - began, shown)
                        entry[2] = due + self.interval * max(1, int((now - due) // self.interval) + 1)
                due = min((entry[2] for entry in self._waiting.values()), default=None)
                self._changed.wait(None if due is None else max(0.0, due - time.monotonic()))


def run_prediction(
    query_path: str | os.PathLike,
    *,
    model_id: str,
    condition: str,
    expression_out: str | os.PathLike | None = None,
    metadata_out: str | os.PathLike | None = None,
    predicted_out: str | os.PathLike | None = None,
    probs_out: str | os.PathLike | None = None,
    sample_ids: Sequence[str] | None = None,
    extra_columns: dict[str, Any] | None = None,
    expected_genes: Sequence[str] | None = None,
    base_url: str | None = None,
    poll_interval: float = C.DEFAULT_POLL_INTERVAL_SECONDS,
    poll_timeout: float = C.DEFAULT_POLL_TIMEOUT_SECONDS,
    as_counts: bool = True,
    resubmit_failed: int = R.DEFAULT_RESUBMIT_FAILED,
    log: logging.Logger = logger,
    cpu_lock: ContextManager | None = None,
    ticket_path: str | os.PathLike | None = None,
    keep_ticket: bool = False,
    heartbeat: float = DEFAULT_HEARTBEAT_SECONDS,
    progress: Progress | None = None,
    self_hosted: bool | None = None,
    allowed_http_hosts: Sequence[str] = (),
    send_token_over_http: bool = False,
    latents_out: str | os.PathLike | None = None,
    download_limits: DownloadLimits | None = None,
) -> dict[str, Any]:
    """Submit (or resume) the query in ``query_path``, wait, download, parse, write parts.

    ``latents_out``: the samples' latents go there too (optional; a metadata-prediction
    model's are those it encoded each input to).

    With ``self_hosted`` (or, when it is ``None``, ``SYNTHESIZE_SELF_HOSTED`` set as the
    vendor's client reads it) the service is a model container: one synchronous request whose
    Arrow stream is parsed off the socket into the same parts (:func:`run_self_hosted`); no
    ticket, no polling. ``allowed_http_hosts`` and ``send_token_over_http``: the client's URL
    rules (:func:`~synthbio_pipeline.client.http.check_base_url`).

    An expression model's answer becomes ``expression_out`` and ``metadata_out``
    (:func:`~synthbio_pipeline.formats.parquet.write_part`; ``extra_columns`` are added to
    each metadata row, ``expected_genes`` is the gene order a reference's counts were sent
    in); a metadata-prediction model's answer becomes ``predicted_out`` and ``probs_out``, one
    row per sample of ``sample_ids`` (:mod:`~synthbio_pipeline.formats.metadata_prediction`).

    ``cpu_lock``, when given, is held while the result is parsed: a batch runs many
    queries at once but parses one result at a time, on one core.

    Each change of status is logged with the time since polling began, and while the
    query runs, a line every ``heartbeat`` seconds ("lung: running for 60 s"); ``progress``
    is the batch's :class:`Progress`, which logs those lines for all its queries. A ``failed``
    query is resubmitted at most ``resubmit_failed`` times (default 0: a failure usually
    means metadata the model refuses, and every submission costs credits). The token is
    read from the environment (or keyring) inside the job: it is never a parameter.
    ``download_limits`` bounds the result download (size per sample asked, deadline), and
    on the self-hosted path the Arrow stream the same way.
    """
    body = json.loads(Path(query_path).read_text())
    digest = body_sha256(body)
    url_rules = {"allowed_http_hosts": tuple(allowed_http_hosts), "send_token_over_http": send_token_over_http}
    # ``write`` turns an answer into the parts: a downloaded result document, or (self-hosted)
    # the container's Arrow stream, open.
    if result_kind(model_id, body) == METADATA_PREDICTION:
        if predicted_out is None or probs_out is None or sample_ids is None:
            raise ValueError(f"{model_id} predicts metadata: give predicted_out, probs_out and sample_ids")
        first = predicted_out

        def write(result: Path | ArrowResult, query_id: str) -> dict[str, Any]:
            return write_prediction_part(
                result,
                sample_ids=sample_ids,
                model_id=model_id,
                query_id=query_id,
                predicted_out=predicted_out,
                probs_out=probs_out,
                latents_out=latents_out,
            )

    else:
        if expression_out is None or metadata_out is None:
            raise ValueError(f"{model_id} generates expression: give expression_out and metadata_out")
        first = expression_out
        target = PartTarget(
            condition=condition,
            model_id=model_id,
            body=body,
            expression_out=expression_out,
            metadata_out=metadata_out,
            as_counts=as_counts,
            extra_columns=extra_columns,
            expected_genes=expected_genes,
            latents_out=latents_out,
        )

        def write(result: Path | ArrowResult, query_id: str) -> dict[str, Any]:
            return write_part(result, target, query_id=query_id)

    if self_hosted_enabled(self_hosted):
        return run_self_hosted(
            body,
            model_id=model_id,
            condition=condition,
            write=write,
            folder=Path(first).parent,
            base_url=base_url,
            log=log,
            cpu_lock=cpu_lock,
            download_limits=download_limits,
            **url_rules,
        )

    outputs = Path(first).parent
    outputs.mkdir(parents=True, exist_ok=True)
    ticket_path = Path(ticket_path) if ticket_path is not None else outputs / TICKET_NAME
    started = time.monotonic()

    own_progress = Progress(log, heartbeat) if progress is None else nullcontext(progress)
    with (
        own_progress as progress,
        SynthesizeClient(base_url, model_id=model_id, download_limits=download_limits, **url_rules) as client,
    ):
        ticket = load_ticket(ticket_path)
        changes = [] if ticket is None else ticket.changes(digest, model_id, client.base_url)
        if changes:
            log.info(
                "%s: %s changed since model query %s; submitting afresh",
                condition,
                " and ".join(changes),
                ticket.query_id,
            )
            ticket = None

        def on_status(status: str, payload: dict, elapsed: float) -> None:
            log.info("%s: status %s after %.1f s", condition, status, elapsed)
            progress.waiting(condition, status)

        submitted_before, unknown_ids = 0, 0
        try:
            while True:
                if ticket is None:
                    earlier = load_ambiguous(ticket_path)
                    if earlier is not None and earlier.get("body_sha256") == digest:
                        log.warning(
                            "%s: submitting again: an earlier submission of this query (%s) was sent but its "
                            "answer was lost, so the service may have accepted (and charged for) it; the API has "
                            "no way to tell, so this query may be paid for twice (note: %s)",
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
                        "%s: resuming model query %s (already submitted; not sending it again)",
                        condition,
                        ticket.query_id,
                    )
                try:
                    progress.waiting(condition, "submitted")
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
                            what,
                            "unknown to the server, submitting afresh",
                            unknown_ids,
                            R.MAX_UNKNOWN_ID_RESUBMISSIONS,
                        )
                    )
                except QueryFailedError:
                    if ticket.submissions > resubmit_failed:
                        raise
                    what = f"{condition}: model query {ticket.query_id}"
                    log.warning(R.retry_line(what, "failed, resubmitting", ticket.submissions, resubmit_failed))
                submitted_before, ticket = ticket.submissions, None
        finally:
            progress.finished(condition)

        summary = _download_and_write(
            client,
            ticket.query_id,
            ready,
            condition,
            outputs,
            write,
            log,
            cpu_lock or nullcontext(),
            samples_asked(body),
        )
    if not keep_ticket:
        ticket_path.unlink(missing_ok=True)
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["submissions"] = ticket.submissions
    summary["base_url"] = ticket.base_url  # where the query went (the report's provenance)
    summary.setdefault("condition", condition)
    if "genes" in summary:
        shape = f"{summary['samples']} samples x {summary['genes']} genes"
    else:
        shape = f"predicted metadata of {summary['samples']} samples ({summary['fields']} fields)"
    log.info("%s: wrote %s (%s) in %.1f s", condition, shape, summary["backend"], summary["seconds"])
    return summary


#: The query id a self-hosted answer's parts carry: a container gives none.
SELF_HOSTED_QUERY_ID = "self-hosted"


def run_self_hosted(
    body: dict,
    *,
    model_id: str,
    condition: str,
    write: Callable[[ArrowResult, str], dict[str, Any]],
    folder: str | os.PathLike,
    base_url: str | None = None,
    log: logging.Logger = logger,
    cpu_lock: ContextManager | None = None,
    allowed_http_hosts: Sequence[str] = (),
    send_token_over_http: bool = False,
    download_limits: DownloadLimits | None = None,
) -> dict[str, Any]:
    """One condition against a self-hosted model container: ``POST .../predict`` answered
    synchronously with an Arrow IPC stream, which ``write`` (given the open stream and the
    query id ``self-hosted``) parses batch by batch straight off the socket into the parts in
    ``folder``: an expression model's (:func:`~synthbio_pipeline.formats.parquet.write_part`;
    memory of one record batch and one tile, as the JSON path) or a metadata-prediction
    model's (:func:`~synthbio_pipeline.formats.metadata_prediction.write_prediction_part`).

    No ticket is kept: the container is the partner's own and answers at once, so a job
    killed mid-request sends the request again when rerun (said in the README). The request is
    not retried once sent (the client never repeats a POST whose answer broke off). The
    stream is parsed while it arrives, so ``cpu_lock`` is held for the whole request: a job
    runs one self-hosted request at a time and needs one core.

    ``download_limits`` bounds the stream as it bounds a hosted result's download (bytes per
    sample asked, an overall deadline): a stream over either stops with
    :class:`~synthbio_pipeline.errors.DownloadRefusedError` and no part is written.
    """
    started = time.monotonic()
    Path(folder).mkdir(parents=True, exist_ok=True)
    with (
        SelfHostedClient(
            base_url,
            model_id=model_id,
            allowed_http_hosts=allowed_http_hosts,
            send_token_over_http=send_token_over_http,
            download_limits=download_limits,
        ) as client,
        cpu_lock or nullcontext(),
    ):
        log.info("%s: sending to the self-hosted container at %s (%s)", condition, client.base_url, model_id)
        with client.predict_stream(model_id, body) as stream, open_arrow_result(stream) as result:
            summary = write(result, SELF_HOSTED_QUERY_ID)
            log.info("%s: read %.1f MB of Arrow stream", condition, stream.bytes_read / 1e6)
        url = client.base_url
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["submissions"] = 1
    summary["base_url"] = url
    summary["self_hosted"] = True
    summary.setdefault("condition", condition)
    shape = (
        f"{summary['samples']} samples x {summary['genes']} genes"
        if "genes" in summary
        else (f"predicted metadata of {summary['samples']} samples")
    )
    log.info("%s: wrote %s (%s, self-hosted) in %.1f s", condition, shape, summary["backend"], summary["seconds"])
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
    client, query_id, ready, condition, folder, write, log, cpu_lock, samples: int | None = None
) -> dict[str, Any]:
    """Download the result and write the parts; a broken or corrupt download is fetched again.

    ``samples`` (asked for) sets the download's size limit."""
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        for attempt in range(1, R.DOWNLOAD_ATTEMPTS + 1):
            try:
                result = client.fetch_result(query_id, ready, Path(scratch) / "result.json", expected_samples=samples)
                log.info("%s: downloaded %.1f MB", condition, result.stat().st_size / 1e6)
                with cpu_lock:
                    return write(result, query_id)
            except (ResultError, APIConnectionError) as error:
                if attempt == R.DOWNLOAD_ATTEMPTS:
                    raise
                what = f"{condition}: download of model query {query_id}"
                log.warning(R.retry_line(what, f"unusable ({error})", attempt, R.DOWNLOAD_ATTEMPTS - 1))
                ready = client.status(query_id)  # a fresh signed URL
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class BatchQuery:
    """One condition of a batch: its name, its query file and its model.

    ``extra_columns`` are added to its samples' metadata rows (expression models);
    ``sample_ids`` name its outputs (metadata-prediction models, whose inputs are counts).
    """

    condition: str
    query_path: Path
    model_id: str
    extra_columns: dict[str, Any] | None = None
    sample_ids: tuple[str, ...] | None = None


def run_batch(
    queries: Sequence[BatchQuery],
    *,
    expression_out: str | os.PathLike | None = None,
    metadata_out: str | os.PathLike | None = None,
    predicted_out: str | os.PathLike | None = None,
    probs_out: str | os.PathLike | None = None,
    latents_out: str | os.PathLike | None = None,
    expected_genes: Sequence[str] | None = None,
    in_flight: int = 1,
    ticket_dir: str | os.PathLike | None = None,
    log: logging.Logger = logger,
    heartbeat: float = DEFAULT_HEARTBEAT_SECONDS,
    name: str | None = None,
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

    A batch of metadata-prediction queries (each with its ``sample_ids``) writes
    ``predicted_out`` and ``probs_out`` instead of the expression pair. A batch with
    ``latents_out`` also writes its samples' latents there (``latents.parquet`` per condition
    in the work folder, merged in the same order).

    Progress goes to ``log``: a line per waiting query every ``heartbeat`` seconds, and a
    line each time a query is done ("batch 0003: 7 of 10 ready"; ``name`` defaults to
    "batch" and the output's folder). A failure's error carries a note naming its condition
    and how many of the batch failed (:func:`failure_line` puts them in one line).
    """
    if not queries:
        raise ValueError("a batch needs at least one query")
    names = [query.condition for query in queries]
    if len(set(names)) != len(names):
        raise ValueError(f"a batch lists a condition twice: {sorted({n for n in names if names.count(n) > 1})}")
    kinds = {
        result_kind(query.model_id, json.loads(Path(query.query_path).read_text()) if query.model_id == GEM2 else None)
        for query in queries
    }
    if len(kinds) != 1:
        raise ValueError("a batch mixes metadata-prediction and expression models; run them as separate batches")
    kind = kinds.pop()
    outs = (predicted_out, probs_out) if kind == METADATA_PREDICTION else (expression_out, metadata_out)
    if None in outs:
        wanted = "predicted_out and probs_out" if kind == METADATA_PREDICTION else "expression_out and metadata_out"
        raise ValueError(f"this batch's models give {kind} results: give {wanted}")
    first_name, second_name = PART_NAMES[kind]
    started = time.monotonic()
    # Named after the output, so that jobs writing into one folder keep apart.
    work = Path(outs[0]).parent / f".{Path(outs[0]).name}{WORK_DIR_SUFFIX}"
    tickets = Path(ticket_dir) if ticket_dir is not None else work.with_name(f".{Path(outs[0]).name}.tickets")
    tickets.mkdir(parents=True, exist_ok=True)
    cpu_lock = threading.Lock()
    name = name or f"batch {Path(outs[0]).parent.name}"
    ready = 0
    ready_lock = threading.Lock()

    def count_ready() -> None:
        nonlocal ready
        with ready_lock:
            ready += 1
            log.info("%s: %d of %d ready", name, ready, len(queries))

    def one(query: BatchQuery) -> dict[str, Any]:
        folder = work / query.condition
        first, second = folder / first_name, folder / second_name
        latents = folder / LATENTS_NAME if latents_out is not None else None
        digest = body_sha256(json.loads(Path(query.query_path).read_text()))
        # The columns added to the part are part of what it answers.
        digest = body_sha256({"body": digest, "extra_columns": query.extra_columns, "samples": query.sample_ids})
        done = folder / DONE_NAME
        note = _done_note(done)
        written = first.exists() and second.exists() and (latents is None or latents.exists())
        if written and note is not None and note["body_sha256"] == digest:
            log.info("%s: already done in an earlier run of this batch", query.condition)
            count_ready()
            return note["summary"]
        done.unlink(missing_ok=True)
        if kind == METADATA_PREDICTION:
            outputs = {
                "predicted_out": first,
                "probs_out": second,
                "sample_ids": query.sample_ids,
                "latents_out": latents,
            }
        else:
            outputs = {
                "expression_out": first,
                "metadata_out": second,
                "extra_columns": query.extra_columns,
                "expected_genes": expected_genes,
                "latents_out": latents,
            }
        summary = run_prediction(
            query.query_path,
            model_id=query.model_id,
            condition=query.condition,
            **outputs,
            log=log,
            cpu_lock=cpu_lock,
            ticket_path=tickets / f"{query.condition}.json",
            keep_ticket=True,
            progress=progress,
            **options,
        )
        with atomic_path(done, durable=True) as temporary:
            temporary.write_text(json.dumps({"body_sha256": digest, "summary": summary}) + "\n")
        count_ready()
        return summary

    workers = max(1, min(in_flight, len(queries)))
    with Progress(log, heartbeat) as progress, ThreadPoolExecutor(workers, thread_name_prefix="query") as pool:
        futures = [pool.submit(one, query) for query in queries]
        # Every query is waited for, so that a failure does not abandon paid queries in flight.
        errors = [future.exception() for future in futures]
    failed = [(query.condition, error) for query, error in zip(queries, errors) if error is not None]
    if failed:
        for condition, error in failed:
            log.error("%s: %s", condition, error)
        first_condition, first = failed[0]
        others = f"; {len(failed)} of the {len(queries)} conditions of {name} failed" if len(failed) > 1 else ""
        first.add_note(f"condition {first_condition}{others}")
        raise first
    summaries = [future.result() for future in futures]
    merge = merge_prediction_parts if kind == METADATA_PREDICTION else merge_parts
    with cpu_lock:
        merge([work / name / first_name for name in names], [work / name / second_name for name in names], *outs)
        if latents_out is not None:
            merge_latents([work / name / LATENTS_NAME for name in names], latents_out)
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


def failure_line(error: BaseException) -> str:
    """One line for the console: what failed (the condition, from :func:`run_batch`'s note)
    and what to do. The traceback belongs in the job's log."""
    notes = " ".join(getattr(error, "__notes__", []))
    what = " ".join(str(error).split()) or type(error).__name__
    if len(what) > 300:
        what = what[:297] + "..."
    where = f"{notes}: " if notes else ""
    return f"{where}{what} — {_advice(error)}"


def _advice(error: BaseException) -> str:
    rerun = "then rerun: submitted queries are resumed, not bought again"
    if isinstance(error, MissingTokenError):
        return "set SYNTHESIZE_API_KEY or run `synthbio-pipeline token set`"
    if isinstance(error, AuthenticationError):
        return f"the token was refused: set SYNTHESIZE_API_KEY or run `synthbio-pipeline token set`, {rerun}"
    if isinstance(error, ValidationError):
        return "the service refused the query: fix that row of the conditions table"
    if isinstance(error, RateLimitError):
        return f"the service kept refusing for load: lower --resources synthbio_api or queries_per_job, {rerun}"
    if isinstance(error, ServerError):
        return f"the service has trouble: wait a little, {rerun}"
    if isinstance(error, APIStatusError):
        return f"an answer the workflow did not expect: check api_base_url, {rerun}"
    if isinstance(error, AmbiguousSubmissionError):
        return (
            "the service may have accepted (and charged for) this query; a rerun submits it again, so it may be "
            "paid for twice (a note beside the tickets records it)"
        )
    if isinstance(error, DownloadRefusedError):
        return (
            f"a download limit was hit ({error.limit}); if the result is genuine, raise the setting the message "
            f"names, {rerun}"
        )
    if isinstance(error, APIConnectionError):  # and APITimeoutError
        return f"check that the service at api_base_url is reachable, {rerun}"
    if isinstance(error, PollTimeoutError):
        return "raise poll_timeout_seconds, or rerun: polling resumes the same model query"
    if isinstance(error, QueryFailedError):
        return "check the condition's metadata; resubmit_failed in the config retries it (each try is paid for)"
    if isinstance(error, ResultError):
        return "the result could not be read: rerun; if it persists, report it with this job's log"
    return "see the job's log for the traceback"
