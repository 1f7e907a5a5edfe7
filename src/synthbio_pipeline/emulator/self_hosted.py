"""Self-hosted mode: ``POST /api/models/{id}/predict`` answered at once with an Arrow IPC stream.

A partner's model container answers synchronously, ``application/vnd.apache.arrow.stream``,
as pysynthbio 4.2.4 reads it (``arrow_transformers``). The stream's schema metadata carries
``gene_order`` (a JSON list), ``request_type`` and ``model_version``; its record batches hold
:data:`BATCH_BYTES` of counts at most, generated, serialised and sent one at a time, so memory
stays bounded whatever the number of samples. Two layouts:

- expression (GEM-1 baseline and reference conditioning: ``request_type`` ``baseline`` and
  ``reference_conditioning``; GEM-2: ``predict_expression``,
  ``predict_expression_from_reference``, ``autoencode``): ``counts`` (list<int64>),
  ``metadata`` (a struct; all fields null where an output has none), latent columns
  (list<double>; not for autoencode) named as the hosted result's latents: GEM-1's
  ``biological_latent``, ``technical_latent``, ``perturbation_latent``; GEM-2's
  ``generated_latent`` (predict-expression) or ``z_ref_latent``, ``z_target_latent``,
  ``z_displacement_latent`` (from reference), and for autoencode ``model_release_id`` and
  ``vae_run_id`` (strings);
- ``predict_metadata`` (GEM-1 and GEM-2 metadata prediction): ``metadata`` (the predicted
  values), ``latents`` (a struct: GEM-1's ``biological``, ``technical``, ``perturbation``;
  GEM-2's ``encoded``), ``classifier_probs`` (a struct of structs: field -> value ->
  probability) and ``decoder_sample`` (a struct whose ``counts`` is the decoded sample).

The numbers are the hosted path's for the same body and seed (the same generators).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from synthbio_pipeline.vocabulary.families import AUTOENCODE, PREDICT_METADATA
from synthbio_pipeline.vocabulary.models import get_model

from . import annotate, gem2, generate

CONTENT_TYPE = "application/vnd.apache.arrow.stream"
#: Counts per record batch at most (int64s: 8 MiB), whole samples; at least one sample.
BATCH_BYTES = 8 << 20
#: GEM-1's ``request_type`` (the vendor's tests use ``baseline``).
GEM1_REQUEST_TYPE = "baseline"
#: The one ``request_type`` the vendor's client reads differently.
PREDICT_METADATA_REQUEST_TYPE = "predict_metadata"
LATENT_COLUMNS = tuple(f"{group}_latent" for group in generate.LATENT_GROUPS)

_COUNTS = pa.list_(pa.int64())
_LATENT = pa.list_(pa.float64())


def samples_per_batch(genes: int) -> int:
    return max(1, BATCH_BYTES // (8 * genes))


def gem1_stream(plan: generate.Plan, genes: int) -> ArrowStream:
    """The stream of a GEM-1 expression plan (baseline, reference conditioning): the hosted
    result's samples, as Arrow batches."""
    tables = generate.gene_tables(genes)
    kind = get_model(plan.model_id).kind
    request_type = GEM1_REQUEST_TYPE if kind == "baseline" else kind.replace("-", "_")
    metadata_type = _struct_type(metadata for metadata, _ in plan.inputs)
    fields = [
        pa.field("counts", _COUNTS),
        pa.field("metadata", metadata_type),
        *(pa.field(name, _LATENT) for name in LATENT_COLUMNS),
    ]
    schema = pa.schema(fields, metadata=_schema_metadata(tables, request_type, generate.MODEL_VERSION))

    def rows() -> Iterator[dict[str, Any]]:
        for sample in plan.samples(genes):
            yield {
                "counts": sample.counts,
                "metadata": sample.metadata,
                # Rounded as the hosted result's JSON rounds them.
                **{
                    f"{group}_latent": [round(float(x), gem2.LATENT_DECIMALS) for x in sample.latents[group]]
                    for group in generate.LATENT_GROUPS
                },
            }

    return ArrowStream(schema, rows(), samples_per_batch(genes), plan.num_samples)


