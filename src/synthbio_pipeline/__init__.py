"""Synthesize Bio API client, streaming result parser and offline emulator.

The functions of the vendor's R client, ``rsynthbio``, in Python form::

    from synthbio_pipeline import get_valid_query, predict_query
    result = predict_query(get_valid_query("bulk"))
    result["expression"], result["metadata"]
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
from synthbio_pipeline.vendor_api import get_example_query, list_models, predict_query
from synthbio_pipeline.vocabulary.models import MODELS, ModelSpec, get_model
from synthbio_pipeline.vocabulary.query import (
    get_valid_modalities,
    get_valid_modes,
    get_valid_query,
    validate_modality,
    validate_query,
)

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
    "ValidationError",
    "clear_token",
    "get_example_query",
    "get_model",
    "get_valid_modalities",
    "get_valid_modes",
    "get_valid_query",
    "has_token",
    "list_models",
    "load_token_from_keyring",
    "log_cpm",
    "open_result",
    "predict_query",
    "set_token",
    "to_frames",
    "validate_modality",
    "validate_query",
]
