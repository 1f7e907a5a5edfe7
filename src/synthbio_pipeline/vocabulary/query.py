"""Queries: the seed's user-facing form, its local validation, and the wire body.

A user writes a query in the vocabulary of the vendor's getting-started page::

    {"modality": "bulk", "mode": "sample generation", "seed": 11,
     "inputs": [{"metadata": {...}, "num_samples": 5}]}

The wire format differs: the model id goes in the URL path and the mode is sent as
``sampling_strategy``. :func:`to_wire` makes that translation; :func:`validate_query`
refuses, before anything is sent, whatever the protocol rules out, with one
:class:`~synthbio_pipeline.errors.Problem` per fault naming the input and the key.
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.errors import Problem, QueryValidationError
from synthbio_pipeline.vocabulary.models import (
    MEAN_ESTIMATION,
    MODALITY_MODELS,
    SAMPLE_GENERATION,
    SAMPLING_STRATEGIES,
    ModelSpec,
    get_model,
    is_known_model,
    model_for_modality,
)
from synthbio_pipeline.vocabulary.values import INT64_MAX, too_long

CLIENT_SOURCE = "synthbio-pipeline"

# --- metadata vocabulary (baseline models) -------------------------------------------

_NUMBER_AND_UNIT = re.compile(r"^\s*\d+(\.\d+)?\s*[A-Za-zµ%][\w/%µ. -]*$")


@dataclass(frozen=True)
class MetadataKey:
    name: str
    group: str  # biological, perturbational, technical
    #: A regular expression the value must match in full, if the key has a format.
    pattern: re.Pattern[str] | None = None
    #: The closed set of values the protocol lists for this key, if it lists one.
    choices: tuple[str, ...] = ()
    #: Said to the user when the value is refused.
    expected: str = ""
    numeric: bool = False


METADATA_KEYS: dict[str, MetadataKey] = {
    key.name: key
    for key in (
        MetadataKey("age_years", "biological", numeric=True, expected="a number of years, e.g. 65"),
        MetadataKey(
            "cell_line_ontology_id",
            "biological",
            re.compile(r"CVCL_[A-Z0-9]{4}"),
            expected="a Cellosaurus id like CVCL_0030",
        ),
        MetadataKey(
            "cell_type_ontology_id",
            "biological",
            re.compile(r"CL:\d{7}"),
            expected="a Cell Ontology id like CL:0000786",
        ),
        MetadataKey("developmental_stage", "biological"),
        MetadataKey(
            "disease_ontology_id",
            "biological",
            re.compile(r"MONDO:\d{7}"),
            expected="a MONDO id like MONDO:0005015",
        ),
        MetadataKey("ethnicity", "biological"),
        MetadataKey("genotype", "biological"),
        MetadataKey("race", "biological"),
        MetadataKey(
            "sample_type",
            "biological",
            choices=(
                "cell line",
                "organoid",
                "other",
                "primary cells",
                "primary tissue",
                "xenograft",
            ),
        ),
        MetadataKey("sex", "biological", choices=("male", "female")),
        MetadataKey(
            "tissue_ontology_id",
            "biological",
            re.compile(r"UBERON:\d{7}"),
            expected="an UBERON id like UBERON:0001155",
        ),
        MetadataKey(
            "perturbation_dose",
            "perturbational",
            _NUMBER_AND_UNIT,
            expected="a number and a unit, e.g. '10 um'",
        ),
        MetadataKey(
            "perturbation_ontology_id",
            "perturbational",
            re.compile(r"ENSG\d{11}|CHEBI:\d+|CHEMBL\d+|\d+"),
            expected=(
                "an Ensembl gene id (ENSG00000156127), a ChEBI id (CHEBI:16681), "
                "a ChEMBL id (CHEMBL1234567) or an NCBI Taxonomy id (9606)"
            ),
        ),
        MetadataKey(
            "perturbation_time",
            "perturbational",
            _NUMBER_AND_UNIT,
            expected="a number and a unit, e.g. '24 hours'",
        ),
        MetadataKey(
            "perturbation_type",
            "perturbational",
            choices=(
                "coculture",
                "compound",
                "control",
                "crispr",
                "genetic",
                "infection",
                "other",
                "overexpression",
                "peptide or biologic",
                "shrna",
                "sirna",
            ),
        ),
        MetadataKey(
            "study",
            "technical",
            re.compile(r"PRJ[EDN][A-Z]\d+"),
            expected="a BioProject id like PRJNA123456",
        ),
        MetadataKey("library_selection", "technical"),
        MetadataKey("library_layout", "technical", choices=("PAIRED", "SINGLE")),
        MetadataKey("platform", "technical"),
    )
}

#: Query-level fields with a meaning of their own; anything else is passed through.
QUERY_OPTIONS = ("seed", "total_count", "deterministic_latents")

# --- the seed's functions --------------------------------------------------------------


def get_valid_modalities() -> list[str]:
    """The modalities a query may name: ``['bulk', 'single-cell']``."""
    return list(MODALITY_MODELS)


def get_valid_modes(modality: str = "bulk") -> list[str]:
    """The modes a modality accepts (single-cell: ``mean estimation`` only)."""
    if modality not in MODALITY_MODELS:
        raise QueryValidationError([_unknown_modality(modality)])
    return list(model_for_modality(modality).modes)


_EXAMPLE_METADATA = {
    "bulk": {
        "tissue_ontology_id": "UBERON:0002371",
        "sex": "male",
        "sample_type": "primary tissue",
        "age_years": 65,
    },
    "single-cell": {
        "tissue_ontology_id": "UBERON:0002371",
        "cell_type_ontology_id": "CL:0000786",
        "sex": "male",
    },
}


def get_valid_query(modality: str = "bulk") -> dict[str, Any]:
    """A correct example query for a modality, ready to send as is (a fresh copy each call)."""
    if modality not in MODALITY_MODELS:
        raise QueryValidationError([_unknown_modality(modality)])
    spec = model_for_modality(modality)
    metadata = _EXAMPLE_METADATA[modality]
    second = dict(metadata, sex="female")
    return {
        "modality": modality,
        "mode": spec.default_mode,
        "seed": 11,
        "inputs": [
            {"metadata": dict(metadata), "num_samples": 5 if modality == "bulk" else 3},
            {"metadata": second, "num_samples": 5 if modality == "bulk" else 3},
        ],
    }


def example_wire_query(model_id: str) -> dict[str, Any]:
    """The body of an example query for a baseline model, in the wire format."""
    spec = get_model(model_id)
    return to_wire(get_valid_query(spec.modality))[1]


def validate_modality(query: Mapping[str, Any]) -> None:
    """Raise :class:`QueryValidationError` unless the query names a known modality."""
    if isinstance(query, Mapping) and "model_id" in query and "modality" not in query:
        return  # a query addressed by model id has no modality to check
    modality = query.get("modality") if isinstance(query, Mapping) else None
    if modality not in MODALITY_MODELS:
        raise QueryValidationError([_unknown_modality(modality)])


def resolve_model(query: Mapping[str, Any]) -> ModelSpec | None:
    """The model a query addresses: its ``model_id`` if given, else its modality's model."""
    model_id = query.get("model_id")
    if isinstance(model_id, str) and is_known_model(model_id):
        return get_model(model_id)
    modality = query.get("modality")
    if isinstance(modality, str) and modality in MODALITY_MODELS:
        return model_for_modality(modality)
    return None