def gem1_metadata_stream(
    model_id: str, body: Mapping[str, Any], genes: int, seen: Mapping[str, list[Any]]
) -> ArrowStream:
    """The stream of a GEM-1 metadata prediction: the hosted result's predictions (the candidates
    are the same: ``seen`` is what the emulator has been sent)."""
    tables = generate.gene_tables(genes)
    fields = annotate.candidates(seen)
    counts = annotate.counts_matrix(body["inputs"], genes)
    modality = get_model(model_id).modality
    labels = {name: list(dict.fromkeys(annotate.label(value) for value in values)) for name, values in fields.items()}
    schema = pa.schema(
        [
            pa.field("metadata", _struct_type({name: value} for name, values in fields.items() for value in values)),
            pa.field("latents", pa.struct([pa.field(group, _LATENT) for group in generate.LATENT_GROUPS])),
            pa.field("classifier_probs", _probabilities_type(labels)),
            pa.field("decoder_sample", pa.struct([pa.field("counts", _COUNTS)])),
        ],
        metadata=_schema_metadata(tables, PREDICT_METADATA_REQUEST_TYPE, generate.MODEL_VERSION),
    )

    def rows() -> Iterator[dict[str, Any]]:
        batch = samples_per_batch(genes)
        for start in range(0, counts.shape[0], batch):
            for prediction in annotate.predict(tables, counts[start : start + batch], modality, fields):
                yield {
                    "metadata": prediction.metadata,
                    # Rounded as the hosted result's JSON rounds them.
                    "latents": {
                        group: [round(float(x), gem2.LATENT_DECIMALS) for x in vector]
                        for group, vector in prediction.latents.items()
                    },
                    "classifier_probs": prediction.probabilities,
                    "decoder_sample": {"counts": prediction.decoder_counts},
                }

    return ArrowStream(schema, rows(), samples_per_batch(genes), counts.shape[0])


def _probabilities_type(labels: Mapping[str, list[str]]) -> pa.DataType:
    return pa.struct(
        [
            pa.field(name, pa.struct([pa.field(label, pa.float64()) for label in values]))
            for name, values in labels.items()
        ]
    )


def gem2_stream(plan: gem2.Plan, genes: int) -> ArrowStream:
    """The stream of a GEM-2 plan (every operation)."""
    tables = generate.gene_tables(genes)
    metadata = _schema_metadata(tables, plan.request_type, plan.release)
    if plan.operation == PREDICT_METADATA:
        probabilities = _probabilities_type({name: list(values) for name, values in gem2.CLASSIFIED.items()})
        schema = pa.schema(
            [
                pa.field("metadata", pa.struct([pa.field(name, pa.string()) for name in gem2.CLASSIFIED])),
                pa.field("latents", pa.struct([pa.field("encoded", _LATENT)])),
                pa.field("classifier_probs", probabilities),
                pa.field("decoder_sample", pa.struct([pa.field("counts", _COUNTS)])),
            ],
            metadata=metadata,
        )
        rows = (
            {
                "metadata": output.predicted_metadata,
                "latents": output.latents,
                "classifier_probs": output.classifier_probabilities,
                "decoder_sample": {"counts": output.decoded},
            }
            for output in gem2.generate_outputs(plan, genes)
        )
        return ArrowStream(schema, rows, samples_per_batch(genes), plan.num_outputs)
    fields = [
        pa.field("counts", _COUNTS),
        pa.field("metadata", _struct_type(item.metadata or {} for item in plan.request.items)),
    ]
    if plan.operation == AUTOENCODE:
        fields += [pa.field("model_release_id", pa.string()), pa.field("vae_run_id", pa.string())]
    else:
        # The JSON result's latent names (generated; z_ref, z_target, z_displacement), so both
        # paths give the same latents.
        fields += [pa.field(f"{name}_latent", _LATENT) for name in gem2.latent_names(plan.operation)]
    schema = pa.schema(fields, metadata=metadata)

    def rows() -> Iterator[dict[str, Any]]:
        for output in gem2.generate_outputs(plan, genes):
            row: dict[str, Any] = {"counts": output.counts, "metadata": output.metadata or {}}
            if output.provenance is not None:
                row.update(output.provenance)
            for name, vector in (output.latents or {}).items():
                row[f"{name}_latent"] = vector
            yield row

    return ArrowStream(schema, rows(), samples_per_batch(genes), plan.num_outputs)


# --- building batches --------------------------------------------------------------------------


