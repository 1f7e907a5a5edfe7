"""The one retry policy: what is tried again after a failure, how often, and how long to wait.

Every retry in the package is decided by this module and logged in one line built by
:func:`retry_line` ("GET /api/models: 503, retry 2 of 5 in 1.0 s"), without the host, the
query string of a URL (a signed URL's signature) or any header (the token).

What went wrong, and what is done about it:

- HTTP 429, 500, 502, 503, 504 (GET and POST: the request had no effect): tried again up
  to ``DEFAULT_MAX_RETRIES`` times per call, after the server's ``Retry-After`` (seconds or an HTTP
  date, at most ``MAX_RETRY_AFTER``) or else the backoff.
- Any other HTTP status: never tried again.
- No connection made (refused, DNS, connect timeout): the request never left; tried again
  up to ``DEFAULT_MAX_RETRIES`` times after the backoff.
- The request went out and no answer came (dropped, read timeout): tried again for GET
  only. A POST may have been accepted, and a second one would be paid for twice.
- Any other transport error (TLS): never tried again.
- No retry of a call starts once it has been retrying for ``RETRY_DEADLINE_SECONDS`` seconds.
- A submission refused at the service's concurrency limit (429 once the call's own
  retries are spent): submitted again every ``ADMISSION_WAIT_SECONDS`` seconds until the query's
  poll deadline.
- A signed download URL refused (403/404, expired): replaced by a fresh one from the
  status endpoint, at most ``MAX_URL_REFRESHES`` times.
- A download that broke, or a corrupt or truncated document: ``DOWNLOAD_ATTEMPTS``
  downloads in all, each with a fresh URL.
- A query the service reported ``failed``: resubmitted only as often as the user allows
  (``resubmit_failed``, default ``DEFAULT_RESUBMIT_FAILED`` = 0: each one is paid for).
- A query id the server does not know (never accepted, or purged): submitted afresh at
  most ``MAX_UNKNOWN_ID_RESUBMISSIONS`` time per run.

The backoff before retry *n* of one call is 0 for the first, then
``min(BACKOFF_MAX, BACKOFF_FACTOR * 2 ** (n - 1) + jitter)`` with ``jitter`` drawn from
``[0, BACKOFF_JITTER)``: 0, 1, 2, 4, 8 s (plus jitter) for the default five retries.

The HTTP retries run inside urllib3 (:class:`ApiRetry` is its ``Retry`` with this table):
each request gets a fresh budget from :class:`RetryAdapter`. urllib3's own "Retrying
(Retry(...))" warnings are dropped, since they repeat our line and carry the full URL.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable
from datetime import UTC
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

# --- the constants -----------------------------------------------------------------------

#: Retries of one HTTP call (after its first try).
DEFAULT_MAX_RETRIES = 5
#: Exponential backoff: min(BACKOFF_FACTOR * 2**(n-1) + jitter, BACKOFF_MAX), jitter < BACKOFF_JITTER.
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 8.0
BACKOFF_JITTER = 0.5
#: A Retry-After longer than this (seconds) is cut to it.
MAX_RETRY_AFTER = 120.0
#: No retry of one HTTP call starts once it has been retrying this long (seconds).
RETRY_DEADLINE_SECONDS = 300.0
#: Statuses that mean "not now": the request had no effect and may be sent again.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Methods whose request may be sent again after it went out unanswered (a POST may have been paid for).
IDEMPOTENT_METHODS = frozenset({"GET"})
#: Methods retried at all (the API uses no others).
RETRY_METHODS = frozenset({"GET", "POST"})
#: Seconds between submissions the service refuses at its concurrency limit.
ADMISSION_WAIT_SECONDS = 2.0
#: Downloads of one result in all, when a download breaks or the document is corrupt or truncated.
DOWNLOAD_ATTEMPTS = 3
#: How often a refused (expired) signed download URL is replaced by a fresh one from the status endpoint.
MAX_URL_REFRESHES = 3
#: Resubmissions of a query the service reported ``failed``, unless the user allows more: each is paid for.
DEFAULT_RESUBMIT_FAILED = 0
#: Fresh submissions per run after the server said it does not know a query id.
MAX_UNKNOWN_ID_RESUBMISSIONS = 1

#: What happened to a request that got no HTTP status.
CONNECT, READ, OTHER = "connect", "read", "other"


# --- the decisions -----------------------------------------------------------------------


def should_retry(method: str, outcome: int | str) -> bool:
    """Whether a request that ended in ``outcome`` (an HTTP status, or CONNECT/READ/OTHER) is sent again.

    The retry budget and deadline are counted by the caller; this is the table itself.
    """
    method = method.upper()
    if method not in RETRY_METHODS:
        return False
    if isinstance(outcome, int):
        return outcome in RETRY_STATUSES
    if outcome == CONNECT:
        return True  # the request never left: sending it is always safe
    if outcome == READ:
        return method in IDEMPOTENT_METHODS
    return False


def backoff(retry: int, draw: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``retry`` (1-based) of one call."""
    if retry <= 1:
        return 0.0
    return max(0.0, min(BACKOFF_MAX, BACKOFF_FACTOR * 2 ** (retry - 1) + draw() * BACKOFF_JITTER))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (integer seconds or an HTTP date), at most MAX_RETRY_AFTER.

    ``None`` when there is none or it cannot be read: a malformed header from an
    untrusted server means the backoff, not a crash.
    """
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # "-0000": UTC, as urllib3 reads it
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def wait_before(retry: int, retry_after: float | None = None, draw: Callable[[], float] = random.random) -> float:
    """Seconds before retry ``retry``: the server's Retry-After when it gave a positive one, else the backoff."""
    return retry_after if retry_after else backoff(retry, draw)


