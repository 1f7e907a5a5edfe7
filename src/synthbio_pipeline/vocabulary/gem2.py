"""GEM-2 queries: their shape, their checks (shared by the client and the emulator), examples.

A ``gem-2`` body names its operation and modality (pysynthbio 4.2.4's README)::

    {"operation": "predict-expression",
     "inputs": {"modality": "bulk",
                "items": [{"metadata": {"tissue": "liver", ...}, "num_samples": 1,
                           "output_total": {"type": "custom", "value": 8478}}]},
     "options": {"seed": 42, "sampling_strategy": "mean estimation"},
     "release": "..."}                                   # optional: pins a release

A compatibility id (``gem-2-bulk_autoencode``, ...; :data:`~.families.GEM2_MODEL_IDS`) names
both, so its body may leave them out (if given they must agree with the id), and it also takes
GEM-1's shape, as pysynthbio's tests send it: ``{"inputs": [item, ...], "seed": ...,
"sampling_strategy": ..., "total_count": ...}`` (``total_count`` becomes each item's
``output_total``). What an item carries depends on the operation
(:data:`~.families.GEM2_OPERATION_SPECS`); its metadata speaks GEM-2's vocabulary
(:data:`~.metadata.GEM2_METADATA_KEYS`).

:func:`read_gem2_request` checks a body and resolves it into a :class:`Gem2Request`;
:func:`gem2_problems` lists the problems alone, each with its path in the body as sent
(``inputs.items[0].metadata.bioactive_entity_perturbations[0]``, or ``inputs[0]...`` in
GEM-1's shape). Which releases exist, and what each supports, is the server's to judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.errors import Problem
from synthbio_pipeline.vocabulary.counts import counts_problems, counts_values
from synthbio_pipeline.vocabulary.families import (
    GEM2,
    GEM2_MODALITIES,
    GEM2_MODEL_IDS,
    GEM2_OPERATION_BY_NAME,
    GEM2_SUFFIX_OPERATIONS,
    PREDICT_EXPRESSION,
    Gem2Operation,
    gem2_model,
)
from synthbio_pipeline.vocabulary.metadata import GEM2_METADATA_KEYS, MetadataKey, metadata_problems
from synthbio_pipeline.vocabulary.models import (
    BULK,
    MEAN_ESTIMATION,
    MODALITIES,
    SAMPLING_STRATEGIES,
    SINGLE_CELL,
    model_for_modality,
)
from synthbio_pipeline.vocabulary.options import QUERY_OPTIONS, is_int
from synthbio_pipeline.vocabulary.words import did_you_mean, listed, quoted

#: The body's top-level fields in GEM-2's shape, and in GEM-1's (compatibility ids only).
GEM2_FIELDS = ("operation", "inputs", "options", "release", "source")
GEM1_SHAPE_FIELDS = ("operation", "inputs", "seed", "sampling_strategy", "total_count", "release", "source")
#: The fields of ``inputs`` in GEM-2's shape.
INPUTS_FIELDS = ("modality", "items")
#: The fields of ``options``.
OPTION_FIELDS = ("seed", "sampling_strategy")
#: The one ``output_total`` type documented: a library size given as ``value``.
OUTPUT_TOTAL_TYPES = ("custom",)
#: The error text of the service's 422 answer to a GEM-2 body (pysynthbio's tests quote it).
INVALID_GEM2_REQUEST = "Invalid GEM-2 request"


@dataclass(frozen=True)
class Gem2Item:
    """One item of a checked request."""

    #: Where it is in the body: ``inputs.items[0]`` (or ``inputs[0]`` in GEM-1's shape).
    path: str
    #: ``None`` where the item has none (an operation that takes no metadata, or leaves it out).
    metadata: Mapping[str, Any] | None
    #: Outputs it asks for (1 for an operation that answers one output per item).
    num_samples: int
    #: The library size asked for (``output_total.value``), or ``None``: the operation's default.
    output_total: int | None
    #: The reference sample's counts, for the operations that read one.
    counts: Sequence[float] | None


@dataclass(frozen=True)
class Gem2Request:
    """A checked GEM-2 body, resolved against its model id."""

    model_id: str
    operation: str
    modality: str
    items: tuple[Gem2Item, ...]
    seed: int | None
    #: The sampling strategy (the modality's default when not given); ``None`` for operations
    #: that draw no samples.
    sampling_strategy: str | None
    release: str | None
    ensemble: bool = False
    member: str | None = None

    @property
    def spec(self) -> Gem2Operation:
        return GEM2_OPERATION_BY_NAME[self.operation]

    @property
    def num_outputs(self) -> int:
        return sum(item.num_samples for item in self.items)


def gem2_modes(modality: str) -> tuple[str, ...]:
    """The sampling strategies GEM-2 takes for a modality (as its GEM-1 model: single-cell
    takes ``mean estimation`` only); the first is the default."""
    return model_for_modality(modality).modes


def gem2_metadata_keys(operation: str) -> dict[str, MetadataKey]:
    """The metadata keys an item of ``operation`` may carry."""
    groups = GEM2_OPERATION_BY_NAME[operation].metadata_groups
    return {name: key for name, key in GEM2_METADATA_KEYS.items() if key.group in groups}


def gem2_problems(model_id: str, body: Any, *, n_genes: int | None = None) -> list[Problem]:
    """Every reason to refuse ``body`` sent to ``POST /api/models/{model_id}/predict`` (a GEM-2 id).

    ``n_genes``: the length of the model's gene order, when known (the server knows it), to
    check the length of reference counts.
    """
    return read_gem2_request(model_id, body, n_genes=n_genes)[1]


def read_gem2_request(
    model_id: str, body: Any, *, n_genes: int | None = None
) -> tuple[Gem2Request | None, list[Problem]]:
    """``(request, [])`` for a valid body, ``(None, problems)`` otherwise."""
    reader = _Reader(model_id, n_genes)
    request = reader.read(body)
    return (request, []) if not reader.problems else (None, reader.problems)


class _Reader:
    def __init__(self, model_id: str, n_genes: int | None):
        self.model_id = model_id
        self.row = gem2_model(model_id)
        self.n_genes = n_genes
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def read(self, body: Any) -> Gem2Request | None:
        if self.row is None:
            known = listed(sorted(GEM2_MODEL_IDS)[:3] + ["..."])
            self.add("", f"{self.model_id!r} is not a GEM-2 model id the service answers ({known})")
            return None
        if not isinstance(body, Mapping):
            self.add("", f"a query is a mapping (a JSON object), not {type(body).__name__}")
            return None
        inputs = body.get("inputs")
        gem1_shape = isinstance(inputs, list)
        if gem1_shape and not self.row.compatibility:
            self.add(
                "inputs",
                'gem-2 takes {"modality": ..., "items": [...]}; a list of inputs is the GEM-1 shape, '
                "which only the compatibility ids (gem-2-bulk, gem-2-sc_autoencode, ...) take",
            )
            return None
        self.unknown_fields(body, GEM1_SHAPE_FIELDS if gem1_shape else GEM2_FIELDS, "", gem1_shape)
        operation = self.operation(body)
        if gem1_shape:
            modality = self.row.modality
            raw_items, items_path = inputs, "inputs"
        else:
            modality, raw_items, items_path = self.inputs(inputs)
        spec = GEM2_OPERATION_BY_NAME.get(operation) if operation else None
        options = body if gem1_shape else body.get("options", {})
        options_path = "" if gem1_shape else "options."
        if not gem1_shape and not isinstance(options, Mapping):
            self.add("options", f'must be an object like {{"seed": 42}}, not {options!r}')
            options = {}
        elif not gem1_shape:
            self.unknown_fields(options, OPTION_FIELDS, "options.", False)
        seed = options.get("seed")
        message = QUERY_OPTIONS["seed"].problem(seed)
        if message:
            self.add(f"{options_path}seed", message)
        strategy = self.strategy(options.get("sampling_strategy"), f"{options_path}sampling_strategy", spec, modality)
        total = self.total_count(body, spec) if gem1_shape else None
        release = body.get("release")
        if release is not None and not (isinstance(release, str) and release.strip()):
            self.add("release", f"a release is named by a non-empty text, not {release!r}")
        items = self.items(raw_items, items_path, spec, total) if spec is not None else ()
        if self.problems:
            return None
        return Gem2Request(
            model_id=self.model_id,
            operation=operation,
            modality=modality,
            items=tuple(items),
            seed=seed,
            sampling_strategy=strategy,
            release=release,
            ensemble=self.row.ensemble,
            member=self.row.member,
        )

    # -- top level

    def unknown_fields(self, mapping: Mapping, allowed: Sequence[str], prefix: str, gem1_shape: bool) -> None:
        for key in mapping:
            if key in allowed:
                continue
            if key in OPTION_FIELDS and not gem1_shape:
                hint = f'; GEM-2 takes it under options: {{"options": {{"{key}": ...}}}}'
            elif key == "total_count" and not gem1_shape:
                hint = '; GEM-2 takes a library size per item: "output_total": {"type": "custom", "value": N}'
            elif key == "modality" and prefix == "":
                hint = "; GEM-2 takes it as inputs.modality" if not gem1_shape else "; the model id names it"
            else:
                hint = did_you_mean(str(key), allowed)
            self.add(f"{prefix}{key}", f"unknown field{hint or f'; allowed: {quoted(allowed)}'}")

    def operation(self, body: Mapping) -> str | None:
        operation = body.get("operation")
        names = list(GEM2_OPERATION_BY_NAME)
        if self.row.operation is None:  # gem-2: the body names it
            if operation is None:
                self.add("operation", f"required; one of {quoted(names)}")
            elif operation not in names:
                hint = did_you_mean(str(operation), names) or did_you_mean(str(operation), GEM2_SUFFIX_OPERATIONS)
                self.add("operation", f"unknown operation {operation!r}; one of {quoted(names)}{hint}")
                return None
            return operation
        if operation is not None and operation != self.row.operation:
            self.add(
                "operation",
                f"{self.model_id} runs {self.row.operation!r}, the body says {operation!r}; send it to "
                f"{GEM2} (or leave operation out)",
            )
        return self.row.operation

    def inputs(self, inputs: Any) -> tuple[str | None, Any, str]:
        shape = '{"modality": ..., "items": [...]}'
        if inputs is None:
            self.add("inputs", f"required: {shape}")
            return self.row.modality, [], "inputs.items"
        if not isinstance(inputs, Mapping):
            self.add("inputs", f"must be an object {shape}, not {inputs!r}")
            return self.row.modality, [], "inputs.items"
        self.unknown_fields(inputs, INPUTS_FIELDS, "inputs.", False)
        modality = inputs.get("modality")
        if self.row.modality is None:
            if modality is None:
                self.add("inputs.modality", f"required; one of {quoted(MODALITIES)}")
            elif modality not in MODALITIES:
                hint = did_you_mean(str(modality), MODALITIES) or _short_word_hint(modality)
                self.add("inputs.modality", f"unknown modality {modality!r}; one of {quoted(MODALITIES)}{hint}")
                modality = None
        elif modality is not None and modality != self.row.modality:
            self.add("inputs.modality", f"{self.model_id} is for {self.row.modality!r}, the body says {modality!r}")
        else:
            modality = self.row.modality
        items = inputs.get("items")
        if items is None:
            self.add("inputs.items", "required: a list of items (may be empty)")
            items = []
        elif not isinstance(items, list):
            self.add("inputs.items", f"must be a list of items, not {items!r}")
            items = []
        return modality, items, "inputs.items"

    def strategy(self, value: Any, path: str, spec: Gem2Operation | None, modality: str | None) -> str | None:
        if spec is not None and not spec.draws_samples:
            if value is not None:
                self.add(path, f"{spec.name} draws no samples: it takes no sampling_strategy")
            return None
        modes = gem2_modes(modality) if modality else SAMPLING_STRATEGIES
        if value is None:
            return modes[0]
        if value not in SAMPLING_STRATEGIES:
            hint = did_you_mean(str(value), SAMPLING_STRATEGIES)
            self.add(path, f"unknown sampling strategy {value!r}; one of {quoted(SAMPLING_STRATEGIES)}{hint}")
        elif value not in modes:
            self.add(path, f"{value!r} is not available for {modality}; allowed: {quoted(modes)}")
        return value

    def total_count(self, body: Mapping, spec: Gem2Operation | None) -> int | None:
        total = body.get("total_count")
        if total is None:
            return None
        if spec is not None and not spec.takes_output_total:
            self.add("total_count", f"{spec.name} takes no library size")
            return None
        message = QUERY_OPTIONS["total_count"].problem(total)
        if message:
            self.add("total_count", message)
            return None
        return total

    # -- items

    def items(self, raw: list, path: str, spec: Gem2Operation, total: int | None) -> list[Gem2Item]:
        allowed = spec.item_keys + spec.optional_item_keys
        keys = gem2_metadata_keys(spec.name)
        items = []
        for index, item in enumerate(raw):
            where = f"{path}[{index}]"
            if not isinstance(item, Mapping):
                self.add(where, f"each item is an object with {listed(map(repr, spec.item_keys))}")
                continue
            before = len(self.problems)
            for key in spec.item_keys:
                if key not in item:
                    self.add(f"{where}.{key}", "required")
            for key in item:
                if key not in allowed:
                    hint = did_you_mean(str(key), allowed)
                    self.add(f"{where}.{key}", f"unknown key{hint or ''}; {spec.name} items take {quoted(allowed)}")
            num_samples = item.get("num_samples", 1)
            if "num_samples" in item and (not is_int(num_samples) or num_samples < 1):
                self.add(f"{where}.num_samples", f"must be a whole number of at least 1, not {num_samples!r}")
            metadata = item.get("metadata")
            if "metadata" in item and "metadata" in allowed:
                if not isinstance(metadata, Mapping):
                    self.add(f"{where}.metadata", "must be a mapping of metadata keys to values")
                else:
                    self.problems += metadata_problems(metadata, f"{where}.metadata", keys)
            output_total = self.output_total(item, where) if "output_total" in item else total
            counts = counts_values(item.get("counts"))
            if "counts" in item:
                self.counts(counts, f"{where}.counts")
            if len(self.problems) == before:
                items.append(
                    Gem2Item(
                        path=where,
                        metadata=metadata if "metadata" in allowed else None,
                        num_samples=num_samples,
                        output_total=output_total,
                        counts=counts,
                    )
                )
        return items

    def output_total(self, item: Mapping, where: str) -> int | None:
        value = item["output_total"]
        path = f"{where}.output_total"
        if not isinstance(value, Mapping):
            self.add(path, f'must be an object {{"type": "custom", "value": N}}, not {value!r}')
            return None
        for key in value:
            if key not in ("type", "value"):
                self.add(f"{path}.{key}", "unknown key; output_total takes 'type' and 'value'")
        kind = value.get("type")
        if kind not in OUTPUT_TOTAL_TYPES:
            self.add(
                f"{path}.type",
                f"{'required' if kind is None else f'unknown type {kind!r}'}; one of {quoted(OUTPUT_TOTAL_TYPES)}",
            )
        total = value.get("value")
        message = QUERY_OPTIONS["total_count"].problem(total) if total is not None else "required"
        if message:
            self.add(f"{path}.value", message)
            return None
        return total

    def counts(self, counts: Any, path: str) -> None:
        self.problems += counts_problems(counts, path, self.n_genes)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _short_word_hint(modality: Any) -> str:
    """``sc`` -> ``; did you mean 'single-cell'?`` (the compatibility ids' words)."""
    full = GEM2_MODALITIES.get(str(modality))
    return f"; did you mean {full!r}?" if full else ""


# --- example queries -----------------------------------------------------------------------

#: The README's example metadata (pysynthbio 4.2.4), per modality.
EXAMPLE_METADATA = {
    BULK: {
        "sample_type": "primary tissue",
        "library_layout": "PAIRED",
        "library_selection": "cDNA",
        "tissue": "liver",
        "bioactive_entity_perturbations": [{"smiles": "CCO"}],
        "gene_perturbations": [],
        "infection_perturbations": [],
    },
    SINGLE_CELL: {
        "sample_type": "primary tissue",
        "library_layout": "PAIRED",
        "library_selection": "cDNA",
        "tissue": "lung",
        "bioactive_entity_perturbations": [],
        "gene_perturbations": [],
        "infection_perturbations": [],
    },
}
#: The README's library size, and the reference's perturbation in from-reference examples.
EXAMPLE_OUTPUT_TOTAL = 8478
EXAMPLE_PERTURBATION = {"bioactive_entity_perturbations": [{"smiles": "CCO"}]}


def example_gem2_query(model_id: str, reference_counts: Sequence[int] | None = None) -> dict[str, Any]:
    """A valid example body for a GEM-2 id (``gem-2``: the README's ``predict-expression`` example).

    The operations that read a sample's counts need ``reference_counts`` (one per gene of the
    model's gene order: only the server knows its length).
    """
    row = gem2_model(model_id)
    if row is None:
        raise KeyError(f"{model_id!r} is not a GEM-2 model id the service answers")
    operation = row.operation or PREDICT_EXPRESSION
    modality = row.modality or BULK
    spec = GEM2_OPERATION_BY_NAME[operation]
    if "counts" in spec.item_keys:
        if reference_counts is None:
            raise ValueError(f"the example for {model_id} needs reference counts (one per gene)")
        item: dict[str, Any] = {"counts": list(reference_counts)}
        if spec.draws_samples:
            item.update(metadata=dict(EXAMPLE_PERTURBATION), num_samples=2)
    else:
        item = {"metadata": dict(EXAMPLE_METADATA[modality]), "num_samples": 2}
    if spec.takes_output_total and spec.draws_samples:
        item["output_total"] = {"type": "custom", "value": EXAMPLE_OUTPUT_TOTAL}
    options: dict[str, Any] = {"seed": 42}
    if spec.draws_samples:
        options["sampling_strategy"] = MEAN_ESTIMATION
    return {"operation": operation, "inputs": {"modality": modality, "items": [item]}, "options": options}


__all__ = [
    "EXAMPLE_METADATA",
    "GEM1_SHAPE_FIELDS",
    "GEM2_FIELDS",
    "INPUTS_FIELDS",
    "INVALID_GEM2_REQUEST",
    "OPTION_FIELDS",
    "OUTPUT_TOTAL_TYPES",
    "Gem2Item",
    "Gem2Request",
    "example_gem2_query",
    "gem2_metadata_keys",
    "gem2_modes",
    "gem2_problems",
    "read_gem2_request",
]
