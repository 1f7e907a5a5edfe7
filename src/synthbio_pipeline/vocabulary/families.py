"""Which shape of result a model id answers with: the model id -> result kind mapping.

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
from typing import Any

from synthbio_pipeline.vocabulary.models import get_model, is_known_model

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
GEM2_OPERATIONS = {
    "predict-expression": GEM2_EXPRESSION,
    "predict-expression-from-reference": GEM2_EXPRESSION,
    "predict-metadata": GEM2_METADATA_PREDICTION,
    "autoencode": GEM2_AUTOENCODE,
}
#: The operation a compatibility id's suffix names.
GEM2_SUFFIX_OPERATIONS = {
    "baseline": "predict-expression",
    "reference-conditioning": "predict-expression-from-reference",
    "predict-metadata": "predict-metadata",
    "metadata": "predict-metadata",
    "autoencode": "autoencode",
}
GEM2_MODALITIES = {"bulk": "bulk", "sc": "single-cell"}
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


def is_gem2(model_id: str) -> bool:
    """Whether ``model_id`` is ``gem-2``, one of its compatibility ids or an ensemble member."""
    return bool(GEM2_ALIAS.fullmatch(model_id) or GEM2_MEMBER.fullmatch(model_id))


def gem2_operation(model_id: str, query: Mapping[str, Any] | None = None) -> str | None:
    """The GEM-2 operation a request runs: ``gem-2`` reads the query's ``operation``; a
    compatibility id names it. ``None`` for other ids and for an unknown operation.

    ``gem-2-ensemble`` (no modality, no suffix) names no operation, as in the vendor's client.
    """
    if model_id == GEM2:
        operation = (query or {}).get("operation")
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
    "EXPRESSION",
    "GEM2",
    "GEM2_ALIAS",
    "GEM2_AUTOENCODE",
    "GEM2_ENSEMBLE_MEMBERS",
    "GEM2_EXPRESSION",
    "GEM2_MEMBER",
    "GEM2_METADATA_PREDICTION",
    "GEM2_OPERATIONS",
    "GEM2_SUFFIX_OPERATIONS",
    "METADATA_PREDICTION",
    "RESULT_KINDS",
    "gem2_operation",
    "is_gem2",
    "result_kind",
]