def admission_wait(deadline: float, now: float | None = None) -> float | None:
    """Seconds to wait before submitting again at the concurrency limit; ``None`` once past ``deadline``."""
    left = deadline - (time.monotonic() if now is None else now)
    return None if left <= 0 else min(ADMISSION_WAIT_SECONDS, left)


def retry_line(what: str, reason: str, retry: int, of: int | None = None, wait: float | None = None) -> str:
    """The one log line of a retry: ``"GET /api/models: 503, retry 2 of 5 in 1.0 s"``."""
    line = f"{what}: {reason}, retry {retry}" + (f" of {of}" if of is not None else "")
    return line + (f" in {wait:.1f} s" if wait is not None else "")


# --- the HTTP retries, inside urllib3 ----------------------------------------------------


def failure_kind(retry: Retry, error: Exception) -> str:
    """CONNECT, READ or OTHER, as urllib3 tells them apart."""
    if retry._is_connection_error(error):
        return CONNECT
    if retry._is_read_error(error):
        return READ
    return OTHER


class ApiRetry(Retry):
    """urllib3's ``Retry`` driven by :func:`should_retry` and :func:`wait_before`.

    urllib3 keeps the counts; this class decides, waits and logs one line per retry.
    No retry starts after ``deadline`` (a ``time.monotonic()`` value).
    """

    def __init__(self, *args, deadline: float | None = None, budget: int = DEFAULT_MAX_RETRIES, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.budget = budget

    def new(self, **kwargs):
        new = super().new(**kwargs)
        new.deadline = self.deadline
        new.budget = self.budget
        return new

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return should_retry(method, status_code)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if error is not None and not should_retry(method or "", failure_kind(self, error)):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def is_exhausted(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return True
        return super().is_exhausted()

    def get_retry_after(self, response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"))

    def sleep(self, response=None) -> None:
        """Wait before the retry urllib3 is about to make, and log it (called on the incremented copy)."""
        retry = len(self.history)
        wait = wait_before(retry, self.get_retry_after(response) if response is not None else None)
        last = self.history[-1] if self.history else None
        what = f"{last.method} {urlsplit(last.url or '').path}" if last is not None else "request"
        if last is not None and last.status is not None:
            reason = str(last.status)
        elif last is not None and last.error is not None:
            kind = "no connection" if failure_kind(self, last.error) == CONNECT else "no answer"
            reason = f"{kind} ({type(last.error).__name__})"
        else:
            reason = "failed"
        log.info(retry_line(what, reason, retry, self.budget, wait))
        if wait > 0:
            time.sleep(wait)


def make_retry(max_retries: int = DEFAULT_MAX_RETRIES, deadline_seconds: float = RETRY_DEADLINE_SECONDS) -> ApiRetry:
    """A fresh retry budget for one HTTP call, its deadline counted from now."""
    return ApiRetry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        redirect=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=RETRY_METHODS,
        raise_on_status=False,
        deadline=time.monotonic() + deadline_seconds,
        budget=max_retries,
    )


class RetryAdapter(HTTPAdapter):
    """Gives every request a fresh retry budget whose deadline starts when the request does."""

    def __init__(self, max_retries: int = DEFAULT_MAX_RETRIES, deadline_seconds: float = RETRY_DEADLINE_SECONDS):
        self._retries, self._deadline_seconds = max_retries, deadline_seconds
        super().__init__(max_retries=make_retry(max_retries, deadline_seconds))

    def send(self, request, **kwargs):
        self.max_retries = make_retry(self._retries, self._deadline_seconds)
        return super().send(request, **kwargs)


class _DropUrllib3RetryWarnings(logging.Filter):
    """urllib3 warns "Retrying (Retry(...)) after connection broken by ...: URL" for each retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


def _quiet_urllib3() -> None:
    pool_log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _DropUrllib3RetryWarnings) for f in pool_log.filters):
        pool_log.addFilter(_DropUrllib3RetryWarnings())


_quiet_urllib3()