def validate_query(query: Mapping[str, Any]) -> None:
    """Check a user-facing query; raise :class:`QueryValidationError` listing every problem."""
    problems = query_problems(query)
    if problems:
        raise QueryValidationError(problems)


def query_problems(query: Any) -> list[Problem]:
    """Every problem with a query, in reading order (empty when it is valid)."""
    if not isinstance(query, Mapping):
        return [Problem("", f"a query is a mapping, not {type(query).__name__}")]
    problems: list[Problem] = []
    spec = _check_model(query, problems)
    mode = _mode_of(query)
    if spec is not None and spec.modes:
        if mode is None:
            problems.append(Problem("mode", f"required; one of {_quoted(spec.modes)}"))
        elif mode not in SAMPLING_STRATEGIES:
            problems.append(Problem("mode", f"unknown mode {mode!r}; one of {_quoted(SAMPLING_STRATEGIES)}"))
        elif mode not in spec.modes:
            problems.append(
                Problem(
                    "mode",
                    f"{mode!r} is not available for {spec.modality} ({spec.model_id}); allowed: {_quoted(spec.modes)}",
                )
            )
    problems += option_problems(query)
    inputs = query.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        problems.append(Problem("inputs", "required: a non-empty list of inputs"))
        return problems
    input_keys = spec.input_keys if spec else ("metadata", "num_samples")
    # The vocabulary is the baseline models'; a model we do not know is judged by the server.
    check_vocabulary = spec is not None and spec.kind == "baseline"
    for index, item in enumerate(inputs):
        path = f"inputs[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(path, "each input is a mapping with 'metadata' and 'num_samples'"))
            continue
        for key in input_keys:
            if key not in item:
                problems.append(Problem(f"{path}.{key}", "required"))
        if "num_samples" in item:
            problems += num_samples_problems(item["num_samples"], f"{path}.num_samples")
        if "metadata" in item:
            if not isinstance(item["metadata"], Mapping):
                problems.append(Problem(f"{path}.metadata", "must be a mapping of metadata keys to values"))
            elif check_vocabulary:
                problems += metadata_problems(item["metadata"], f"{path}.metadata")
    return problems


def num_samples_problems(value: Any, path: str) -> list[Problem]:
    if not _is_int(value) or value < 1:
        return [Problem(path, f"must be a whole number of at least 1, not {value!r}")]
    return []


