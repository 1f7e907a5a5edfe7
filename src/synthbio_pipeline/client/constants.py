"""The client's defaults: where the API is, the token's names, polling and timeouts.

How failures are tried again lives in :mod:`synthbio_pipeline.client.retry`.
"""

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

# Retries, backoff, Retry-After and every other try-again: client/retry.py.

DOWNLOAD_CHUNK_BYTES = 1 << 20
