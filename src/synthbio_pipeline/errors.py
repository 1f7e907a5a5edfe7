"""One error tree for everything that can go wrong talking to the API.

SynthbioError
├── QueryValidationError        the query is wrong before anything is sent (local checks)
├── MissingTokenError           no token in the environment or the keyring
├── KeyringUnavailableError     no usable system keyring to store a token in (headless machines)
├── InsecureURLError            an http:// base URL that is neither loopback nor an allowed http host
├── APIConnectionError          the request did not get an answer
│   ├── APITimeoutError
│   └── AmbiguousSubmissionError  a submission's connection broke after it was sent
├── APIStatusError              the server answered with an error status
│   ├── AuthenticationError     401, 403
│   ├── NotFoundError           404
│   ├── ValidationError         400, 422 (every ``path: message`` of the body listed)
│   ├── RateLimitError          429
│   ├── ServerError             5xx
│   └── DownloadExpiredError    the object store refused a signed URL (403/404)
├── QueryFailedError            the status endpoint reported ``failed``
├── PollTimeoutError            the query did not finish within the poll timeout
├── ResultError                 the result document is an error, malformed or truncated
├── DownloadRefusedError        a result download stopped by a limit (``limit`` names which)
└── MergeError                  Parquet parts that cannot be merged (other genes, repeated samples)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a query: where (``inputs[0].metadata.sex``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SynthbioError(Exception):
    """Base class of every error this package raises on purpose (``SynthesizeAPIError`` at the
    package root, the vendor client's name for its base class)."""

    #: The HTTP status of an error answer; ``None`` where there was none (as the vendor's errors).
    status_code: int | None = None


class QueryValidationError(SynthbioError, ValueError):
    """The query breaks the protocol's rules; nothing was sent."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = [f"invalid query ({len(self.problems)} problem(s)):"]
        lines += [f"- {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


TOKEN_HINT = (
    "Set the SYNTHESIZE_API_KEY environment variable, or store a token once in the system "
    "keyring with `synthbio-pipeline token set` (the vendor client's keyring entry "
    "'pysynthbio'/'api_token' is read too). To try everything without a token, "
    "run against the bundled emulator: `synthbio-pipeline emulator`."
)


class MissingTokenError(SynthbioError, KeyError):
    """No token: also a ``KeyError``, which is what the vendor's client raises then."""

    def __init__(self, message: str = "No Synthesize Bio API token found.", hint: str = TOKEN_HINT):
        super().__init__(f"{message} {hint}")

    __str__ = Exception.__str__  # KeyError's would quote the message


class KeyringUnavailableError(SynthbioError):
    """No usable system keyring (a headless server, an HPC login node): use the environment."""


class InsecureURLError(SynthbioError, ValueError):
    """Tokens are only sent over https, or over plain http to a loopback host (or to a host listed
    in ``allowed_http_hosts`` when ``send_token_over_http`` says so)."""


class APIConnectionError(SynthbioError):
    """No answer: the connection failed or broke."""


class APITimeoutError(APIConnectionError):
    """No answer within the read or connect timeout."""


class APIStatusError(SynthbioError):
    """The server answered with an error status; ``status_code`` and ``body`` say what."""

    def __init__(self, message: str, *, status_code: int, body: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class AuthenticationError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ValidationError(APIStatusError):
    """400/422: the server refused the query; ``problems`` lists its paths and messages."""

    def __init__(self, message: str, *, status_code: int, body: str = "", problems=()):
        super().__init__(message, status_code=status_code, body=body)
        self.problems = list(problems)

    @property
    def response_body(self) -> str:
        """The answer's text (the vendor client's name for ``body``)."""
        return self.body

    @property
    def response_json(self):
        """The answer decoded as JSON, or ``None`` when it is not JSON (as the vendor's client)."""
        import json

        try:
            return json.loads(self.body)
        except ValueError:
            return None


class RateLimitError(APIStatusError):
    pass


class ServerError(APIStatusError):
    pass


class DownloadExpiredError(APIStatusError):
    """The signed download URL was refused: ask the status endpoint for a fresh one."""


class QueryFailedError(SynthbioError):
    """The model query ended in ``failed``; the message is the server's, traceback stripped."""

    def __init__(self, message: str, *, query_id: str | None = None):
        super().__init__(message)
        self.query_id = query_id


class PollTimeoutError(SynthbioError):
    def __init__(self, message: str, *, query_id: str | None = None, last_status: str | None = None):
        super().__init__(message)
        self.query_id = query_id
        self.last_status = last_status


class ResultError(SynthbioError, ValueError):
    """The result document is an error payload, malformed, or not what was asked for."""


class MergeError(SynthbioError, ValueError):
    """Parts that cannot be merged: different genes, repeated sample ids, mixed value kinds."""


class AmbiguousSubmissionError(APIConnectionError):
    """A submission was sent, then the connection broke before the answer (its query id) came.

    The service may have accepted it, and charged for it. It is never sent again by itself:
    the API has no idempotency key, so a second submission could be paid for twice.
    """


class DownloadRefusedError(SynthbioError):
    """A result download stopped by one of the client's limits; ``limit`` says which one.

    ``url`` (scheme, characters), ``address`` (not a public host), ``redirects``, ``size``,
    ``deadline`` or ``encoding``. Nothing of the download is left on disk.
    """

    def __init__(self, message: str, *, limit: str):
        super().__init__(message)
        self.limit = limit


class GeneOrderError(SynthbioError, ValueError):
    """A result whose gene order is not the one its query's counts were sent in (a stale cache)."""
