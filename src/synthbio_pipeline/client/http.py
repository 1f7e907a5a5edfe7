"""The HTTP client: submit a query, poll its status, download its result.

Every request to the API goes through :meth:`SynthesizeClient.request`, which adds the
bearer token, retries what is safe to retry (the policy of :mod:`synthbio_pipeline.client.retry`) and turns error
answers into the typed exceptions of :mod:`synthbio_pipeline.errors`. Result downloads
go through a second session that never carries the token: the download URL is a
pre-signed object-store URL on another host.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from synthbio_pipeline.client import constants as C
from synthbio_pipeline.client import retry as R
from synthbio_pipeline.client.token_store import resolve_token
from synthbio_pipeline.errors import (
    TOKEN_HINT,
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
    RateLimitError,
    ServerError,
    ValidationError,
)
from synthbio_pipeline.files import atomic_path

log = logging.getLogger(__name__)

# --- base URLs ---------------------------------------------------------------------------


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, allowed_http_hosts: Iterable[str] = ()) -> str:
    """Refuse a base URL that would send the token in clear text off this machine.

    ``https`` is accepted, and plain ``http`` to a loopback host (the emulator). Plain ``http``
    to another host only when that host is listed in ``allowed_http_hosts`` (host names or IP
    addresses, no scheme or port: a self-hosted model container on a trusted network); even
    then the token is not sent there unless the caller also says so (:func:`token_may_travel`).
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url
    if parts.scheme == "http" and parts.hostname and _host_key(parts.hostname) in http_host_set(allowed_http_hosts):
        return url
    if parts.scheme == "http":
        raise InsecureURLError(
            f"refusing base URL {redact_url(url)!r}: plain http is only allowed to a loopback "
            "host (127.0.0.1, localhost, ::1), because the API token would travel unencrypted; use https, "
            f"or list {parts.hostname!r} in allowed_http_hosts (a self-hosted container on a trusted network)"
        )
    raise InsecureURLError(f"base URL {redact_url(url)!r} is not an http(s) URL")


def http_host_set(allowed_http_hosts: Iterable[str] | str | None) -> frozenset[str]:
    """The hosts of an ``allowed_http_hosts`` list, normalised; an entry that is not a bare host is refused."""
    if allowed_http_hosts is None:
        return frozenset()
    if isinstance(allowed_http_hosts, str):  # a lone string is one host, not a list of letters
        allowed_http_hosts = [allowed_http_hosts]
    hosts = set()
    for entry in allowed_http_hosts:
        host = _host_key(str(entry))
        if not host or not re.fullmatch(r"[a-z0-9._-]+|[0-9a-f:.]+", host):
            raise InsecureURLError(
                f"allowed_http_hosts: {entry!r} is not a host name or IP address (give the host alone, "
                "without scheme, port or path, e.g. 'gpu-box.lab.internal' or '10.0.0.5')"
            )
        hosts.add(host)
    return frozenset(hosts)


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def token_may_travel(url: str, *, send_token_over_http: bool = False) -> bool:
    """Whether the token may be sent to ``url``: over https, to loopback, or (plain http to an
    allowed host) only with ``send_token_over_http``."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.hostname and is_loopback(parts.hostname)):
        return True
    return bool(send_token_over_http)


def redact_url(url: str) -> str:
    """A URL without its query string: signed URLs carry their signature there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# --- errors ------------------------------------------------------------------------------


def clean_server_message(message: str) -> str:
    """The server's failure message without any traceback that follows it."""
    return re.split(r"(?m)^Traceback", message, maxsplit=1)[0].strip() or "no message"


def status_error(response: requests.Response, what: str) -> APIStatusError:
    """The typed exception for an error answer (the one place statuses are mapped)."""
    status, body = response.status_code, response.text
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
        lines += [f"- {problem}" for problem in problems]
        return ValidationError("\n".join(lines), status_code=status, body=body, problems=problems)
    if status == 429:
        return RateLimitError(f"{what}: rate limited (429) and out of retries{detail}", status_code=status, body=body)
    if status >= 500:
        return ServerError(f"{what}: server error ({status}) and out of retries{detail}", status_code=status, body=body)
    return APIStatusError(f"{what}: unexpected answer ({status}){detail}", status_code=status, body=body)


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
    return f": {text[:300]}" if text else ""


