"""The vendor clients' functions, one call each: ``predict_query``, ``list_models``, ``get_example_query``.

They take the arguments of pysynthbio 4.2.4 (and rsynthbio's) and return what it returns, so a
notebook written for it runs with ``import synthbio_pipeline as pysynthbio``. Underneath is
this package's client: retried requests, polling that can be resumed, a result streamed to
disk and parsed in bounded memory. What differs from the vendor's client:

- ``predict_query`` also takes the rsynthbio-style query without ``model_id`` (``modality``
  and ``mode`` in the query, checked locally), and ``as_counts`` (``False``: log1p-CPM);
- with ``model_id``, a query for a GEM-1 model of the model table is checked locally before
  anything is sent; others (GEM-2) go as given and the server judges them;
- a model id whose result this package cannot format raises ``ValueError`` before the query
  is sent (unless ``raw_response``), not after it has run;
- the caller's query dict is never changed (pysynthbio adds ``source`` and the keyword
  arguments to it); ``source`` says ``synthbio-pipeline``;
- no browser is opened for a token; it is asked for (hidden) only where a person can answer;
- ``return_download_url`` also gives the ``query_id``;
- plain ``http://`` goes only to loopback or to ``allowed_http_hosts``, and the token travels
  over it only with ``send_token_over_http``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from synthbio_pipeline.client import constants as C
from synthbio_pipeline.client.download import samples_asked
from synthbio_pipeline.client.http import SynthesizeClient
from synthbio_pipeline.client.self_hosted import SelfHostedClient, self_hosted_enabled
from synthbio_pipeline.client.token_store import can_prompt, resolve_token, set_token
from synthbio_pipeline.errors import MissingTokenError, Problem, QueryValidationError, SynthbioError
from synthbio_pipeline.formats.arrow_stream import arrow_to_frames
from synthbio_pipeline.formats.result_json import to_frames
from synthbio_pipeline.vocabulary.families import is_gem2, result_kind
from synthbio_pipeline.vocabulary.models import is_known_model
from synthbio_pipeline.vocabulary.query import CLIENT_SOURCE, to_wire, validate_modality

#: The vendor client's name for the base class of its errors; here, of every error of this package.
SynthesizeAPIError = SynthbioError


def predict_query(
    query: Mapping[str, Any],
    model_id: str | None = None,
    # pysynthbio 4.2.4's positional order, so that a notebook's positional call means the same here.
    auto_authenticate: bool = True,
    api_base_url: str | None = None,
    poll_interval_seconds: float = C.DEFAULT_POLL_INTERVAL_SECONDS,
    poll_timeout_seconds: float = C.DEFAULT_POLL_TIMEOUT_SECONDS,
    return_download_url: bool = False,
    raw_response: bool = False,
    self_hosted: bool | None = None,
    *,
    as_counts: bool = True,
    allowed_http_hosts: Iterable[str] = (),
    send_token_over_http: bool = False,
    **kwargs: Any,
) -> dict[str, Any] | bytes:
    """Run one query and return its result as DataFrames (as pysynthbio 4.2.4 does).

    ``query`` is a wire-format body for ``model_id`` (``get_example_query(model_id)["example_query"]``,
    a GEM-2 ``{"operation": ..., "inputs": {...}}``), or, without ``model_id``, the
    rsynthbio-style query (``modality``, ``mode``, ``inputs``: see ``get_valid_query``).
    Keyword arguments not named here (``seed=1``, ``release=...``) go into the body's top
    level, as in the vendor's client.

    Returns a dict of DataFrames whose keys depend on the model (see
    :func:`~synthbio_pipeline.formats.result_json.to_frames`): ``metadata``, ``expression``,
    ``latents`` for expression models, plus ``classifier_probs`` for metadata prediction
    (whose ``expression`` is the decoder sample, or for GEM-2 an n × 0 frame), plus
    ``provenance`` for GEM-2 autoencode. ``expression`` holds int64 counts, or log1p-CPM
    when ``as_counts`` is false. ``return_download_url``: ``{"download_url", "query_id"}``
    without downloading. ``raw_response``: the result JSON as a dict (self-hosted: the Arrow
    stream's bytes).

    ``self_hosted`` (default: ``SYNTHESIZE_SELF_HOSTED``) sends the query to a model
    container that answers at once with an Arrow stream, read off the socket batch by batch.
    ``auto_authenticate``: without a token, ask for one (hidden) where a person can answer;
    otherwise (or when false) raise :class:`~synthbio_pipeline.errors.MissingTokenError`, a
    ``KeyError``. ``allowed_http_hosts``: hosts plain ``http://`` may go to besides loopback
    (a self-hosted container on a trusted network); the token goes there only with
    ``send_token_over_http``.
    """
    model_id, body = _request(query, model_id, kwargs)
    url_options = {"allowed_http_hosts": allowed_http_hosts, "send_token_over_http": send_token_over_http}
    if self_hosted_enabled(self_hosted):
        if return_download_url:
            raise ValueError(
                "return_download_url is not supported in self-hosted mode: the container answers "
                "at once with an Arrow stream, there is no download URL"
            )
        with SelfHostedClient(api_base_url, model_id=model_id, **url_options) as client:
            if raw_response:
                return client.predict_bytes(model_id, body)
            with client.predict_stream(model_id, body) as stream:
                return arrow_to_frames(stream, as_counts=as_counts)

    kind = result_kind(model_id, body)
    if kind is None and not raw_response and not return_download_url:
        raise ValueError(
            f"No output formatter registered for model_id {model_id!r}, so nothing was sent. "
            "To receive raw (unformatted) JSON, pass raw_response=True to predict_query()."
        )
    _ensure_token(auto_authenticate)
    with SynthesizeClient(api_base_url, model_id=model_id, **url_options) as client:
        query_id = client.submit(model_id, body)
        ready = client.wait(query_id, poll_interval=poll_interval_seconds, poll_timeout=poll_timeout_seconds)
        if return_download_url:
            return {"download_url": ready["downloadUrl"], "query_id": query_id}
        with tempfile.TemporaryDirectory(prefix="synthbio-") as workdir:
            asked = samples_asked(body)
            path = client.fetch_result(query_id, ready, Path(workdir) / "result.json", expected_samples=asked)
            if raw_response:
                with open(path, "rb") as document:
                    return json.load(document)
            return to_frames(path, as_counts=as_counts, result_kind=kind)


def list_models(
    api_base_url: str | None = None,
    self_hosted: bool | None = None,
    *,
    allowed_http_hosts: Iterable[str] = (),
    send_token_over_http: bool = False,
) -> Any:
    """The server's list of models, as it sends it: ``{"models": [{"model_id": ...}, ...]}``."""
    with _client(api_base_url, self_hosted, None, allowed_http_hosts, send_token_over_http) as client:
        return client.list_models()


def get_example_query(
    model_id: str,
    api_base_url: str | None = None,
    self_hosted: bool | None = None,
    *,
    allowed_http_hosts: Iterable[str] = (),
    send_token_over_http: bool = False,
) -> Any:
    """The server's example query for a model, as it sends it: ``{"example_query": {...}}``."""
    with _client(api_base_url, self_hosted, model_id, allowed_http_hosts, send_token_over_http) as client:
        return client.get_example_query(model_id)


# --- helpers -------------------------------------------------------------------------------


def _client(
    api_base_url: str | None,
    self_hosted: bool | None,
    model_id: str | None,
    allowed_http_hosts: Iterable[str],
    send_token_over_http: bool,
) -> SynthesizeClient:
    """A client of the chosen server (self-hosted or the Synthesize API) for one GET request."""
    cls = SelfHostedClient if self_hosted_enabled(self_hosted) else SynthesizeClient
    return cls(
        api_base_url,
        model_id=model_id,
        allowed_http_hosts=allowed_http_hosts,
        send_token_over_http=send_token_over_http,
    )


def _request(query: Mapping[str, Any], model_id: str | None, kwargs: dict) -> tuple[str, dict[str, Any]]:
    """``(model_id, body)``: the query checked where the vocabulary knows its model, with
    ``source`` and the keyword arguments (which win, as in the vendor's client) added."""
    if not isinstance(query, Mapping):
        raise QueryValidationError([Problem("", f"a query is a mapping, not {type(query).__name__}")])
    merged = {**query, **kwargs}
    if model_id is None:
        validate_modality(merged)
        model_id, body = to_wire(merged)
    elif is_known_model(model_id) and not is_gem2(model_id):
        model_id, body = to_wire({**merged, "model_id": model_id})
    else:
        body = {**merged, "source": CLIENT_SOURCE}
    if "source" in kwargs:
        body["source"] = kwargs["source"]
    return model_id, body


def _ensure_token(auto_authenticate: bool) -> None:
    """Fail before anything is sent when there is no token, or ask for one where a person can answer."""
    try:
        resolve_token()
    except MissingTokenError:
        if not (auto_authenticate and can_prompt()):
            raise
        set_token(use_keyring=True)


__all__ = ["SynthesizeAPIError", "get_example_query", "list_models", "predict_query"]
