"""The table of models this package knows, and how each one's queries and results look.

A model id is data: supporting a new model means adding a row to ``MODELS``, not a module.
Each row says what a query's inputs carry, which sampling strategies the model accepts,
the default library size, and which shape its result takes (``expression`` results carry
``counts`` per output; ``metadata-prediction`` results carry ``classifier_probs`` and a
``decoder_sample``).
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_GENERATION = "sample generation"
MEAN_ESTIMATION = "mean estimation"
SAMPLING_STRATEGIES = (SAMPLE_GENERATION, MEAN_ESTIMATION)


@dataclass(frozen=True)
class ModelSpec:
    """What the client needs to know about one model id."""

    model_id: str
    #: rsynthbio's user-facing word for the data type: ``bulk`` or ``single-cell``.
    modality: str
    #: ``baseline`` (metadata -> expression), ``reference-conditioning`` or ``predict-metadata``.
    kind: str
    #: Sampling strategies the model accepts; empty where the query takes none.
    modes: tuple[str, ...]
    #: Library size the server uses when the query gives no ``total_count``.
    default_total_count: int
    #: Keys every query input must carry.
    input_keys: tuple[str, ...]
    #: ``expression`` or ``metadata-prediction``: how the result's outputs are shaped.
    result_kind: str = "expression"

    @property
    def default_mode(self) -> str | None:
        return self.modes[0] if self.modes else None


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "gem-1-bulk",
        "bulk",
        "baseline",
        (SAMPLE_GENERATION, MEAN_ESTIMATION),
        10_000_000,
        ("metadata", "num_samples"),
    ),
    ModelSpec(
        "gem-1-sc",
        "single-cell",
        "baseline",
        (MEAN_ESTIMATION,),
        10_000,
        ("metadata", "num_samples"),
    ),
    ModelSpec(
        "gem-1-bulk_reference-conditioning",
        "bulk",
        "reference-conditioning",
        (SAMPLE_GENERATION, MEAN_ESTIMATION),
        10_000_000,
        ("counts", "metadata", "num_samples"),
    ),
    ModelSpec(
        "gem-1-sc_reference-conditioning",
        "single-cell",
        "reference-conditioning",
        (MEAN_ESTIMATION,),
        10_000,
        ("counts", "metadata", "num_samples"),
    ),
    ModelSpec(
        "gem-1-bulk_predict-metadata",
        "bulk",
        "predict-metadata",
        (),
        10_000_000,
        ("counts",),
        result_kind="metadata-prediction",
    ),
    ModelSpec(
        "gem-1-sc_predict-metadata",
        "single-cell",
        "predict-metadata",
        (),
        10_000,
        ("counts",),
        result_kind="metadata-prediction",
    ),
)

_BY_ID = {spec.model_id: spec for spec in MODELS}

#: The baseline model behind each user-facing modality word (rsynthbio's vocabulary).
MODALITY_MODELS = {"bulk": "gem-1-bulk", "single-cell": "gem-1-sc"}


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