def option_problems(options: Mapping[str, Any], path_prefix: str = "") -> list[Problem]:
    """Type checks of ``seed``, ``total_count`` and ``deterministic_latents``."""
    problems = []
    if "seed" in options and options["seed"] is not None and not _is_int(options["seed"]):
        problems.append(Problem(path_prefix + "seed", f"must be a whole number, not {options['seed']!r}"))
    total = options.get("total_count")
    if total is not None and (not _is_int(total) or total < 1):
        problems.append(Problem(path_prefix + "total_count", f"must be a whole number of at least 1, not {total!r}"))
    for key in ("seed", "total_count"):
        if _is_int(options.get(key)) and abs(options[key]) > INT64_MAX:
            problems.append(Problem(path_prefix + key, f"is too large: at most {INT64_MAX:,} (64 bits)"))
    latents = options.get("deterministic_latents")
    if latents is not None and not isinstance(latents, bool):
        problems.append(Problem(path_prefix + "deterministic_latents", f"must be true or false, not {latents!r}"))
    return problems


def metadata_problems(metadata: Mapping[str, Any], path: str = "metadata") -> list[Problem]:
    """Unknown keys (with a "did you mean" hint) and values of the wrong format."""
    problems = []
    for key, value in metadata.items():
        where = f"{path}.{key}"
        spec = METADATA_KEYS.get(key)
        if spec is None:
            problems.append(Problem(where, _unknown_key_message(key)))
            continue
        if value is None:
            continue
        message = metadata_value_problem(spec, value)
        if message:
            problems.append(Problem(where, message))
    return problems


def metadata_value_problem(spec: MetadataKey, value: Any) -> str | None:
    """Why a value does not fit its key, or ``None`` when it does."""
    if spec.numeric:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            return f"must be {spec.expected}, not {value!r}"
        if isinstance(value, str) and too_long(value):
            return f"{too_long(value)} (must be {spec.expected})"
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return f"must be {spec.expected}, not {value!r}"
        if not math.isfinite(number):
            return f"must be a finite number ({spec.expected}), not {value!r}"
        return None if number >= 0 else f"must not be negative, not {value!r}"
    if not isinstance(value, str):
        return f"must be text, not {value!r}"
    if spec.choices and value not in spec.choices:
        hint = did_you_mean(value, spec.choices)
        return f"{value!r} is not allowed; one of {_quoted(spec.choices)}{hint}"
    if spec.pattern is not None and not spec.pattern.fullmatch(value):
        return f"{value!r} is malformed: expected {spec.expected}"
    return None


# --- the wire format -------------------------------------------------------------------


def to_wire(query: Mapping[str, Any], *, validate: bool = True) -> tuple[str, dict[str, Any]]:
    """Translate a user-facing query into ``(model_id, body)`` for ``POST .../predict``.

    ``modality`` picks the model (unless ``model_id`` is given), ``mode`` (or
    ``sampling_strategy``) becomes ``sampling_strategy``, every other field is passed
    through, and ``source`` names this client.
    """
    if validate:
        validate_query(query)
    spec = resolve_model(query)
    model_id = query.get("model_id") or (spec.model_id if spec else None)
    body = {
        key: copy.deepcopy(value)
        for key, value in query.items()
        if key not in ("modality", "mode", "model_id", "sampling_strategy")
    }
    mode = _mode_of(query)
    if mode is not None:
        body = {"sampling_strategy": mode, **body}
    body["source"] = CLIENT_SOURCE
    return model_id, body


# --- helpers ---------------------------------------------------------------------------


def _check_model(query: Mapping[str, Any], problems: list[Problem]) -> ModelSpec | None:
    model_id = query.get("model_id")
    if model_id is not None:
        if not isinstance(model_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", model_id):
            problems.append(Problem("model_id", f"{model_id!r} is not a model id"))
            return None
        return get_model(model_id) if is_known_model(model_id) else None
    modality = query.get("modality")
    if modality not in MODALITY_MODELS:
        problems.append(_unknown_modality(modality))
        return None
    return model_for_modality(modality)


def _mode_of(query: Mapping[str, Any]) -> Any:
    return query.get("mode", query.get("sampling_strategy"))


def _unknown_modality(modality: Any) -> Problem:
    if modality is None:
        return Problem("modality", f"required; one of {_quoted(MODALITY_MODELS)}")
    hint = did_you_mean(str(modality), MODALITY_MODELS)
    return Problem("modality", f"unknown modality {modality!r}; one of {_quoted(MODALITY_MODELS)}{hint}")


def _unknown_key_message(key: str) -> str:
    hint = did_you_mean(key, METADATA_KEYS)
    return f"unknown metadata key{hint or '; see the valid keys in the API documentation'}"


def did_you_mean(word: str, choices) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not matches:
        lowered = {choice.lower(): choice for choice in choices}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _quoted(values) -> str:
    return ", ".join(repr(value) for value in values)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


__all__ = [
    "CLIENT_SOURCE",
    "MEAN_ESTIMATION",
    "METADATA_KEYS",
    "SAMPLE_GENERATION",
    "get_valid_modalities",
    "get_valid_modes",
    "get_valid_query",
    "example_wire_query",
    "metadata_problems",
    "option_problems",
    "query_problems",
    "resolve_model",
    "to_wire",
    "validate_modality",
    "validate_query",
]
