"""One prediction job, as the workflow's wrapper runs it: query file in, Parquet parts out."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _constants as C
from .client import SynthesizeClient
from .tables import write_part

log = logging.getLogger(__name__)


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
    log: logging.Logger = log,
) -> dict[str, Any]:
    """Submit the query in ``query_path``, wait for it, download and parse its result.

    Each change of status is logged with the time since submission. The token is read
    from the environment (or keyring) here, inside the job: it is never a parameter.
    """
    body = json.loads(Path(query_path).read_text())
    started = time.monotonic()
    with SynthesizeClient(base_url, model_id=model_id) as client:
        query_id = client.submit(model_id, body)
        log.info("%s: submitted to %s as model query %s", condition, model_id, query_id)

        def on_status(status: str, payload: dict, elapsed: float) -> None:
            log.info("%s: status %s after %.1f s", condition, status, elapsed)

        ready = client.wait(query_id, poll_interval=poll_interval, poll_timeout=poll_timeout, on_status=on_status)
        workdir = Path(expression_out).parent
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=workdir) as scratch:
            result = client.fetch_result(query_id, ready, Path(scratch) / "result.json")
            log.info("%s: downloaded %.1f MB", condition, result.stat().st_size / 1e6)
            summary = write_part(result, condition=condition, model_id=model_id, query_id=query_id, body=body,
                                 expression_out=expression_out, metadata_out=metadata_out, as_counts=as_counts)
    summary["seconds"] = round(time.monotonic() - started, 2)
    log.info("%s: wrote %d samples x %d genes (%s) in %.1f s", condition, summary["samples"], summary["genes"],
             summary["backend"], summary["seconds"])
    return summary
