"""Queries: rsynthbio's user-facing form, its local validation, and the wire body.

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
from collections.abc import Callable, Mapping
from typing import Any

from synthbio_pipeline.errors import Problem, QueryValidationError
from synthbio_pipeline.vocabulary.counts import counts_problems
from synthbio_pipeline.vocabulary.families import gem2_model
from synthbio_pipeline.vocabulary.gem2 import gem2_problems
from synthbio_pipeline.vocabulary.metadata import VOCABULARIES, MetadataKey, metadata_problems
from synthbio_pipeline.vocabulary.models import (
    BULK,
    DEFAULT_MODALITY,
    MODALITY_MODELS,
    MODEL_ID_PATTERN,
    SAMPLING_STRATEGIES,
    SINGLE_CELL,
    ModelSpec,
    get_model,
    is_known_model,
    model_for_modality,
)
from synthbio_pipeline.vocabulary.options import MODEL_OPTIONS, is_int, option_problems
from synthbio_pipeline.vocabulary.words import did_you_mean, listed, quoted

CLIENT_SOURCE = "synthbio-pipeline"

#: The wire's name for the mode.
WIRE_MODE = "sampling_strategy"
#: The fields that pick the model and how it samples: rsynthbio's ``modality`` and ``mode``,
#: the wire's name for the mode, and a model id (which overrides the modality).
MODEL_FIELDS = ("modality", "mode", WIRE_MODE, "model_id")

# --- rsynthbio's functions --------------------------------------------------------------


def get_valid_modalities() -> list[str]:
    """The modalities a query may name: ``['bulk', 'single-cell']``."""
    return list(MODALITY_MODELS)


def get_valid_modes(modality: str = DEFAULT_MODALITY) -> list[str]:
    """The modes a modality accepts (single-cell: ``mean estimation`` only)."""
    if modality not in MODALITY_MODELS:
        raise QueryValidationError([_unknown_modality(modality)])
    return list(model_for_modality(modality).modes)


_EXAMPLE_METADATA = {
    BULK: {
        "tissue_ontology_id": "UBERON:0002371",
        "sex": "male",
        "sample_type": "primary tissue",
        "age_years": 65,
    },
    SINGLE_CELL: {
        "tissue_ontology_id": "UBERON:0002371",
        "cell_type_ontology_id": "CL:0000786",
        "sex": "male",
    },
}


def get_valid_query(modality: str = DEFAULT_MODALITY) -> dict[str, Any]:
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
            {"metadata": dict(metadata), "num_samples": 5 if modality == BULK else 3},
            {"metadata": second, "num_samples": 5 if modality == BULK else 3},
        ],
    }


#: The perturbations of the reference-conditioning example: a TP53 knockout, and cisplatin.
EXAMPLE_PERTURBATIONS = (
    {"perturbation_ontology_id": "ENSG00000141510", "perturbation_type": "crispr", "perturbation_time": "72 hours"},
    {
        "perturbation_ontology_id": "CHEBI:27899",
        "perturbation_type": "compound",
        "perturbation_dose": "10 um",
        "perturbation_time": "24 hours",
    },
)


def example_wire_query(model_id: str, counts_of: Callable[[Mapping[str, Any]], list] | None = None) -> dict[str, Any]:
    """The body of an example query for a model, in the wire format (a fresh copy each call).

    A model whose inputs carry ``counts`` needs ``counts_of``: given the metadata of an input
    of its modality's baseline example, it returns a counts vector in the model's gene order
    (the emulator gives a sample it would generate for that metadata). Its inputs are then
    those samples: perturbed (reference conditioning: a TP53 knockout of the first, cisplatin
    on the second), or to annotate (metadata prediction).
    """
    spec = get_model(model_id)
    baseline = to_wire(get_valid_query(spec.modality))[1]
    if not spec.takes_counts:
        return baseline
    if counts_of is None:
        raise ValueError(f"the example query of {model_id} needs counts: pass counts_of")
    examples = [item["metadata"] for item in baseline["inputs"]]
    body: dict[str, Any] = {}
    if spec.default_mode is not None:
        body[WIRE_MODE] = spec.default_mode
    if spec.kind == "reference-conditioning":
        body.update({name: MODEL_OPTIONS[name].wire_default() for name in spec.options})
        inputs = [
            {"counts": counts_of(metadata), "metadata": dict(perturbation), "num_samples": 2}
            for metadata, perturbation in zip(examples, EXAMPLE_PERTURBATIONS)
        ]
    else:
        inputs = [{"counts": counts_of(metadata)} for metadata in examples]
    return {**body, "seed": baseline["seed"], "inputs": inputs, "source": CLIENT_SOURCE}


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


def query_problems(query: Any, genes: int | None = None) -> list[Problem]:
    """Every problem with a user-facing query, in reading order (empty when it is valid).

    The query names its model by ``modality`` or ``model_id``, and its mode as ``mode``
    or ``sampling_strategy``; a problem with the mode is reported under the field used
    (a missing one under ``mode``, or under ``sampling_strategy`` when the query is in the
    wire's words: addressed by model id alone, as the vendor's client writes it).
    ``genes``: the length of the model's gene order, when known, to check ``counts`` inputs.
    """
    if not isinstance(query, Mapping):
        return [_not_a_mapping(query)]
    model_id = query.get("model_id")
    if isinstance(model_id, str) and gem2_model(model_id) is not None:
        return _gem2_query_problems(model_id, query, genes)
    problems: list[Problem] = []
    spec = _check_model(query, problems)
    return problems + _request_problems(spec, query, _mode_field(query), genes)


def wire_problems(model_id: str, body: Any, genes: int | None = None) -> list[Problem]:
    """Every reason to refuse a wire body sent to ``POST /api/models/{model_id}/predict``.

    The same checks as :func:`query_problems` (the emulator answers 422 with these), with
    the mode under its wire name ``sampling_strategy``. A model id this package does not
    know gets the checks every query gets (options, inputs, ``num_samples``). The server
    knows its gene order: ``genes`` is its length, and a ``counts`` input of another length
    is refused. A GEM-2 id gets GEM-2's checks (:func:`~synthbio_pipeline.vocabulary.gem2.gem2_problems`).
    """
    if gem2_model(model_id) is not None:
        return gem2_problems(model_id, body, n_genes=genes)
    if not isinstance(body, Mapping):
        return [_not_a_mapping(body)]
    spec = get_model(model_id) if is_known_model(model_id) else None
    return _request_problems(spec, body, WIRE_MODE, genes)


def _request_problems(
    spec: ModelSpec | None, request: Mapping[str, Any], mode_field: str, genes: int | None = None
) -> list[Problem]:
    """The checks a query and a wire body share: mode, options, inputs."""
    problems = []
    mode = request.get(mode_field)
    if spec is not None and spec.modes:
        if mode is None:
            problems.append(Problem(mode_field, f"required; one of {quoted(spec.modes)}"))
        elif mode not in SAMPLING_STRATEGIES:
            noun = mode_field.replace("_", " ")
            problems.append(Problem(mode_field, f"unknown {noun} {mode!r}; one of {quoted(SAMPLING_STRATEGIES)}"))
        elif mode not in spec.modes:
            problems.append(
                Problem(
                    mode_field,
                    f"{mode!r} is not available for {spec.modality} ({spec.model_id}); allowed: {quoted(spec.modes)}",
                )
            )
    problems += option_problems(request)
    if spec is not None and spec.options:
        problems += option_problems(request, table={name: MODEL_OPTIONS[name] for name in spec.options})
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        problems.append(Problem("inputs", "required: a non-empty list of inputs"))
        return problems
    input_keys = spec.input_keys if spec else ("metadata", "num_samples")
    # A model we do not know, or one without a vocabulary, has its metadata judged by the server.
    keys = metadata_keys_of(spec) if spec is not None else None
    for index, item in enumerate(inputs):
        path = f"inputs[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(path, f"each input is a mapping with {listed(map(repr, input_keys))}"))
            continue
        for key in input_keys:
            if key not in item:
                problems.append(Problem(f"{path}.{key}", "required"))
        if spec is not None:
            for key in item:
                if key not in input_keys:
                    problems.append(Problem(f"{path}.{key}", _not_an_input_key(spec, key)))
        if "counts" in item and "counts" in input_keys:
            problems += counts_problems(item["counts"], f"{path}.counts", genes)
        if "num_samples" in item and "num_samples" in input_keys:
            problems += num_samples_problems(item["num_samples"], f"{path}.num_samples")
        if "metadata" in item and "metadata" in input_keys:
            if not isinstance(item["metadata"], Mapping):
                problems.append(Problem(f"{path}.metadata", "must be a mapping of metadata keys to values"))
            elif keys is not None:
                problems += _metadata_problems(spec, item["metadata"], f"{path}.metadata", keys)
    return problems


def _not_an_input_key(spec: ModelSpec, key: str) -> str:
    taken = listed(map(repr, spec.input_keys))
    return f"not taken by {spec.model_id}: its inputs carry {taken}{did_you_mean(key, spec.input_keys)}"


def _metadata_problems(
    spec: ModelSpec | None, metadata: Mapping[str, Any], path: str, keys: dict[str, MetadataKey]
) -> list[Problem]:
    """The vocabulary's checks, with a key of the vocabulary that the model does not take
    (a biological key on a reference-conditioning input) told as such, not as unknown."""
    vocabulary = VOCABULARIES[spec.vocabulary] if spec is not None and spec.vocabulary else {}
    outside = {key: vocabulary[key] for key in metadata if key not in keys and key in vocabulary}
    problems = metadata_problems({k: v for k, v in metadata.items() if k not in outside}, path, keys)
    for key, found in outside.items():
        allowed = listed(sorted(keys), "and")
        why = (
            f"{spec.model_id} infers it from the reference counts"
            if spec.takes_counts
            else f"{spec.model_id} does not take it"
        )
        problems.append(Problem(f"{path}.{key}", f"a {found.group} key: {why}; its metadata takes only {allowed}"))
    return sorted(problems, key=lambda problem: list(metadata).index(problem.path.rsplit(".", 1)[1]))


def metadata_keys_of(spec: ModelSpec) -> dict[str, MetadataKey] | None:
    """The metadata keys a model's inputs may carry, or ``None`` when the client does not check them."""
    if spec.vocabulary is None:
        return None
    return {name: key for name, key in VOCABULARIES[spec.vocabulary].items() if key.group in spec.metadata_groups}


