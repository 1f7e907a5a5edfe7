"""Synthesize Bio API client, streaming result parser and offline emulator.

The vendor clients' functions (pysynthbio 4.2.4, rsynthbio), so that a notebook written for
pysynthbio runs with ``import synthbio_pipeline as pysynthbio``::

    import synthbio_pipeline as pysynthbio
    pysynthbio.set_synthesize_token(token="...")
    query = pysynthbio.get_example_query(model_id="gem-1-bulk")["example_query"]
    result = pysynthbio.predict_query(query, model_id="gem-1-bulk")
    result["expression"], result["metadata"]

and the rsynthbio-style call without a model id::

    from synthbio_pipeline import get_valid_query, predict_query
    result = predict_query(get_valid_query("bulk"))
"""

from synthbio_pipeline.client.token_store import clear_token, has_token, load_token_from_keyring, set_token
from synthbio_pipeline.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    DownloadExpiredError,
    InsecureURLError,
    MissingTokenError,
    NotFoundError,
    PollTimeoutError,
    QueryFailedError,
    QueryValidationError,
    RateLimitError,
    ResultError,
    ServerError,
    SynthbioError,
    ValidationError,
)
from synthbio_pipeline.formats.result_json import log_cpm, open_result, to_frames
from synthbio_pipeline.vendor_api import SynthesizeAPIError, get_example_query, list_models, predict_query
from synthbio_pipeline.vocabulary.models import MODELS, ModelSpec, get_model
from synthbio_pipeline.vocabulary.query import (
    get_valid_modalities,
    get_valid_modes,
    get_valid_query,
    validate_modality,
    validate_query,
)

# The vendor clients' names for the token functions: the same functions.
set_synthesize_token = set_token
load_synthesize_token_from_keyring = load_token_from_keyring
has_synthesize_token = has_token
clear_synthesize_token = clear_token

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "DownloadExpiredError",
    "InsecureURLError",
    "MODELS",
    "MissingTokenError",
    "ModelSpec",
    "NotFoundError",
    "PollTimeoutError",
    "QueryFailedError",
    "QueryValidationError",
    "RateLimitError",
    "ResultError",
    "ServerError",
    "SynthbioError",
    "SynthesizeAPIError",
    "ValidationError",
    "clear_synthesize_token",
    "clear_token",
    "get_example_query",
    "get_model",
    "get_valid_modalities",
    "get_valid_modes",
    "get_valid_query",
    "has_synthesize_token",
    "has_token",
    "list_models",
    "load_synthesize_token_from_keyring",
    "load_token_from_keyring",
    "log_cpm",
    "open_result",
    "predict_query",
    "set_synthesize_token",
    "set_token",
    "to_frames",
    "validate_modality",
    "validate_query",
]
