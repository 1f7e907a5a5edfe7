"""The HTTP client: submit a query, poll its status, download its result.

Every request to the API goes through :meth:`SynthesizeClient.request`, which adds the
bearer token, retries what is safe to retry (the policy of :mod:`synthbio_pipeline.client.retry`) and turns error
answers into the typed exceptions of :mod:`synthbio_pipeline.errors`. Result downloads
go through a second session that never carries the token: the download URL is a
pre-signed object-store URL on another host.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ProtocolError

from synthbio_pipeline.client import constants as C
from synthbio_pipeline.client import retry as R
from synthbio_pipeline.client.download import DownloadLimits, ResultDownload, guard_session
from synthbio_pipeline.client.token_store import resolve_token
from synthbio_pipeline.client.urls import (
    DownloadPolicy,
    check_base_url,
    http_host_set,
    is_loopback,
    redact_url,
    token_may_travel,
)
from synthbio_pipeline.errors import (
    TOKEN_HINT,
    AmbiguousSubmissionError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    DownloadExpiredError,
    InsecureURLError,
    NotFoundError,
    PollTimeoutError,
    Problem,
    QueryFailedError,
    QueryValidationError,
    RateLimitError,
    ServerError,
    ValidationError,
)

log = logging.getLogger(__name__)

# --- base URLs (the rules are in client/urls.py) -----------------------------------------

__all__ = [
    "SynthesizeClient",
    "check_base_url",
    "http_host_set",
    "is_loopback",
    "redact_url",
    "resolve_base_url",
    "status_error",
    "token_may_travel",
]


def per_model_env_var(model_id: str) -> str:
    """``gem-1-bulk_predict-metadata`` -> ``SYNTHESIZE_API_BASE_URL__GEM_1_BULK`` (as the vendor's client)."""
    base = re.sub(r"_(reference-conditioning|predict-metadata)$", "", model_id)
    return f"{C.API_BASE_URL_ENV}__{re.sub(r'[^A-Z0-9]+', '_', base.upper())}"


def resolve_base_url(
    api_base_url: str | None = None, model_id: str | None = None, *, allowed_http_hosts: Iterable[str] = ()
) -> str:
    """Explicit argument, else the per-model variable, else ``SYNTHESIZE_API_BASE_URL``, else production.

    As in the vendor's client, an explicit argument equal to the production URL counts as not
    given (the variables still apply). The URL is checked by :func:`check_base_url`.
    """
    url = api_base_url if api_base_url and api_base_url.rstrip("/") != C.API_BASE_URL else None
    if not url and model_id:
        url = os.environ.get(per_model_env_var(model_id))
    url = url or os.environ.get(C.API_BASE_URL_ENV) or C.API_BASE_URL
    return check_base_url(url.rstrip("/"), allowed_http_hosts=allowed_http_hosts)


# --- errors ------------------------------------------------------------------------------


#: Server text shown in an error is cut to this many characters.
MAX_SERVER_TEXT = 500
_REDACTED = "[redacted]"
_SECRET_PATTERNS = (
    # "Bearer abc", "Authorization: Basic abc"
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s'\",;]+"), r"\1 " + _REDACTED),
    # api_key=..., "token": "...", X-Amz-Signature=..., password: ...
    (
        re.compile(
            r"(?i)([\"']?\b(?:[\w-]*api[_-]?key|[\w-]*token|secret|password|passwd|authorization|"
            r"x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|credential)\b[\"']?\s*[=:]\s*[\"']?)"
            r"[^\s'\",;&]+"
        ),
        r"\1" + _REDACTED,
    ),
    # JSON Web Tokens
    (re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"), _REDACTED),
)
#: Runs of token alphabet holding a long letters-and-digits stretch (``sk_live_4f9aD83k...``)
#: are redacted; model ids, UUIDs (query ids), Ensembl ids and words are not.
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.~]{20,}")
_STRETCH = re.compile(r"[A-Za-z0-9]{20,}")


def redact_secrets(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with anything token-shaped replaced by ``[redacted]``.

    The given ``secrets`` (the token in use), bearer/basic credentials, ``key=value`` pairs
    whose key names a token, key, password or signature, JSON Web Tokens, and strings holding
    20 or more letters and digits in a row, mixed (model ids, UUIDs such as query ids, Ensembl
    ids and words are kept).
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)

    def opaque(match: re.Match) -> str:
        for stretch in _STRETCH.findall(match.group()):
            if re.search(r"[A-Za-z]", stretch) and re.search(r"\d", stretch):
                return _REDACTED
        return match.group()

    return _OPAQUE.sub(opaque, text)


def tidy_server_text(text: str, limit: int = MAX_SERVER_TEXT, secrets: tuple[str, ...] = ()) -> str:
    """Server text fit to show: token-shaped strings redacted, cut to ``limit`` characters."""
    text = redact_secrets(str(text), secrets)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def clean_server_message(message: str) -> str:
    """The server's failure message without any traceback that follows it, redacted and cut short."""
    return tidy_server_text(re.split(r"(?m)^Traceback", str(message), maxsplit=1)[0].strip() or "no message")


def status_error(response: requests.Response, what: str, body: str | None = None) -> APIStatusError:
    """The typed exception for an error answer (the one place statuses are mapped).

    ``body``, when given, is the (already bounded) body text; else the response's text.
    """
    status = response.status_code
    body = response.text if body is None else body
    detail = _error_detail(body)
    if status in (401, 403):
        return AuthenticationError(
            f"{what}: authentication failed ({status}){detail}. Check your token. {TOKEN_HINT}",
            status_code=status,
            body=body,
        )
    if status == 404:
        return NotFoundError(f"{what}: not found (404){detail}", status_code=status, body=body)
    if status in (400, 422):
        problems = _validation_problems(body)
        lines = [f"{what}: the server refused the query ({status}){'' if problems else detail}"]
        lines += [f"- {problem}" for problem in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"- ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        return ValidationError("\n".join(lines), status_code=status, body=body, problems=problems)
    if status == 429:
        return RateLimitError(f"{what}: rate limited (429) and out of retries{detail}", status_code=status, body=body)
    if status >= 500:
        return ServerError(f"{what}: server error ({status}) and out of retries{detail}", status_code=status, body=body)
    return APIStatusError(f"{what}: unexpected answer ({status}){detail}", status_code=status, body=body)


#: Problems of a 400/422 answer listed in its message (all of them stay in ``.problems``).
MAX_PROBLEMS_SHOWN = 50


def _json_or_none(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_detail(body: str) -> str:
    payload = _json_or_none(body)
    if isinstance(payload, dict):
        for key in ("error", "message", "detail"):
            if isinstance(payload.get(key), str) and payload[key].strip():
                return f": {clean_server_message(payload[key])}"
    text = body.strip()
    return f": {tidy_server_text(text, 300)}" if text else ""


def _validation_problems(body: str) -> list[Problem]:
    payload = _json_or_none(body)
    problems = []
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict) and item.get("message"):
                    path = tidy_server_text(str(item.get("path") or "(request)"), 200)
                    problems.append(Problem(path, tidy_server_text(str(item["message"]))))
                elif isinstance(item, str):
                    problems.append(Problem("(request)", tidy_server_text(item)))
        if not problems and isinstance(payload.get("error"), str):
            problems.append(Problem("(request)", tidy_server_text(payload["error"])))
    return problems


# --- the client --------------------------------------------------------------------------

StatusCallback = Callable[[str, dict, float], None]


class SynthesizeClient:
    """Talks to one API base URL (the real service or the emulator).

    Parameters mirror the vendor's client where they overlap; ``max_retries`` and
    ``retry_deadline_seconds`` bound the retries of each single HTTP call;
    ``download_limits`` bounds result downloads (size per sample asked, deadline, redirects:
    :mod:`synthbio_pipeline.client.download`).
    ``allowed_http_hosts`` and ``send_token_over_http``: see :func:`check_base_url`; the
    hosted API needs the token, so plain http to a listed host also needs
    ``send_token_over_http`` here (a self-hosted container may not: :mod:`.self_hosted`).
    """

    #: Every request carries the token (the hosted API); a subclass may make it optional.
    token_required = True

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model_id: str | None = None,
        max_retries: int = R.DEFAULT_MAX_RETRIES,
        retry_deadline_seconds: float = R.RETRY_DEADLINE_SECONDS,
        timeout: tuple[float, float] = C.DEFAULT_TIMEOUT,
        download_timeout: tuple[float, float] = C.DOWNLOAD_TIMEOUT,
        download_limits: DownloadLimits | None = None,
        allowed_http_hosts: Iterable[str] = (),
        send_token_over_http: bool = False,
    ):
        self.base_url = resolve_base_url(base_url, model_id, allowed_http_hosts=allowed_http_hosts)
        self.token_may_travel = token_may_travel(self.base_url, send_token_over_http=send_token_over_http)
        if self.token_required and not self.token_may_travel:
            raise InsecureURLError(
                f"{redact_url(self.base_url)!r} is plain http: it is in allowed_http_hosts, but the API "
                "needs the token and the token is not sent unencrypted unless send_token_over_http=True"
            )
        self.timeout = timeout
        self.download_timeout = download_timeout
        self.download_limits = download_limits or DownloadLimits()
        self.download_policy = DownloadPolicy.for_api(self.base_url)
        self._api = self._session(max_retries, retry_deadline_seconds)
        self._api.headers["Accept"] = "application/json"
        # The download session never has credentials: the signed URL is its own authority.
        # Its connections check the address they reach (public only; loopback for the emulator).
        self._downloads = self._session(max_retries, retry_deadline_seconds)
        guard_session(self._downloads, self.download_policy)

    @staticmethod
    def _session(max_retries: int, deadline_seconds: float) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no .netrc credentials or proxies picked up behind our back
        adapter = R.RetryAdapter(max_retries, deadline_seconds)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self._api.close()
        self._downloads.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- control plane

    def request(self, method: str, path: str, *, json_body: Any = None) -> Any:
        """One API call: token in the header, retries, typed errors; returns the decoded JSON."""
        url = f"{self.base_url}{path}"
        what = f"{method} {path}"
        token = self.bearer_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._api.request(
                method, url, json=json_body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.exceptions.InvalidJSONError as error:
            # NaN or infinity (or another value JSON cannot carry) in the body: nothing was sent.
            raise QueryValidationError(
                [Problem("(request body)", f"not valid JSON, so nothing was sent: {tidy_server_text(str(error), 200)}")]
            ) from None
        except requests.Timeout as error:
            if method == "POST" and isinstance(error, requests.ReadTimeout):
                raise AmbiguousSubmissionError(_ambiguous(what, f"no answer within {self.timeout[1]:g} s")) from None
            raise APITimeoutError(f"{what}: no answer within {self.timeout[1]:g} s ({type(error).__name__})") from None
        except requests.RequestException as error:
            if method == "POST" and _sent_then_broke(error):
                raise AmbiguousSubmissionError(_ambiguous(what, _describe_connection_error(error))) from None
            raise APIConnectionError(f"{what}: {_describe_connection_error(error)}") from None
        if response.status_code >= 300:
            error = status_error(response, what)
            error.args = (redact_secrets(str(error), (token,)),)
            raise error
        try:
            return response.json()
        except ValueError:
            raise APIStatusError(
                f"{what}: the answer is not JSON: {tidy_server_text(response.text, 200, (token,))!r}",
                status_code=response.status_code,
                body=response.text,
            ) from None

    def bearer_token(self) -> str | None:
        """The token this client sends: the resolved one (raises :class:`MissingTokenError` without)."""
        return resolve_token()

    def list_models(self) -> dict:
        return self.request("GET", "/api/models")

    def get_example_query(self, model_id: str) -> dict:
        return self.request("GET", f"/api/models/{model_id}/example-query")

    def submit(self, model_id: str, body: dict) -> str:
        """``POST /predict``; returns the model query id."""
        answer = self.request("POST", f"/api/models/{model_id}/predict", json_body=body)
        if not isinstance(answer, dict) or not str(answer.get("modelQueryId", "")).strip():
            raise APIStatusError(
                f"predict answered without a modelQueryId: {tidy_server_text(repr(answer), 200)}", status_code=200
            )
        return str(answer["modelQueryId"]).strip()

    def status(self, query_id: str) -> dict:
        payload = self.request("GET", f"/api/model-queries/{query_id}/status")
        if not isinstance(payload, dict) or "status" not in payload:
            raise APIStatusError(
                f"status answered without a status: {tidy_server_text(repr(payload), 200)}", status_code=200
            )
        return payload

    def wait(
        self,
        query_id: str,
        *,
        poll_interval: float = C.DEFAULT_POLL_INTERVAL_SECONDS,
        poll_timeout: float = C.DEFAULT_POLL_TIMEOUT_SECONDS,
        on_status: StatusCallback | None = None,
    ) -> dict:
        """Poll until ``ready`` (returns the payload with ``downloadUrl``) or ``failed`` (raises).

        ``on_status(status, payload, elapsed_seconds)`` is called on every change of status.
        """
        if not (math.isfinite(float(poll_interval)) and math.isfinite(float(poll_timeout))):
            raise ValueError(
                f"poll_interval ({poll_interval!r}) and poll_timeout ({poll_timeout!r}) must be finite numbers"
            )
        interval = max(C.MIN_POLL_INTERVAL_SECONDS, float(poll_interval))
        start = time.monotonic()
        last = None
        while True:
            payload = self.status(query_id)
            state = tidy_server_text(str(payload.get("status")), 40)
            elapsed = time.monotonic() - start
            if state != last and on_status is not None:
                on_status(state, payload, elapsed)
            last = state
            if state == "ready":
                if not payload.get("downloadUrl"):
                    raise APIStatusError(f"query {query_id} is ready but has no downloadUrl", status_code=200)
                return payload
            if state == "failed":
                message = payload.get("message") or payload.get("error") or "no message"
                raise QueryFailedError(
                    f"model query {query_id} failed: {clean_server_message(str(message))}", query_id=query_id
                )
            if elapsed + interval > poll_timeout:
                raise PollTimeoutError(
                    f"model query {query_id} not finished after {elapsed:.0f} s (last status {state!r}); "
                    "raise the poll timeout, or rerun: the query id is kept and polling resumes",
                    query_id=query_id,
                    last_status=state,
                )
            time.sleep(interval)

    # -- data plane

    def download(self, url: str, destination: str | os.PathLike, *, expected_samples: int | None = None) -> Path:
        """Stream a signed URL to ``destination`` (via a temporary file in the same folder).

        Bounded by :attr:`download_limits` for ``expected_samples`` samples (see
        :mod:`synthbio_pipeline.client.download`): the URL and each redirect are checked, the
        size is capped, the whole download has a deadline; whatever stops it leaves no file.
        """
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        what = f"GET {redact_url(url)}"
        fetch = ResultDownload(
            self._downloads,
            self.download_policy,
            self.download_limits,
            self.download_timeout,
            samples=expected_samples,
        )
        try:
            with fetch.open(url) as response:
                if response.status_code in (403, 404):
                    raise DownloadExpiredError(
                        f"{what}: the signed URL was refused ({response.status_code})",
                        status_code=response.status_code,
                        body=fetch.error_body(response)[:500],
                    )
                if response.status_code >= 300:
                    raise status_error(response, what, body=fetch.error_body(response))
                fetch.save(response, destination)
        except requests.Timeout:
            raise APITimeoutError(f"{what}: download stalled for {self.download_timeout[1]:g} s") from None
        except requests.RequestException as error:
            raise APIConnectionError(f"{what}: {_describe_connection_error(error)}") from None
        return destination

    def fetch_result(
        self,
        query_id: str,
        ready_payload: dict,
        destination: str | os.PathLike,
        *,
        max_url_refreshes: int = R.MAX_URL_REFRESHES,
        expected_samples: int | None = None,
    ) -> Path:
        """Download a ready query's result; an expired URL is replaced by asking for a fresh one.

        ``expected_samples`` (the samples asked for) sets the download's size limit.
        """
        payload = ready_payload
        for attempt in range(max_url_refreshes + 1):
            try:
                return self.download(payload["downloadUrl"], destination, expected_samples=expected_samples)
            except DownloadExpiredError as error:
                if attempt == max_url_refreshes:
                    raise
                reason = f"signed URL refused ({error.status_code}), asking for a fresh one"
                log.info(R.retry_line(f"download of model query {query_id}", reason, attempt + 1, max_url_refreshes))
                payload = self.status(query_id)
                if payload.get("status") != "ready" or not payload.get("downloadUrl"):
                    raise APIStatusError(
                        f"query {query_id}: no fresh download URL (status {payload.get('status')!r})",
                        status_code=200,
                    ) from None
        raise AssertionError("unreachable")


def _sent_then_broke(error: requests.RequestException) -> bool:
    """Whether a failed request was sent before its connection broke (a read error, not a connect error)."""
    cause = error.args[0] if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(cause, ProtocolError)


def _ambiguous(what: str, how: str) -> str:
    return (
        f"{what}: {how}, after the submission was sent. The service may have accepted it (and charged "
        "for it); the API has no idempotency key, so it was not sent again, to avoid paying twice. "
        "A rerun submits it again"
    )


def _describe_connection_error(error: requests.RequestException) -> str:
    # Exception texts can carry the full URL; keep only the kind of failure and the host.
    request = getattr(error, "request", None)
    host = urlsplit(request.url).netloc if request is not None and request.url else "the server"
    reason = type(error).__name__
    cause = error.args[0] if error.args else None
    inner = getattr(cause, "reason", None)
    if inner is not None:
        reason += f" ({type(inner).__name__})"
    return f"could not get an answer from {host}: {reason}"