def _gem2_query_problems(model_id: str, query: Mapping[str, Any], genes: int | None) -> list[Problem]:
    """A query addressed to a GEM-2 id: GEM-2's checks on the body :func:`to_wire` sends (in
    GEM-1's shape, rsynthbio's ``mode`` is sent as ``sampling_strategy``; its problems keep
    the name the query used)."""
    body = {key: value for key, value in query.items() if key != "model_id"}
    uses_mode = "mode" in body and isinstance(body.get("inputs"), list)
    if uses_mode:
        body = {(WIRE_MODE if key == "mode" else key): value for key, value in body.items()}
    problems = gem2_problems(model_id, body, n_genes=genes)
    if uses_mode:
        problems = [Problem("mode", p.message) if p.path == WIRE_MODE else p for p in problems]
    return problems


def num_samples_problems(value: Any, path: str) -> list[Problem]:
    if not is_int(value) or value < 1:
        return [Problem(path, f"must be a whole number of at least 1, not {value!r}")]
    return []


# --- the wire format -------------------------------------------------------------------


def to_wire(query: Mapping[str, Any], *, validate: bool = True) -> tuple[str, dict[str, Any]]:
    """Translate a user-facing query into ``(model_id, body)`` for ``POST .../predict``.

    ``modality`` picks the model (unless ``model_id`` is given), ``mode`` (or
    ``sampling_strategy``) becomes ``sampling_strategy``, every other field (the query
    options, and any the server may know) is passed through, and ``source`` names this client.
    """
    if validate:
        validate_query(query)
    spec = resolve_model(query)
    model_id = query.get("model_id") or (spec.model_id if spec else None)
    body = {key: copy.deepcopy(value) for key, value in query.items() if key not in MODEL_FIELDS}
    mode = _mode_of(query)
    if mode is not None:
        body = {WIRE_MODE: mode, **body}
    body["source"] = CLIENT_SOURCE
    return model_id, body


