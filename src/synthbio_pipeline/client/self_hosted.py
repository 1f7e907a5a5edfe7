"""Self-hosted model containers: one synchronous request, answered with an Arrow IPC stream.

A partner may run a model container next to the data. It answers
``POST /api/models/{model_id}/predict`` with ``Accept: application/vnd.apache.arrow.stream``
when the samples are generated (no query id, no polling, no download URL), and serves
``GET /api/models`` and ``GET /api/models/{model_id}/example-query`` like the API. The
vendor's client turns the mode on with ``SYNTHESIZE_SELF_HOSTED`` (:func:`self_hosted_enabled`)
and finds the container with the same base-URL rules as the API (``SYNTHESIZE_API_BASE_URL__<MODEL>``
first: :func:`~synthbio_pipeline.client.http.resolve_base_url`).

Authentication is optional: the token is sent only when ``SYNTHESIZE_API_KEY`` is set (as the
vendor's client does; a token kept only in the keyring is for the hosted API and is not sent
here), and never in clear text to a non-loopback host unless ``send_token_over_http`` says so.
The stream is handed to the caller as a file object read straight off the socket
(:meth:`SelfHostedClient.predict_stream`): :mod:`synthbio_pipeline.formats.arrow_stream`
reads it batch by batch, so the body is never held whole.

The stream is bounded as a result download is (:class:`~synthbio_pipeline.client.download.DownloadLimits`,
the client's ``download_limits``; config ``download``): at most ``max_bytes(samples asked)``
bytes, counted as they come off the socket (and again decoded, when the container sends gzip),
and an overall deadline (``deadline_seconds``, from the request on; checked between reads, so
overrun by at most one read timeout). Either limit raises
:class:`~synthbio_pipeline.errors.DownloadRefusedError` naming it (``limit`` ``size`` or
``deadline``) and the setting that raises it; the reader's parts are then never published.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from synthbio_pipeline.client import constants as C
from synthbio_pipeline.client.download import DownloadLimits, samples_asked
from synthbio_pipeline.client.http import SynthesizeClient, redact_url, status_error
from synthbio_pipeline.errors import APIConnectionError, APITimeoutError, DownloadRefusedError
from synthbio_pipeline.files import size_text

log = logging.getLogger(__name__)

TRUTHY = frozenset({"1", "true", "yes", "on"})
#: Bytes asked of the socket per receive when the whole rest of a stream is read.
_RECEIVE_BYTES = 1 << 20


def self_hosted_enabled(explicit: bool | None = None) -> bool:
    """An explicit ``True``/``False`` wins; else ``SYNTHESIZE_SELF_HOSTED`` is 1, true, yes or on (any case)."""
    if explicit is not None:
        return bool(explicit)
    return os.environ.get(C.SELF_HOSTED_ENV, "").strip().lower() in TRUTHY


class SelfHostedClient(SynthesizeClient):
    """A :class:`SynthesizeClient` for a model container: optional token, synchronous Arrow predictions.

    It keeps the client's retries (a connection that could not be made, 429 and 5xx answers;
    never a prediction whose answer broke off, which may have run) and its typed errors.
    ``predict_timeout`` is (connect, read) seconds; the read timeout is the longest silence
    allowed while the container generates.
    """

    token_required = False

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model_id: str | None = None,
        predict_timeout: tuple[float, float] = C.SELF_HOSTED_TIMEOUT,
        **options: Any,
    ):
        super().__init__(base_url, model_id=model_id, **options)
        self.predict_timeout = predict_timeout
        if os.environ.get(C.TOKEN_ENV, "").strip() and not self.token_may_travel:
            log.info("%s is plain http: the token is not sent there", redact_url(self.base_url))

    def bearer_token(self) -> str | None:
        """``SYNTHESIZE_API_KEY`` when it is set and may travel to this URL; else no token."""
        token = os.environ.get(C.TOKEN_ENV, "").strip()
        return token if token and self.token_may_travel else None

    @contextlib.contextmanager
    def predict_stream(self, model_id: str, body: dict, *, samples: int | None = None) -> Iterator[ArrowBody]:
        """``POST /api/models/{model_id}/predict`` for an Arrow stream; yields the response body
        as a binary file object, decoded (gzip) and read straight off the socket, bounded by
        :attr:`download_limits` for ``samples`` samples (default: what ``body`` asks for)."""
        started = time.monotonic()
        limits = self.download_limits
        asked = samples if samples is not None else samples_asked(body)
        path = f"/api/models/{model_id}/predict"
        what = f"POST {path}"
        headers = {"Accept": C.ARROW_STREAM_CONTENT_TYPE, "Content-Type": "application/json"}
        token = self.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._api.post(
                f"{self.base_url}{path}",
                json=body,
                headers=headers,
                timeout=self.predict_timeout,
                stream=True,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise APITimeoutError(f"{what}: no answer within {self.predict_timeout[1]:g} s") from None
        except requests.RequestException as error:
            raise APIConnectionError(f"{what}: {_describe(error, self.base_url)}") from None
        with response:
            if response.status_code >= 300:
                raise status_error(response, what)
            response.raw.decode_content = True
            yield ArrowBody(response.raw, what, self.base_url, limits=limits, samples=asked, started=started)

    def predict_bytes(self, model_id: str, body: dict) -> bytes:
        """The whole Arrow stream as bytes (the vendor's ``raw_response=True``)."""
        with self.predict_stream(model_id, body) as stream:
            return stream.read()


class ArrowBody:
    """A response body as a read-only binary file: a connection that breaks or stalls
    mid-stream raises :class:`APIConnectionError` / :class:`APITimeoutError`; one larger than
    ``limits.max_bytes(samples)`` or slower than ``limits.deadline_seconds`` (from ``started``)
    raises :class:`DownloadRefusedError`.

    Each read is one receive at most (``read1``), so the deadline is checked between receives
    even when a server trickles. ``bytes_read`` counts decoded bytes, ``raw_bytes`` the bytes
    off the socket.
    """

    def __init__(
        self,
        raw: Any,
        what: str,
        base_url: str,
        *,
        limits: DownloadLimits | None = None,
        samples: int | None = None,
        started: float | None = None,
    ):
        self._raw = raw
        self._what = what
        self._base_url = base_url
        self.limits = limits or DownloadLimits()
        self.samples = samples
        self.max_bytes = self.limits.max_bytes(samples)
        self.started = time.monotonic() if started is None else started
        self.bytes_read = 0
        self.raw_bytes = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:  # the whole rest, receive by receive: each counted and timed
            parts = []
            while chunk := self.read(_RECEIVE_BYTES):
                parts.append(chunk)
            return b"".join(parts)
        self._check_deadline()
        try:
            data = self._raw.read1(size) if hasattr(self._raw, "read1") else self._raw.read(size)
        except Exception as error:  # urllib3's ProtocolError, ReadTimeoutError, DecodeError...
            if "timeout" in type(error).__name__.lower():
                raise APITimeoutError(f"{self._what}: the stream stalled after {self.bytes_read:,} bytes") from None
            raise APIConnectionError(
                f"{self._what}: the stream broke off after {self.bytes_read:,} bytes ({type(error).__name__})"
            ) from None
        self._count(data)
        return data

    def _raw_tell(self) -> int | None:
        tell = getattr(self._raw, "tell", None)
        try:
            return int(tell()) if tell is not None else None
        except (OSError, ValueError, TypeError):
            return None

    def _count(self, data: bytes) -> None:
        self.bytes_read += len(data)
        raw = self._raw_tell()
        self.raw_bytes = raw if raw is not None else self.bytes_read
        if self.raw_bytes > self.max_bytes:
            raise self._too_large(f"more than {size_text(self.max_bytes)} arrived")
        if self.bytes_read > self.max_bytes:
            raise self._too_large(f"it decodes to more than {size_text(self.max_bytes)}")

    def _check_deadline(self) -> None:
        if time.monotonic() - self.started > self.limits.deadline_seconds:
            raise DownloadRefusedError(
                f"{self._what}: the self-hosted stream took longer than its deadline of "
                f"{self.limits.deadline_seconds:g} s (after {self.raw_bytes:,} bytes; a container sending very "
                "slowly?). Nothing was kept. Raise download.deadline_seconds in the config "
                "(or DownloadLimits(deadline_seconds=...)) if it is really that slow",
                limit="deadline",
            )

    def _too_large(self, how: str) -> DownloadRefusedError:
        return self.limits.too_large(f"{self._what}: the self-hosted stream", how, self.samples)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return bool(getattr(self._raw, "closed", False))

    def close(self) -> None:  # the response is closed by predict_stream
        pass


def _describe(error: requests.RequestException, base_url: str) -> str:
    # Exception texts can carry the full URL; keep only the kind of failure and the host.
    return f"could not get an answer from {urlsplit(base_url).netloc}: {type(error).__name__}"


__all__ = ["ArrowBody", "SelfHostedClient", "self_hosted_enabled"]
