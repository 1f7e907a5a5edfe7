"""The models this package knows: modalities, sampling strategies (modes) and the model table.

A model id is data: supporting a new model means adding a row to ``MODELS``, not a module.
Each row says which family and kind of model it is, what a query's inputs carry, which
metadata vocabulary (:mod:`.metadata`) and which groups of its keys the inputs' metadata
takes, which sampling strategies and which model-only options (:data:`.options.MODEL_OPTIONS`)
the model accepts, the default library size, and which shape its result takes
(``expression`` results carry ``counts`` per output; ``metadata-prediction`` results carry
``classifier_probs`` and a ``decoder_sample``).

GEM-1 has three kinds of model per modality: ``baseline`` (metadata -> expression),
``reference-conditioning`` (a reference sample's ``counts`` plus perturbation metadata ->
expression: the reference's biological and technical state is inferred from its counts, so
its inputs' metadata takes the perturbational keys only) and ``predict-metadata``
(``counts`` -> predicted metadata). Inputs that carry ``counts`` have one count per gene of
the model's gene order, which the client learns from a result's ``gene_order``.

The workflow's schemas and config/README.md restate parts of this module; they are
generated from it by ``python scripts/generate_vocabulary.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from synthbio_pipeline.vocabulary.metadata import METADATA_GROUPS, PERTURBATIONAL

# --- modalities: rsynthbio's user-facing word for the data type --------------------------

BULK = "bulk"
SINGLE_CELL = "single-cell"

#: The baseline model behind each user-facing modality word (rsynthbio's vocabulary).
MODALITY_MODELS = {BULK: "gem-1-bulk", SINGLE_CELL: "gem-1-sc"}
#: The reference-conditioning and metadata-prediction models of each modality.
REFERENCE_MODELS = {BULK: "gem-1-bulk_reference-conditioning", SINGLE_CELL: "gem-1-sc_reference-conditioning"}
PREDICT_METADATA_MODELS = {BULK: "gem-1-bulk_predict-metadata", SINGLE_CELL: "gem-1-sc_predict-metadata"}
MODALITIES = tuple(MODALITY_MODELS)
#: The modality of a query (or a conditions table row) that names neither a modality nor a model.
DEFAULT_MODALITY = BULK

# --- modes: how samples are drawn (the wire calls a mode ``sampling_strategy``) ---------

SAMPLE_GENERATION = "sample generation"
MEAN_ESTIMATION = "mean estimation"

#: Every mode, with what it gives, in words.
MODES = {
    SAMPLE_GENERATION: "realistic samples with measurement noise",
    MEAN_ESTIMATION: "the expected expression",
}
SAMPLING_STRATEGIES = tuple(MODES)

# --- the model table --------------------------------------------------------------------

#: The kinds of model (``ModelSpec.kind``): expression from metadata, expression from a
#: reference sample plus a perturbation, and metadata from expression.
BASELINE, REFERENCE_CONDITIONING, PREDICT_METADATA = "baseline", "reference-conditioning", "predict-metadata"
MODEL_KINDS = (BASELINE, REFERENCE_CONDITIONING, PREDICT_METADATA)

#: What a model id looks like (a query may address any model by id; unknown ones go to the server).
MODEL_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True)
class ModelSpec:
    """What the client needs to know about one model id."""

    model_id: str
    #: The user-facing word for the data type: ``bulk`` or ``single-cell``.
    modality: str
    #: ``baseline`` (metadata -> expression), ``reference-conditioning`` or ``predict-metadata`` (MODEL_KINDS).
    kind: str
    #: Sampling strategies the model accepts, its default first; empty where the query takes none.
    modes: tuple[str, ...]
    #: Library size the server uses when the query gives no ``total_count``.
    default_total_count: int
    #: Keys every query input must carry.
    input_keys: tuple[str, ...]
    #: ``expression`` or ``metadata-prediction``: how the result's outputs are shaped.
    result_kind: str = "expression"
    #: The model family (``gem-1``); a family shares a query shape and a metadata vocabulary.
    family: str = "gem-1"
    #: The metadata vocabulary (a key of ``metadata.VOCABULARIES``) the client checks the
    #: inputs' metadata against before sending; ``None``: the server alone judges it.
    vocabulary: str | None = None
    #: The groups of the vocabulary's keys an input's metadata may carry.
    metadata_groups: tuple[str, ...] = ()
    #: The model-only options (keys of ``options.MODEL_OPTIONS``) its queries may set.
    options: tuple[str, ...] = ()

    @property
    def takes_counts(self) -> bool:
        """Do its inputs carry a ``counts`` vector (one count per gene of the model's gene order)?"""
        return "counts" in self.input_keys

    @property
    def default_mode(self) -> str | None:
        return self.modes[0] if self.modes else None


#: The model-only options of the reference-conditioning models.
REFERENCE_OPTIONS = ("conditioning", "fixed_total_count")

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "gem-1-bulk",
        BULK,
        BASELINE,
        modes=(SAMPLE_GENERATION, MEAN_ESTIMATION),
        default_total_count=10_000_000,
        input_keys=("metadata", "num_samples"),
        vocabulary="gem-1",
        metadata_groups=METADATA_GROUPS,
    ),
    ModelSpec(
        "gem-1-sc",
        SINGLE_CELL,
        BASELINE,
        modes=(MEAN_ESTIMATION,),
        default_total_count=10_000,
        input_keys=("metadata", "num_samples"),
        vocabulary="gem-1",
        metadata_groups=METADATA_GROUPS,
    ),
    # Reference conditioning takes perturbation keys only: the rest is inferred from the reference.
    ModelSpec(
        "gem-1-bulk_reference-conditioning",
        BULK,
        REFERENCE_CONDITIONING,
        modes=(SAMPLE_GENERATION, MEAN_ESTIMATION),
        default_total_count=10_000_000,
        input_keys=("counts", "metadata", "num_samples"),
        vocabulary="gem-1",
        metadata_groups=(PERTURBATIONAL,),
        options=REFERENCE_OPTIONS,
    ),
    ModelSpec(
        "gem-1-sc_reference-conditioning",
        SINGLE_CELL,
        REFERENCE_CONDITIONING,
        modes=(MEAN_ESTIMATION,),
        default_total_count=10_000,
        input_keys=("counts", "metadata", "num_samples"),
        vocabulary="gem-1",
        metadata_groups=(PERTURBATIONAL,),
        options=REFERENCE_OPTIONS,
    ),
    ModelSpec(
        "gem-1-bulk_predict-metadata",
        BULK,
        PREDICT_METADATA,
        modes=(),
        default_total_count=10_000_000,
        input_keys=("counts",),
        result_kind="metadata-prediction",
    ),
    ModelSpec(
        "gem-1-sc_predict-metadata",
        SINGLE_CELL,
        PREDICT_METADATA,
        modes=(),
        default_total_count=10_000,
        input_keys=("counts",),
        result_kind="metadata-prediction",
    ),
)

