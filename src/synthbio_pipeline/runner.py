"""One prediction job, as the workflow's wrapper runs it: query file in, Parquet parts out.

Model queries are paid for, and jobs get killed (node loss, ``kill -9``, poll timeouts).
So the job keeps a *ticket* next to its outputs: the moment the server accepts the query,
its ``modelQueryId`` and a hash of the exact body are written there durably, before the
first poll. A rerun finds the ticket and resumes polling that query instead of submitting
it again, as long as the body (and model and host) are unchanged; a changed query is
submitted afresh. The ticket is removed once the outputs are written.

What is still not covered, because the API has no idempotency key: a submission the
server accepted whose answer was lost on the way back. The client does not resend it (a
POST is never retried after it was sent), so the job fails and its rerun submits again;
the window is the few milliseconds between the server accepting and us writing the ticket.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import _constants as C
from ._io import atomic_path
from .client import SynthesizeClient
from .errors import APIConnectionError, NotFoundError, QueryFailedError, ResultError
from .tables import write_part

logger = logging.getLogger(__name__)

TICKET_NAME = ".synthbio-query.json"
#: Downloads of one result, when a download breaks or the document is corrupt or truncated.
DOWNLOAD_ATTEMPTS = 3


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
    resubmit_failed: int = 0,
    log: logging.Logger = logger,
) -> dict[str, Any]:
    """Submit (or resume) the query in ``query_path``, wait, download, parse, write parts.

    Each change of status is logged with the time since polling began. A ``failed``
    query is resubmitted at most ``resubmit_failed`` times (default 0: a failure usually
    means metadata the model refuses, and every submission costs credits). The token is
    read from the environment (or keyring) inside the job: it is never a parameter.
    """
    body = json.loads(Path(query_path).read_text())
    digest = body_sha256(body)
    outputs = Path(expression_out).parent
    outputs.mkdir(parents=True, exist_ok=True)
    ticket_path = outputs / TICKET_NAME
    started = time.monotonic()

    with SynthesizeClient(base_url, model_id=model_id) as client:
        ticket = load_ticket(ticket_path)
        if ticket is not None and not ticket.matches(digest, model_id, client.base_url):
            log.info("%s: the query changed since model query %s; submitting afresh", condition, ticket.query_id)
            ticket = None

        def on_status(status: str, payload: dict, elapsed: float) -> None:
            log.info("%s: status %s after %.1f s", condition, status, elapsed)

        submitted_before = 0
        while True:
            if ticket is None:
                query_id = client.submit(model_id, body)
                ticket = Ticket(query_id, digest, model_id, client.base_url, submitted_before + 1)
                save_ticket(ticket_path, ticket)
                log.info("%s: submitted to %s as model query %s", condition, model_id, query_id)
            else:
                log.info("%s: resuming model query %s (already submitted; not sending it again)",
                         condition, ticket.query_id)
            try:
                ready = client.wait(ticket.query_id, poll_interval=poll_interval, poll_timeout=poll_timeout,
                                    on_status=on_status)
                break
            except NotFoundError:
                # The server does not know the id (it was never accepted, or has been purged).
                log.warning("%s: model query %s is unknown to the server; submitting afresh",
                            condition, ticket.query_id)
            except QueryFailedError:
                if ticket.submissions > resubmit_failed:
                    raise
                log.warning("%s: model query %s failed; resubmitting (%d of at most %d)", condition,
                            ticket.query_id, ticket.submissions, resubmit_failed)
            submitted_before, ticket = ticket.submissions, None

        summary = _download_and_write(client, ticket.query_id, ready, body, condition, model_id,
                                      expression_out, metadata_out, as_counts, log)
    ticket_path.unlink(missing_ok=True)
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["submissions"] = ticket.submissions
    log.info("%s: wrote %d samples x %d genes (%s) in %.1f s", condition, summary["samples"], summary["genes"],
             summary["backend"], summary["seconds"])
    return summary


def _download_and_write(client, query_id, ready, body, condition, model_id, expression_out, metadata_out,
                        as_counts, log) -> dict[str, Any]:
    """Download the result and write the parts; a broken or corrupt download is fetched again."""
    with tempfile.TemporaryDirectory(prefix=".download-", dir=Path(expression_out).parent) as scratch:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                result = client.fetch_result(query_id, ready, Path(scratch) / "result.json")
                log.info("%s: downloaded %.1f MB", condition, result.stat().st_size / 1e6)
                return write_part(result, condition=condition, model_id=model_id, query_id=query_id, body=body,
                                  expression_out=expression_out, metadata_out=metadata_out, as_counts=as_counts)
            except (ResultError, APIConnectionError) as error:
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
                log.warning("%s: download %d of model query %s is unusable (%s); downloading again",
                            condition, attempt, query_id, error)
                ready = client.status(query_id)  # a fresh signed URL
    raise AssertionError("unreachable")
