"""Metadata-prediction results as Parquet: the predicted values, and every class's probability.

A metadata-prediction model (``gem-1-{bulk,sc}_predict-metadata``) answers one output per
input counts vector, each with ``metadata`` (the predicted value per field) and
``classifier_probs`` (field -> value -> probability); GEM-2's ``predict-metadata`` names them
``predicted_metadata`` and ``classifier_probabilities``. Both carry the sample's ``latents``
(GEM-1: ``biological``, ``technical``, ``perturbation``; GEM-2: ``encoded``).
:func:`write_prediction_part` streams one result
(:func:`~synthbio_pipeline.formats.result_json.open_result`: one output in memory at a time)
into two files, and a third on request:

- ``predicted_metadata.parquet``: one row per sample, ``sample_id`` then one text column per
  predicted field (in the API's key order, then others by name);
- ``classifier_probs.parquet``: long form, one row per sample, field and value: ``sample_id``,
  ``field``, ``value`` (text) and ``probability`` (float64);
- ``encoded_latents.parquet`` (``latents_out``): ``sample_id``, then one list<float64> column per
  latent name (:func:`~synthbio_pipeline.formats.parquet.latents_table`).

:func:`merge_prediction_parts` concatenates the parts of several queries in order. Both files
carry the ``synthbio`` label (``backend``: ``emulator`` for emulated data, ``model_id``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.errors import MergeError, ResultError
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.parquet import SAMPLE_ID, SCHEMA_KEY, backend_of, write_latents
from synthbio_pipeline.formats.result_json import open_result
from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS

PREDICTED, PROBABILITIES, LATENTS = "predicted metadata", "classifier probabilities", "encoded latents"
PROBS_SCHEMA = pa.schema(
    [
        pa.field(SAMPLE_ID, pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("probability", pa.float64(), nullable=False),
    ]
)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _field_order(fields: set[str]) -> list[str]:
    return [key for key in METADATA_KEYS if key in fields] + sorted(fields - set(METADATA_KEYS))


def _with_label(schema: pa.Schema, label: dict) -> pa.Schema:
    return schema.with_metadata({**(schema.metadata or {}), SCHEMA_KEY: json.dumps(label).encode()})


def _probability_rows(sample_id: str, probs: Any, index: int) -> Iterator[tuple[str, str, str, float]]:
    if probs is None:
        return
    if not isinstance(probs, dict):
        raise ResultError(f"output {index}: classifier_probs is not an object of field -> value -> probability")
    for field, values in probs.items():
        if not isinstance(values, dict):
            raise ResultError(f"output {index}: classifier_probs[{field!r}] is not an object of value -> probability")
        for value, probability in values.items():
            if isinstance(probability, bool) or not isinstance(probability, (int, float)):
                raise ResultError(f"output {index}: classifier_probs[{field!r}][{value!r}] is not a number")
            if not math.isfinite(probability) or not 0 <= probability <= 1:
                raise ResultError(
                    f"output {index}: classifier_probs[{field!r}][{value!r}] is {probability!r}, not a probability"
                )
            yield sample_id, str(field), str(value), float(probability)


def _open_prediction(source: Any, expected: int):
    """A JSON result document's path (opened here), or a reader already open (a self-hosted
    container's Arrow stream, left open). GEM-2 predict-metadata outputs carry no counts: none
    are needed here."""
    if hasattr(source, "samples") and hasattr(source, "model_version"):
        return nullcontext(source)
    return open_result(source, expected_samples=expected, require_counts=False)


def write_prediction_part(
    result_path: str | os.PathLike | Any,
    *,
    sample_ids: Sequence[str],
    model_id: str,
    query_id: str,
    predicted_out: str | os.PathLike,
    probs_out: str | os.PathLike,
    latents_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """One metadata-prediction result -> its two parts (three with ``latents_out``: each
    sample's latents); ``sample_ids`` name the outputs in order. ``result_path`` is a JSON
    result document, or a self-hosted container's Arrow stream already open
    (:class:`~synthbio_pipeline.formats.arrow_stream.ArrowResult`, ``predict_metadata`` layout).

    The result is parsed one output at a time; a part holds one query's samples (at most
    ``predict_metadata_batch``), so its rows are gathered in memory and written at once.
    """
    rows: list[dict[str, Any]] = []
    probs: list[tuple[str, str, str, float]] = []
    latents: list[dict | None] = []
    with _open_prediction(result_path, len(sample_ids)) as reader:
        for index, sample in enumerate(reader.samples(len(sample_ids))):
            # GEM-2 names them predicted_metadata and classifier_probabilities; GEM-1 metadata and classifier_probs.
            predicted = sample.predicted_metadata
            rows.append(predicted if predicted is not None else sample.metadata)
            probs.extend(_probability_rows(sample_ids[index], sample.classifier_probabilities, index))
            latents.append(sample.latents)
        backend = backend_of(reader.model_version, reader.top_level)
        model_version = reader.model_version
    label = {"backend": backend, "model_id": model_id, "model_version": _text(model_version)}
    fields = _field_order({key for row in rows for key in row})
    columns = {SAMPLE_ID: pa.array(list(sample_ids), pa.string())}
    for key in fields:
        columns[key] = pa.array([_text(row.get(key)) for row in rows], pa.string())
    predicted = pa.table(columns)
    predicted = predicted.replace_schema_metadata({SCHEMA_KEY: json.dumps({"values": PREDICTED, **label}).encode()})
    arrays = [pa.array(list(column), kind.type) for column, kind in zip(zip(*probs), PROBS_SCHEMA)] if probs else None
    schema = _with_label(PROBS_SCHEMA, {"values": PROBABILITIES, **label})
    table = pa.Table.from_arrays(arrays, schema=schema) if arrays else schema.empty_table()
    with atomic_path(probs_out) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    with atomic_path(predicted_out) as temporary:
        pq.write_table(predicted, temporary, compression="zstd")
    if latents_out is not None:
        write_latents(sample_ids, latents, latents_out, {"values": LATENTS, **label})
    return {
        "samples": len(sample_ids),
        "fields": len(fields),
        "backend": backend,
        "model_version": model_version,
        "query_id": query_id,
    }


@contextmanager
def _labelled_writer(path: str | os.PathLike, schema: pa.Schema, label: dict[str, Any]) -> Iterator[pq.ParquetWriter]:
    """A zstd Parquet writer of ``schema`` carrying ``label``, whose file appears at ``path`` only when complete."""
    with atomic_path(path) as temporary:
        with pq.ParquetWriter(temporary, _with_label(schema, label), compression="zstd") as out:
            yield out


def merge_prediction_parts(
    predicted_parts: Sequence[str | os.PathLike],
    probs_parts: Sequence[str | os.PathLike],
    predicted_out: str | os.PathLike,
    probs_out: str | os.PathLike,
) -> dict[str, Any]:
    """Concatenate parts (in order) into the two files; a field only some parts have is null in the others."""
    if not predicted_parts or len(predicted_parts) != len(probs_parts):
        raise MergeError(f"{len(predicted_parts)} predicted-metadata parts and {len(probs_parts)} probability parts")
    schemas = [pq.read_schema(path) for path in predicted_parts]
    labels = [json.loads(schema.metadata[SCHEMA_KEY]) for schema in schemas]
    backends = sorted({label["backend"] for label in labels})
    models = sorted({label["model_id"] for label in labels})
    label = {"backend": backends[0] if len(backends) == 1 else backends, "model_id": ",".join(models)}
    fields = _field_order({name for schema in schemas for name in schema.names} - {SAMPLE_ID})
    unified = pa.schema([pa.field(SAMPLE_ID, pa.string()), *(pa.field(name, pa.string()) for name in fields)])
    seen: set[str] = set()
    with _labelled_writer(predicted_out, unified, {"values": PREDICTED, **label}) as out:
        for path in predicted_parts:
            table = pq.read_table(path)
            ids = table.column(SAMPLE_ID).to_pylist()
            repeated = seen.intersection(ids)
            if repeated:
                raise MergeError(f"sample ids appear in more than one part: {', '.join(sorted(repeated)[:5])}")
            seen.update(ids)
            arrays = [
                table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.string())
                for name in unified.names
            ]
            out.write_table(pa.Table.from_arrays(arrays, schema=out.schema))
    with _labelled_writer(probs_out, PROBS_SCHEMA, {"values": PROBABILITIES, **label}) as out:
        for path in probs_parts:
            source = pq.ParquetFile(path)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                out.write_table(pa.Table.from_arrays(table.columns, schema=out.schema))
    return {"samples": len(seen), "parts": len(predicted_parts), "fields": len(fields), "backend": label["backend"]}


__all__ = ["PROBS_SCHEMA", "merge_prediction_parts", "write_prediction_part"]