def _validation_problems(body: str) -> list[Problem]:
    payload = _json_or_none(body)
    problems = []
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict) and item.get("message"):
                    problems.append(Problem(str(item.get("path") or "(request)"), str(item["message"])))
                elif isinstance(item, str):
                    problems.append(Problem("(request)", item))
        if not problems and isinstance(payload.get("error"), str):
            problems.append(Problem("(request)", payload["error"]))
    return problems


# --- the client --------------------------------------------------------------------------

StatusCallback = Callable[[str, dict, float], None]


class SynthesizeClient:
    """Talks to one API base URL (the real service or the emulator).

    Parameters mirror the vendor's client where they overlap; ``max_retries`` and
    ``retry_deadline_seconds`` bound the retries of each single HTTP call.
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
        self._api = self._session(max_retries, retry_deadline_seconds)
        self._api.headers["Accept"] = "application/json"
        # The download session never has credentials: the signed URL is its own authority.
        self._downloads = self._session(max_retries, retry_deadline_seconds)

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
        except requests.Timeout as error:
            raise APITimeoutError(f"{what}: no answer within {self.timeout[1]:g} s ({type(error).__name__})") from None
        except requests.RequestException as error:
            raise APIConnectionError(f"{what}: {_describe_connection_error(error)}") from None
        if response.status_code >= 300:
            raise status_error(response, what)
        try:
            return response.json()
        except ValueError:
            raise APIStatusError(
                f"{what}: the answer is not JSON: {response.text[:200]!r}",
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
            raise APIStatusError(f"predict answered without a modelQueryId: {answer!r}", status_code=200)
        return str(answer["modelQueryId"]).strip()

    def status(self, query_id: str) -> dict:
        payload = self.request("GET", f"/api/model-queries/{query_id}/status")
        if not isinstance(payload, dict) or "status" not in payload:
            raise APIStatusError(f"status answered without a status: {payload!r}", status_code=200)
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
        interval = max(C.MIN_POLL_INTERVAL_SECONDS, float(poll_interval))
        start = time.monotonic()
        last = None
        while True:
            payload = self.status(query_id)
            state = str(payload.get("status"))
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

    def download(self, url: str, destination: str | os.PathLike) -> Path:
        """Stream a signed URL to ``destination`` (via a temporary file in the same folder)."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        what = f"GET {redact_url(url)}"
        try:
            with self._downloads.get(url, stream=True, timeout=self.download_timeout, allow_redirects=True) as response:
                if response.status_code in (403, 404):
                    raise DownloadExpiredError(
                        f"{what}: the signed URL was refused ({response.status_code})",
                        status_code=response.status_code,
                        body=response.text[:500],
                    )
                if response.status_code >= 300:
                    raise status_error(response, what)
                expected = response.headers.get("Content-Length")
                written = _stream_to_file(response, destination)
        except requests.Timeout:
            raise APITimeoutError(f"{what}: download stalled for {self.download_timeout[1]:g} s") from None
        except requests.RequestException as error:
            raise APIConnectionError(f"{what}: {_describe_connection_error(error)}") from None
        if expected is not None and int(expected) != written:
            destination.unlink(missing_ok=True)
            raise APIConnectionError(f"{what}: got {written} of {expected} bytes")
        return destination

    def fetch_result(
        self,
        query_id: str,
        ready_payload: dict,
        destination: str | os.PathLike,
        *,
        max_url_refreshes: int = R.MAX_URL_REFRESHES,
    ) -> Path:
        """Download a ready query's result; an expired URL is replaced by asking for a fresh one."""
        payload = ready_payload
        for attempt in range(max_url_refreshes + 1):
            try:
                return self.download(payload["downloadUrl"], destination)
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


def _stream_to_file(response: requests.Response, destination: Path) -> int:
    """Write a response body to ``destination`` atomically; return the number of bytes."""
    written = 0
    with atomic_path(destination) as temporary, open(temporary, "wb") as sink:
        for chunk in response.iter_content(chunk_size=C.DOWNLOAD_CHUNK_BYTES):
            sink.write(chunk)
            written += len(chunk)
    return written


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
