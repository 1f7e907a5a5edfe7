"""Every client default in one place."""

API_BASE_URL = "https://app.synthesize.bio"
API_BASE_URL_ENV = "SYNTHESIZE_API_BASE_URL"
TOKEN_ENV = "SYNTHESIZE_API_KEY"

#: Self-hosted model containers (as the vendor's client): a truthy value (1, true, yes, on) turns the mode on.
SELF_HOSTED_ENV = "SYNTHESIZE_SELF_HOSTED"
ARROW_STREAM_CONTENT_TYPE = "application/vnd.apache.arrow.stream"
#: (connect, read) seconds of a self-hosted prediction: it answers when the samples are generated.
SELF_HOSTED_TIMEOUT = (5.0, 600.0)

#: The vendor client's keyring entry; reading it means a token stored with pysynthbio works here.
KEYRING_SERVICE = "pysynthbio"
KEYRING_USER = "api_token"

DEFAULT_POLL_INTERVAL_SECONDS = 2.0
MIN_POLL_INTERVAL_SECONDS = 1.0
DEFAULT_POLL_TIMEOUT_SECONDS = 900.0

#: (connect, read) seconds for control-plane calls; the server answers these at once.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: (connect, read) seconds between bytes of a result download.
DOWNLOAD_TIMEOUT = (5.0, 60.0)

DEFAULT_MAX_RETRIES = 5
#: Exponential backoff: min(BACKOFF_FACTOR * 2**n, BACKOFF_MAX) plus up to BACKOFF_JITTER.
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 8.0
BACKOFF_JITTER = 0.5
#: A Retry-After longer than this is cut to it.
MAX_RETRY_AFTER = 120.0
#: No retry starts once a single call has been retrying this long.
RETRY_DEADLINE_SECONDS = 300.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: How often a download URL that expired is answered by asking the status endpoint for a fresh one.
MAX_URL_REFRESHES = 3

DOWNLOAD_CHUNK_BYTES = 1 << 20
