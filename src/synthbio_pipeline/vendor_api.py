"""rsynthbio's functions (the vendor's R client): ``predict_query``, ``list_models``, ``get_example_query``."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthbio_pipeline.client import constants as C
from synthbio_pipeline.client.http import SynthesizeClient
from synthbio_pipeline.client.token_store import resolve_token
from synthbio_pipeline.formats.result_json import to_frames
from synthbio_pipeline.vocabulary.models import get_model, is_known_model
from synthbio_pipeline.vocabulary.query import to_wire, validate_modality

if TYPE_CHECKING:  # imported where a frame is built: `import synthbio_pipeline` stays light
    import pandas as pd


def predict_query(
    query: Mapping[str, Any],
    as_counts: bool = True,
    api_base_url: str | None = None,
    poll_interval_seconds: float = C.DEFAULT_POLL_INTERVAL_SECONDS,
    poll_timeout_seconds: float = C.DEFAULT_POLL_TIMEOUT_SECONDS,
    return_download_url: bool = False,
) -> dict[str, Any]:
    """Validate, submit, poll, download and parse one query.

    Returns ``{"metadata": DataFrame, "expression": DataFrame, "latents": DataFrame}``
    (samples in input order; ``expression`` is samples × genes, integer counts, or
    log1p-CPM when ``as_counts`` is false). With ``return_download_url`` it returns
    ``{"download_url": ..., "query_id": ...}`` instead of downloading.
    """
    validate_modality(query)
    model_id, body = to_wire(query)
    resolve_token()  # fail before anything is sent when there is no token
    with SynthesizeClient(api_base_url, model_id=model_id) as client:
        query_id = client.submit(model_id, body)
        ready = client.wait(query_id, poll_interval=poll_interval_seconds, poll_timeout=poll_timeout_seconds)
        if return_download_url:
            return {"download_url": ready["downloadUrl"], "query_id": query_id}
        result_kind = get_model(model_id).result_kind if is_known_model(model_id) else "expression"
        with tempfile.TemporaryDirectory(prefix="synthbio-") as workdir:
            asked = sum(int(item.get("num_samples", 1)) for item in body.get("inputs", []))
            path = client.fetch_result(query_id, ready, Path(workdir) / "result.json", expected_samples=asked or None)
            return to_frames(path, as_counts=as_counts, result_kind=result_kind)


def list_models(api_base_url: str | None = None) -> pd.DataFrame:
    """The models the token may use, as the server lists them (one row per model)."""
    import pandas as pd

    with SynthesizeClient(api_base_url) as client:
        return pd.DataFrame(client.list_models().get("models", []))


def get_example_query(model_id: str, api_base_url: str | None = None) -> dict:
    """The server's example query for a model, in the wire format."""
    with SynthesizeClient(api_base_url, model_id=model_id) as client:
        return client.get_example_query(model_id).get("example_query", {})