_BY_ID = {spec.model_id: spec for spec in MODELS}


def get_model(model_id: str) -> ModelSpec:
    """Return the spec of a known model id, or raise ``KeyError`` naming the known ones."""
    try:
        return _BY_ID[model_id]
    except KeyError:
        known = ", ".join(sorted(_BY_ID))
        raise KeyError(f"unknown model id {model_id!r}; known: {known}") from None


def is_known_model(model_id: str) -> bool:
    return model_id in _BY_ID


def model_for_modality(modality: str) -> ModelSpec:
    """The baseline model of a modality (``bulk`` -> ``gem-1-bulk``)."""
    return _BY_ID[MODALITY_MODELS[modality]]


def model_of_kind(modality: str, kind: str) -> ModelSpec:
    """A modality's model of a kind (``bulk``, ``predict-metadata`` -> ``gem-1-bulk_predict-metadata``)."""
    table = {
        BASELINE: MODALITY_MODELS,
        REFERENCE_CONDITIONING: REFERENCE_MODELS,
        PREDICT_METADATA: PREDICT_METADATA_MODELS,
    }
    return _BY_ID[table[kind][modality]]


def modalities_of_mode(mode: str) -> tuple[str, ...]:
    """The modalities whose baseline model accepts a mode (``sample generation``: bulk only)."""
    return tuple(modality for modality in MODALITIES if mode in model_for_modality(modality).modes)