# --- helpers ---------------------------------------------------------------------------


def _check_model(query: Mapping[str, Any], problems: list[Problem]) -> ModelSpec | None:
    model_id = query.get("model_id")
    if model_id is not None:
        if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
            problems.append(Problem("model_id", f"{model_id!r} is not a model id"))
            return None
        return get_model(model_id) if is_known_model(model_id) else None
    modality = query.get("modality")
    if modality not in MODALITY_MODELS:
        problems.append(_unknown_modality(modality))
        return None
    return model_for_modality(modality)


def _mode_of(query: Mapping[str, Any]) -> Any:
    return query.get("mode", query.get(WIRE_MODE))


def _mode_field(query: Mapping[str, Any]) -> str:
    """The field a query gives its mode in (or should): rsynthbio's ``mode`` or the wire's name."""
    if "mode" in query:
        return "mode"
    if WIRE_MODE in query or ("model_id" in query and "modality" not in query):
        return WIRE_MODE
    return "mode"


def _unknown_modality(modality: Any) -> Problem:
    if modality is None:
        return Problem("modality", f"required; one of {quoted(MODALITY_MODELS)}")
    hint = did_you_mean(str(modality), MODALITY_MODELS)
    return Problem("modality", f"unknown modality {modality!r}; one of {quoted(MODALITY_MODELS)}{hint}")


def _not_a_mapping(query: Any) -> Problem:
    return Problem("", f"a query is a mapping (a JSON object), not {type(query).__name__}")


__all__ = [
    "CLIENT_SOURCE",
    "EXAMPLE_PERTURBATIONS",
    "MODEL_FIELDS",
    "counts_problems",
    "WIRE_MODE",
    "example_wire_query",
    "get_valid_modalities",
    "get_valid_modes",
    "get_valid_query",
    "metadata_keys_of",
    "num_samples_problems",
    "query_problems",
    "resolve_model",
    "to_wire",
    "validate_modality",
    "validate_query",
    "wire_problems",
]