def _schema_metadata(tables: generate.GeneTables, request_type: str, model_version: str) -> dict[bytes, bytes]:
    return {
        b"gene_order": tables.gene_order_json,
        b"request_type": request_type.encode("utf-8"),
        b"model_version": model_version.encode("utf-8"),
        # As the JSON results' "emulator" key: what reads it says the data is the emulator's
        # (GEM-2's model_version is a release name, which does not say it).
        b"emulator": b"synthetic data, not a model",
    }


def _struct_type(metadatas: Iterable[Mapping[str, Any]]) -> pa.DataType:
    """One struct type for every metadata of a request (the union of their keys); a value
    Arrow cannot type together with the others' (``65`` and ``"65"``) makes its key JSON text."""
    distinct = [dict(metadata) for metadata in metadatas]
    if not any(distinct):
        return pa.struct([])
    try:
        inferred = pa.array(distinct).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        inferred = None
    if inferred is not None and pa.types.is_struct(inferred):
        return inferred
    names = sorted({key for metadata in distinct for key in metadata})
    return pa.struct([pa.field(name, pa.string()) for name in names])


def _metadata_column(rows: list[Mapping[str, Any]], kind: pa.DataType) -> pa.Array:
    if kind.num_fields == 0:
        return pa.array([{} for _ in rows], type=kind)
    try:
        return pa.array([dict(row) for row in rows], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # the JSON-text fallback of _struct_type
        return pa.array(
            [{key: json.dumps(value) for key, value in row.items()} for row in rows],
            type=kind,
        )


def _counts_column(vectors: list[np.ndarray]) -> pa.Array:
    matrix = np.asarray(vectors, dtype=np.int64)
    offsets = np.arange(len(vectors) + 1, dtype=np.int32) * matrix.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.ravel()))


def _column(name: str, kind: pa.DataType, values: list[Any]) -> pa.Array:
    if kind == _COUNTS:
        return _counts_column(values)
    if name == "metadata" and pa.types.is_struct(kind):
        return _metadata_column(values, kind)
    if pa.types.is_struct(kind):
        return pa.array([_plain(value) for value in values], type=kind)
    if kind == _LATENT:
        return pa.array([np.asarray(value, dtype=np.float64) for value in values], type=kind)
    return pa.array(values, type=kind)


def _plain(value: Any) -> Any:
    """numpy arrays inside structs as lists (pyarrow builds struct children from Python values)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {key: _plain(inner) for key, inner in value.items()}
    return value


class _Collector:
    """A write-only file that keeps what the IPC writer wrote until it is taken."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts


class ArrowStream:
    """The IPC stream as byte chunks, in order: the schema, each record batch (as the IPC
    writer writes it: a few pieces), the end-of-stream marker. ``rows_sent`` counts the
    samples of the batches handed out so far (a ``short`` fault stops the stream by it)."""

    def __init__(self, schema: pa.Schema, rows: Iterator[dict[str, Any]], batch_size: int, total_rows: int):
        self.schema = schema
        self.rows = rows
        self.batch_size = batch_size
        self.total_rows = total_rows
        self.rows_sent = 0

    def __iter__(self) -> Iterator[bytes]:
        sink = _Collector()
        writer = ipc.new_stream(sink, self.schema)
        yield from sink.take()
        batch: list[dict[str, Any]] = []
        for row in self.rows:
            batch.append(row)
            if len(batch) == self.batch_size:
                yield from self._send(writer, sink, batch)
                batch = []
        if batch:
            yield from self._send(writer, sink, batch)
        writer.close()
        yield from sink.take()

    def _send(self, writer, sink: _Collector, batch: list[dict[str, Any]]) -> Iterator[bytes]:
        writer.write_batch(_record_batch(self.schema, batch))
        parts = sink.take()
        self.rows_sent += len(batch)
        yield from parts


def _record_batch(schema: pa.Schema, rows: list[dict[str, Any]]) -> pa.RecordBatch:
    columns = [_column(field.name, field.type, [row.get(field.name) for row in rows]) for field in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


__all__ = [
    "BATCH_BYTES",
    "CONTENT_TYPE",
    "ArrowStream",
    "gem1_metadata_stream",
    "gem1_stream",
    "gem2_stream",
    "samples_per_batch",
]
