"""The model families' ids: what each GEM-2 id runs, and which shape of result any id answers with.

The GEM-2 ids are data: the operations (:data:`GEM2_OPERATION_SPECS`: per operation its
item keys, metadata groups, whether it draws samples, its result kind) and the table of ids
the service answers (:data:`GEM2_MODEL_IDS`: ``gem-2``, whose body names the operation and
modality, and each compatibility id with the operation and modality it stands for, built from
:data:`GEM2_MODALITIES`, :data:`GEM2_SUFFIX_OPERATIONS` and :data:`GEM2_ENSEMBLE_MEMBERS`).
The query shape and its checks are in :mod:`.gem2`.

The vendor's client (pysynthbio 4.2.4) maps nothing on the wire: a model id goes into the URL
path as given, and the server resolves GEM-2's compatibility ids. The client reads the id
only to choose how to turn the result into tables, and this module is that choice, as data:

- a model of :data:`~synthbio_pipeline.vocabulary.models.MODELS` has its ``result_kind``;
  :data:`GEM1_EXTRA_IDS` lists the GEM-1 ids the vendor's client formats that the model
  table does not describe (their queries go to the server unchecked);
- ``gem-2`` takes the result kind of the query's ``operation``;
- a GEM-2 compatibility id (:data:`GEM2_ALIAS`: ``gem-2-bulk``, ``gem-2-sc_metadata-ensemble``,
  ...) takes the operation its suffix names (:data:`GEM2_SUFFIX_OPERATIONS`; no suffix is
  ``predict-expression``), and a reference-conditioning ensemble member (:data:`GEM2_MEMBER`)
  is ``predict-expression-from-reference``.

Anything else has no result kind: the caller asks for the raw answer or gets an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.vocabulary.metadata import METADATA_GROUPS
from synthbio_pipeline.vocabulary.models import BULK, SINGLE_CELL, get_model, is_known_model

# --- result kinds (the parser's vocabulary: formats/result_json.py and formats/arrow_stream.py) --

#: GEM-1 expression: ``counts`` per output, optional ``metadata`` and ``latents``.
EXPRESSION = "expression"
#: GEM-1 metadata prediction: ``metadata``, ``classifier_probs``, ``latents``, ``decoder_sample``.
METADATA_PREDICTION = "metadata-prediction"
#: GEM-2 expression operations: ``counts``, ``metadata`` and ``latents`` that may be null.
GEM2_EXPRESSION = "gem-2-expression"
#: GEM-2 metadata prediction: ``predicted_metadata``, ``classifier_probabilities``, ``latents``; no counts.
GEM2_METADATA_PREDICTION = "gem-2-metadata-prediction"
#: GEM-2 autoencode: expression plus ``model_release_id`` and ``vae_run_id`` per output.
GEM2_AUTOENCODE = "gem-2-autoencode"

RESULT_KINDS = (EXPRESSION, METADATA_PREDICTION, GEM2_EXPRESSION, GEM2_METADATA_PREDICTION, GEM2_AUTOENCODE)

# --- GEM-1 ---------------------------------------------------------------------------------

#: GEM-1 ids the vendor's client formats that the model table does not (yet) describe.
GEM1_EXTRA_IDS = {"gem-1-bulk_condition-on-sample-ids": EXPRESSION}

# --- GEM-2 ---------------------------------------------------------------------------------

GEM2 = "gem-2"
PREDICT_EXPRESSION = "predict-expression"
FROM_REFERENCE = "predict-expression-from-reference"
PREDICT_METADATA = "predict-metadata"
AUTOENCODE = "autoencode"


@dataclass(frozen=True)
class Gem2Operation:
    """One GEM-2 operation: what its query items carry and what its result is."""

    name: str
    #: The shape of its result (one of :data:`RESULT_KINDS`).
    result_kind: str
    #: Keys every item of ``inputs.items`` must carry, and keys it may carry besides.
    item_keys: tuple[str, ...]
    optional_item_keys: tuple[str, ...]
    #: The groups of GEM-2's metadata vocabulary an item's ``metadata`` may carry.
    metadata_groups: tuple[str, ...]
    #: Whether it draws samples (``num_samples`` per item, ``options.sampling_strategy``);
    #: otherwise it answers one output per item.
    draws_samples: bool
    #: What it does, in words (docs).
    meaning: str

    @property
    def takes_output_total(self) -> bool:
        return "output_total" in self.item_keys + self.optional_item_keys


GEM2_OPERATION_SPECS: tuple[Gem2Operation, ...] = (
    Gem2Operation(
        PREDICT_EXPRESSION,
        GEM2_EXPRESSION,
        item_keys=("metadata", "num_samples"),
        optional_item_keys=("output_total",),
        metadata_groups=METADATA_GROUPS,
        draws_samples=True,
        meaning="expression from metadata",
    ),
    Gem2Operation(
        FROM_REFERENCE,
        GEM2_EXPRESSION,
        item_keys=("counts", "num_samples"),
        optional_item_keys=("metadata", "output_total"),
        metadata_groups=METADATA_GROUPS,
        draws_samples=True,
        meaning="a reference sample's expression moved to the item's metadata (perturbations)",
    ),
    Gem2Operation(
        PREDICT_METADATA,
        GEM2_METADATA_PREDICTION,
        item_keys=("counts",),
        optional_item_keys=(),
        metadata_groups=(),
        draws_samples=False,
        meaning="the metadata of a sample's counts, with class probabilities",
    ),
    Gem2Operation(
        AUTOENCODE,
        GEM2_AUTOENCODE,
        item_keys=("counts",),
        optional_item_keys=("output_total",),
        metadata_groups=(),
        draws_samples=False,
        meaning="a sample's counts encoded and decoded (reconstruction), with the release that did it",
    ),
)
GEM2_OPERATION_BY_NAME = {operation.name: operation for operation in GEM2_OPERATION_SPECS}
#: Each operation's result kind.
GEM2_OPERATIONS = {operation.name: operation.result_kind for operation in GEM2_OPERATION_SPECS}
#: The operation a compatibility id's suffix names.
GEM2_SUFFIX_OPERATIONS = {
    "baseline": PREDICT_EXPRESSION,
    "reference-conditioning": FROM_REFERENCE,
    "predict-metadata": PREDICT_METADATA,
    "metadata": PREDICT_METADATA,
    "autoencode": AUTOENCODE,
}
#: A compatibility id's modality word -> the modality (``inputs.modality`` of a ``gem-2`` body).
GEM2_MODALITIES = {"bulk": BULK, "sc": SINGLE_CELL}
#: The reference-conditioning ensemble's members, addressable one by one.
GEM2_ENSEMBLE_MEMBERS = ("4w6l3p61", "p3rz5xv7", "x4s7hdmu")

GEM2_ALIAS = re.compile(
    rf"gem-2(?:-(?P<modality>{'|'.join(GEM2_MODALITIES)}))?"
    rf"(?:_(?P<suffix>{'|'.join(GEM2_SUFFIX_OPERATIONS)}))?"
    r"(?P<ensemble>-ensemble)?"
)
GEM2_MEMBER = re.compile(
    rf"gem-2-(?P<modality>{'|'.join(GEM2_MODALITIES)})_reference-conditioning-(?P<member>{'|'.join(GEM2_ENSEMBLE_MEMBERS)})"
)


@dataclass(frozen=True)
class Gem2ModelId:
    """A GEM-2 model id the service answers: what it runs, on which modality.

    ``operation`` and ``modality`` are ``None`` for ``gem-2`` itself: its body names them.
    """

    model_id: str
    operation: str | None
    modality: str | None
    ensemble: bool = False
    #: The reference-conditioning ensemble member it addresses, if it is one.
    member: str | None = None

    @property
    def compatibility(self) -> bool:
        """A compatibility id (the id names the operation and modality), not ``gem-2``."""
        return self.operation is not None


def _gem2_model_ids() -> dict[str, Gem2ModelId]:
    """``gem-2``, then per modality word: the bare id and one per suffix, each also with
    ``-ensemble``, then the reference-conditioning ensemble's members."""
    rows = [Gem2ModelId(GEM2, None, None)]
    for word, modality in GEM2_MODALITIES.items():
        for suffix in (None, *GEM2_SUFFIX_OPERATIONS):
            model_id = f"gem-2-{word}" + (f"_{suffix}" if suffix else "")
            operation = GEM2_SUFFIX_OPERATIONS[suffix or "baseline"]
            rows.append(Gem2ModelId(model_id, operation, modality))
            rows.append(Gem2ModelId(f"{model_id}-ensemble", operation, modality, ensemble=True))
        for member in GEM2_ENSEMBLE_MEMBERS:
            rows.append(
                Gem2ModelId(f"gem-2-{word}_reference-conditioning-{member}", FROM_REFERENCE, modality, member=member)
            )
    return {row.model_id: row for row in rows}


