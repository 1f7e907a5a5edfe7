"""Result downloads, bounded: where they may go, how large they may be, how long they may take.

A download URL comes from the API's answer, and the object store behind it is another host:
neither is trusted further than it needs to be. :class:`ResultDownload` enforces, per download:

- **where**: every URL (the first, and each redirect's) passes
  :func:`~synthbio_pipeline.client.urls.check_download_url`: https to a public address (plain
  http to loopback only while the API is on loopback: the emulator); at most
  ``max_redirects`` redirects, each keeping the scheme; the address each connection reaches
  is checked again (:func:`~synthbio_pipeline.client.urls.guarded_pool_classes`).
- **how large**: at most :meth:`DownloadLimits.max_bytes` of what was asked for:
  ``fixed_bytes + samples × genes × bytes_per_value`` (defaults: 64 MiB + samples × 65,536 ×
  32 bytes, i.e. 2 MiB per sample; a GEM-1 result takes about 0.18 MB per sample for 44,590
  genes, so the bound is ten times generous). A declared ``Content-Length`` above it is
  refused before reading; the bytes on the wire and the decoded bytes are both counted.
- **how it is encoded**: gzip and deflate are asked for (as the vendor's client does) and
  decoded here, chunk by chunk with a bounded output per step (a gzip bomb stops at the
  limit, not at the disk's end); the *raw* bytes are what ``Content-Length`` counts.
  Any other content coding is refused.
- **how long**: ``deadline_seconds`` for the whole download (redirects included), besides
  the per-read timeout, so a server trickling a byte at a time cannot hold a job for hours.
  The deadline is checked between reads, so it is overrun by at most one read timeout.

Whatever stops a download, nothing of it stays on disk, and the
:class:`~synthbio_pipeline.errors.DownloadRefusedError` names the limit that was hit and the
setting that raises it.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from synthbio_pipeline.client.urls import (
    DownloadPolicy,
    Resolver,
    check_download_url,
    guarded_pool_classes,
    redact_url,
)
from synthbio_pipeline.errors import APIConnectionError, APITimeoutError, DownloadRefusedError
from synthbio_pipeline.files import atomic_path, size_text

#: Genes per sample the size bound allows for (GEM-1 models have about 44,590).
GENES_BOUND = 65_536
#: Bytes of result JSON per value (a count and its separator take up to ~11 bytes; a sparse
#: single-cell entry ``"ENSG00000000003": 12,`` about 21; latents and metadata ride along).
BYTES_PER_VALUE = 32
#: Bytes any result may take besides its samples (``gene_order``, model version, ...).
FIXED_BYTES = 64 << 20
#: Seconds a whole download may take (redirects, headers and body).
DEADLINE_SECONDS = 1800.0
#: Redirects followed, each to the same scheme and a checked host.
MAX_REDIRECTS = 3
#: Samples assumed when the caller cannot say how many it asked for (the per-condition maximum).
DEFAULT_SAMPLES = 10_000
#: Error answers of the download host are read up to this many bytes (for the message).
ERROR_BODY_BYTES = 64 << 10
ACCEPT_ENCODING = "gzip, deflate"
_READ_BYTES = 1 << 20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class DownloadLimits:
    """The bounds of one result download (see the module docstring for the defaults' reasons)."""

    genes: int = GENES_BOUND
    bytes_per_value: int = BYTES_PER_VALUE
    fixed_bytes: int = FIXED_BYTES
    deadline_seconds: float = DEADLINE_SECONDS
    max_redirects: int = MAX_REDIRECTS

    def __post_init__(self):
        for name in ("genes", "bytes_per_value", "fixed_bytes", "max_redirects"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"download limit {name} must be a whole number >= 0, not {value!r}")
        if not (isinstance(self.deadline_seconds, (int, float)) and 0 < self.deadline_seconds < float("inf")):
            raise ValueError(
                f"download deadline_seconds must be a positive finite number, not {self.deadline_seconds!r}"
            )

    def max_bytes(self, samples: int | None) -> int:
        """The most bytes a result of ``samples`` samples may take (raw, and decoded)."""
        n = DEFAULT_SAMPLES if samples is None else max(1, int(samples))
        return self.fixed_bytes + n * self.genes * self.bytes_per_value

    def too_large(self, subject: str, how: str, samples: int | None) -> DownloadRefusedError:
        """The refusal of ``subject`` (``the result``), larger than the limit for ``samples``:
        ``how`` it showed, the limit and its terms, and the setting that raises it."""
        asked = "the samples asked for" if samples is None else f"{samples:,} sample(s)"
        return DownloadRefusedError(
            f"{subject} is larger than the download limit: {how}; the limit for {asked} is "
            f"{size_text(self.max_bytes(samples))} ({size_text(self.fixed_bytes)} + samples × {self.genes:,} genes × "
            f"{self.bytes_per_value} bytes). Nothing was kept. If it is really that large, raise "
            "download.bytes_per_value in the config (or DownloadLimits(bytes_per_value=...))",
            limit="size",
        )


def samples_asked(body: Any) -> int | None:
    """The samples a wire body asks for (an input without ``num_samples`` yields one), or None
    when the body's shape does not say (the limit then assumes ``DEFAULT_SAMPLES``)."""
    try:
        inputs = body.get("inputs", [])
        if isinstance(inputs, dict):  # GEM-2: {"modality": ..., "items": [...]}
            inputs = inputs.get("items", [])
        total = sum(int(item.get("num_samples", 1)) for item in inputs)
    except (AttributeError, TypeError, ValueError):
        return None
    return total if total > 0 else None


class ResultDownload:
    """One download: :meth:`open` follows checked redirects to the answer, :meth:`save` writes it.

    ``session`` is the client's token-free download session; its connection pools are
    replaced by ones that check the address every connection reaches.
    """

    def __init__(
        self,
        session: requests.Session,
        policy: DownloadPolicy,
        limits: DownloadLimits,
        timeout: tuple[float, float],
        *,
        samples: int | None = None,
        resolver: Resolver | None = None,
    ):
        self.session, self.policy, self.limits, self.timeout = session, policy, limits, timeout
        self.samples = samples
        self.resolver = resolver
        self.max_bytes = limits.max_bytes(samples)
        self.started = time.monotonic()

    # -- time

    def remaining(self) -> float:
        left = self.limits.deadline_seconds - (time.monotonic() - self.started)
        if left <= 0:
            raise DownloadRefusedError(
                f"the download took longer than its deadline of {self.limits.deadline_seconds:g} s "
                "(a server sending very slowly?); raise download.deadline_seconds in the config "
                "(or DownloadLimits(deadline_seconds=...)) if the network is that slow",
                limit="deadline",
            )
        return left

    def _timeout(self) -> tuple[float, float]:
        left = self.remaining()
        return (min(self.timeout[0], left), min(self.timeout[1], left))

    # -- where

    def open(self, url: str) -> requests.Response:
        """GET ``url``, following at most ``max_redirects`` checked, same-scheme redirects.

        Returns the first answer that is not a redirect, unread (``stream=True``); close it.
        """
        current = url
        scheme = check_download_url(current, self.policy, resolver=self.resolver).scheme
        for hop in range(self.limits.max_redirects + 1):
            if hop:
                target = check_download_url(current, self.policy, resolver=self.resolver)
                if target.scheme != scheme:
                    raise DownloadRefusedError(
                        f"the download was redirected from {scheme} to {target.scheme} "
                        f"({redact_url(current)}); only redirects that keep the scheme are followed",
                        limit="redirects",
                    )
            response = self.session.get(
                current,
                stream=True,
                timeout=self._timeout(),
                allow_redirects=False,
                headers={"Accept-Encoding": ACCEPT_ENCODING},
            )
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.close()
            current = urljoin(current, location)
        raise DownloadRefusedError(
            f"the download was redirected more than {self.limits.max_redirects} times "
            f"(last to {redact_url(current)}); refused",
            limit="redirects",
        )

    # -- what

    def error_body(self, response: requests.Response) -> str:
        """The start of an error answer's body (never more than ``ERROR_BODY_BYTES``)."""
        try:
            data = response.raw.read(ERROR_BODY_BYTES, decode_content=True) or b""
        except (Urllib3Error, OSError, zlib.error):
            data = b""
        return data.decode("utf-8", "replace")

    def save(self, response: requests.Response, destination: str | os.PathLike) -> int:
        """Write the body of ``response`` to ``destination`` atomically; return the decoded bytes."""
        what = f"GET {redact_url(response.url or '')}"
        decoder = _decoder(response.headers.get("Content-Encoding"), what)
        declared = _content_length(response.headers.get("Content-Length"), what)
        if declared is not None and declared > self.max_bytes:
            raise self._too_large(f"it declares {size_text(declared)}")
        raw = written = 0
        with atomic_path(destination) as temporary, open(temporary, "wb") as sink:
            while True:
                self.remaining()
                chunk = self._read(response, what, raw)
                if not chunk:
                    break
                raw += len(chunk)
                if declared is not None and raw > declared:
                    raise APIConnectionError(f"{what}: more bytes than the {declared} its Content-Length declares")
                if raw > self.max_bytes:
                    raise self._too_large(f"more than {size_text(self.max_bytes)} arrived")
                for piece in decoder.feed(chunk) if decoder else (chunk,):
                    written += len(piece)
                    if written > self.max_bytes:
                        raise self._too_large(f"it decodes to more than {size_text(self.max_bytes)}")
                    sink.write(piece)
            if declared is not None and raw != declared:
                raise APIConnectionError(f"{what}: got {raw} of {declared} bytes")
            if decoder:
                decoder.finish(what)
        return written

    def _read(self, response: requests.Response, what: str, so_far: int) -> bytes:
        """The next bytes on the wire, as they come (one receive: the deadline is checked between)."""
        try:
            return response.raw.read1(_READ_BYTES, decode_content=False)
        except ReadTimeoutError:
            raise APITimeoutError(f"{what}: download stalled for {self.timeout[1]:g} s") from None
        except (ProtocolError, Urllib3Error, OSError) as error:
            raise APIConnectionError(
                f"{what}: the connection broke after {so_far} bytes ({type(error).__name__})"
            ) from None

    def _too_large(self, how: str) -> DownloadRefusedError:
        return self.limits.too_large("the result", how, self.samples)


def _content_length(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        raise APIConnectionError(f"{what}: the answer has an invalid Content-Length {text[:40]!r}")
    return int(text)


class _Inflater:
    """gzip (every member of a multi-member stream) or deflate (zlib-wrapped or raw), decoded
    ``_READ_BYTES`` of output at a time, so a small input cannot make a large buffer."""

    def __init__(self, gzip: bool):
        self.gzip = gzip
        self._raw_fallback = not gzip  # deflate: zlib-wrapped as RFC 9110 says, or raw as some servers send
        self._started = False
        self._d = self._new()

    def _new(self):
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            try:
                out = self._d.decompress(data, _READ_BYTES)
            except zlib.error:
                if self._raw_fallback and not self._started:
                    self._raw_fallback = False
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise APIConnectionError(f"the {'gzip' if self.gzip else 'deflate'}-encoded body is corrupt") from None
            self._started = True
            if out:
                yield out
            data = self._d.unconsumed_tail
            if self._d.eof:
                rest = self._d.unused_data
                if not rest:
                    return
                if not self.gzip:
                    raise APIConnectionError("the deflate-encoded body has bytes after its end")
                self._d, data = self._new(), rest  # the next gzip member
                continue
            if not data and len(out) < _READ_BYTES:
                return

    def finish(self, what: str) -> None:
        if not self._d.eof:
            raise APIConnectionError(f"{what}: the encoded body ends before its compressed stream does (truncated)")


def _decoder(header: str | None, what: str) -> _Inflater | None:
    coding = (header or "identity").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return _Inflater(gzip=True)
    if coding == "deflate":
        return _Inflater(gzip=False)
    raise DownloadRefusedError(
        f"{what}: the body is encoded as {coding[:40]!r}, which was not asked for "
        f"(Accept-Encoding: {ACCEPT_ENCODING}); refused",
        limit="encoding",
    )


def guard_session(session: requests.Session, policy: DownloadPolicy) -> None:
    """Make every connection of ``session`` check the address it reached (see :mod:`.urls`)."""
    classes = guarded_pool_classes(policy)
    for prefix in ("http://", "https://"):
        adapter = session.get_adapter(prefix)
        adapter.poolmanager.pool_classes_by_scheme = classes


__all__ = ["DownloadLimits", "ResultDownload", "guard_session", "samples_asked"]