#: Every GEM-2 model id the service answers (the emulator serves these), by id.
GEM2_MODEL_IDS: dict[str, Gem2ModelId] = _gem2_model_ids()


def gem2_model(model_id: str) -> Gem2ModelId | None:
    """The row of a GEM-2 model id the service answers, or ``None``."""
    return GEM2_MODEL_IDS.get(model_id)


def is_gem2(model_id: str) -> bool:
    """Whether ``model_id`` is ``gem-2``, one of its compatibility ids or an ensemble member."""
    return bool(GEM2_ALIAS.fullmatch(model_id) or GEM2_MEMBER.fullmatch(model_id))


def gem2_operation(model_id: str, query: Mapping[str, Any] | None = None) -> str | None:
    """The GEM-2 operation a request runs: ``gem-2`` reads the query's ``operation``; a
    compatibility id names it. ``None`` for other ids and for an unknown operation.

    ``gem-2-ensemble`` (no modality, no suffix) names no operation, as in the vendor's client.
    """
    if model_id == GEM2:
        operation = query.get("operation") if isinstance(query, Mapping) else None
        return operation if isinstance(operation, str) and operation in GEM2_OPERATIONS else None
    alias = GEM2_ALIAS.fullmatch(model_id)
    if alias and (alias["modality"] or alias["suffix"]):
        return GEM2_SUFFIX_OPERATIONS.get(alias["suffix"] or "baseline")
    if GEM2_MEMBER.fullmatch(model_id):
        return "predict-expression-from-reference"
    return None


def result_kind(model_id: str, query: Mapping[str, Any] | None = None) -> str | None:
    """The shape of result ``model_id`` answers ``query`` with (one of :data:`RESULT_KINDS`), or
    ``None`` when the id is not one this package (or the vendor's client) knows how to read."""
    if is_gem2(model_id):
        operation = gem2_operation(model_id, query)
        return GEM2_OPERATIONS[operation] if operation else None
    if is_known_model(model_id):
        return get_model(model_id).result_kind
    return GEM1_EXTRA_IDS.get(model_id)


__all__ = [
    "AUTOENCODE",
    "EXPRESSION",
    "FROM_REFERENCE",
    "GEM2",
    "GEM2_ALIAS",
    "GEM2_AUTOENCODE",
    "GEM2_ENSEMBLE_MEMBERS",
    "GEM2_EXPRESSION",
    "GEM2_MEMBER",
    "GEM2_METADATA_PREDICTION",
    "GEM2_MODALITIES",
    "GEM2_MODEL_IDS",
    "GEM2_OPERATIONS",
    "GEM2_OPERATION_BY_NAME",
    "GEM2_OPERATION_SPECS",
    "GEM2_SUFFIX_OPERATIONS",
    "METADATA_PREDICTION",
    "PREDICT_EXPRESSION",
    "PREDICT_METADATA",
    "RESULT_KINDS",
    "Gem2ModelId",
    "Gem2Operation",
    "gem2_model",
    "gem2_operation",
    "is_gem2",
    "result_kind",
]
