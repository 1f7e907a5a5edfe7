"""Metadata-prediction queries: counts in, at most ``batch`` samples per query.

Two sources:

- :func:`queries_from_expression`: the workflow's own merged ``expression.parquet`` (its
  samples are in the model's gene order already, being a result of the service);
- :func:`queries_from_counts_file`: a user's counts file (``annotate:`` in the config), each
  sample checked and aligned to the model's gene order
  (:mod:`synthbio_pipeline.pipeline.references`).

Each writes ``{out}/{chunk}.json`` (the wire body of ``POST
/api/models/{model}_predict-metadata/predict``: ``{"inputs": [{"counts": [...]}, ...]}``, plus
``seed`` when given) with chunks named ``0001``, ``0002``..., and ``samples_out``, a JSON object
chunk -> the ids of its samples in input order (the wrapper names the outputs with them).
Queries are written one at a time: memory holds one chunk's counts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.references import open_counts
from synthbio_pipeline.pipeline.references import (
    Annotation,
    ReferenceError,
    align,
    gene_id_problem,
    label_problem,
    overlap_problem,
    values_problem,
)
from synthbio_pipeline.vocabulary.families import (
    GEM2,
    GEM2_MODALITIES,
    PREDICT_METADATA,
    gem2_model,
    group_modality,
    is_gem2,
)
from synthbio_pipeline.vocabulary.gem2 import gem2_body
from synthbio_pipeline.vocabulary.models import PREDICT_METADATA_MODELS
from synthbio_pipeline.vocabulary.query import CLIENT_SOURCE, to_wire

logger = logging.getLogger(__name__)

#: Samples per metadata-prediction query unless the config says otherwise (``predict_metadata_batch``):
#: each input is a whole counts vector (44,590 numbers, about 200 kB of JSON for bulk), so 50 make a
#: request of about 10 MB.
DEFAULT_BATCH = 50


def group_metadata_model(group: str) -> str:
    """The model predicting the metadata of an output group's samples (``outputs:
    predicted_metadata``): the modality's GEM-1 one, or GEM-2's ``gem-2-{bulk,sc}_predict-metadata``."""
    if group in PREDICT_METADATA_MODELS:
        return PREDICT_METADATA_MODELS[group]
    word = {modality: word for word, modality in GEM2_MODALITIES.items()}[group_modality(group)]
    return f"{GEM2}-{word}_{PREDICT_METADATA}"


def chunk_names(n_samples: int, batch: int) -> list[str]:
    """``0001``, ``0002``...: one per query of at most ``batch`` samples."""
    return [f"{i:04d}" for i in range(1, -(-n_samples // batch) + 1)]


def prediction_body(
    model_id: str, counts: Sequence[np.ndarray], seed: int | None = None, modality: str | None = None
) -> dict[str, Any]:
    """The wire body of a metadata-prediction query of these counts vectors (a GEM-2 model's
    in GEM-2's shape: operation ``predict-metadata``, one item of ``counts`` per sample)."""
    if is_gem2(model_id):
        row = gem2_model(model_id)
        return gem2_body(
            PREDICT_METADATA,
            (row.modality if row is not None else None) or modality,
            [{"counts": c.astype(np.int64).tolist()} for c in counts],
            seed=seed,
            source=CLIENT_SOURCE,
        )
    query: dict[str, Any] = {"model_id": model_id, "inputs": [{"counts": c.astype(np.int64).tolist()} for c in counts]}
    if seed is not None:
        query["seed"] = seed
    return to_wire(query, validate=False)[1]


def _write(
    out: Path, samples_out, chunks: Iterator[tuple[list[str], list[np.ndarray]]], model_id, seed, batch, modality=None
):
    out.mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[str]] = {}
    for index, (ids, counts) in enumerate(chunks, start=1):
        name = f"{index:04d}"
        body = prediction_body(model_id, counts, seed, modality)
        with atomic_path(out / f"{name}.json") as temporary:
            temporary.write_text(json.dumps(body, separators=(",", ":")) + "\n")
        samples[name] = ids
    with atomic_path(samples_out) as temporary:
        temporary.write_text(json.dumps(samples, indent=1) + "\n")
    return samples


def queries_from_expression(
    expression: str | os.PathLike,
    out: str | os.PathLike,
    samples_out: str | os.PathLike,
    *,
    model_id: str,
    batch: int = DEFAULT_BATCH,
    seed: int | None = None,
    modality: str | None = None,
) -> dict[str, list[str]]:
    """Queries predicting the metadata of every sample of a merged expression file (counts);
    ``modality``: for ``gem-2``, whose id names none."""
    source = pq.ParquetFile(expression)
    label = json.loads((source.schema_arrow.metadata or {}).get(b"synthbio", b"{}"))
    if label.get("values") not in (None, "counts"):
        raise ReferenceError(f"{expression} holds {label['values']}, not counts: metadata prediction needs counts")
    ids = source.schema_arrow.names[1:]

    def chunks():
        for start in range(0, len(ids), batch):
            names = ids[start : start + batch]
            table = source.read(columns=names)
            yield names, [table.column(name).to_numpy() for name in names]

    return _write(Path(out), samples_out, chunks(), model_id, seed, batch, modality)


def queries_from_counts_file(
    annotation: Annotation,
    gene_order: Sequence[str],
    out: str | os.PathLike,
    samples_out: str | os.PathLike,
    *,
    model_id: str,
    batch: int = DEFAULT_BATCH,
    seed: int | None = None,
    path: str | os.PathLike | None = None,
    log: logging.Logger = logger,
) -> dict[str, list[str]]:
    """Queries predicting the metadata of every sample of a user's counts file, aligned to ``gene_order``.

    ``path`` is the file as the job sees it (default: the entry's). Every sample is checked
    (values, overlap) as it is read: a bad one raises
    :class:`ReferenceError` naming it (the job fails, and its partial output is removed).
    """
    where = f"annotate {annotation.name!r}"
    source = open_counts(path if path is not None else annotation.path)
    problem = gene_id_problem(source.genes) or label_problem(source, annotation.modality)
    if problem is None and not source.samples:
        problem = "it has no samples"
    if problem:
        raise ReferenceError(f"{where}: {source.path}: {problem}")
    least: list = []

    def chunks():
        for start in range(0, len(source.samples), batch):
            names = source.samples[start : start + batch]
            block = source.values(names)
            counts = []
            for j, name in enumerate(names):
                problem = values_problem(block[:, j], source.genes)
                alignment = None if problem else align(source.genes, block[:, j], gene_order)
                problem = problem or overlap_problem(alignment)
                if problem:
                    raise ReferenceError(f"{where}: {source.path}, sample {name!r}: {problem}")
                if not least or alignment.matched < least[0].matched:
                    least[:] = [alignment]
                counts.append(alignment.counts)
            yield names, counts

    samples = _write(Path(out), samples_out, chunks(), model_id, seed, batch, annotation.modality)
    log.info("%s: %d samples of %s; least covered: %s", where, len(source.samples), source.path, least[0].describe())
    return samples


def planned_predictions(
    generated: Mapping[str, int], annotated: Mapping[str, tuple], batch: int = DEFAULT_BATCH
) -> list[tuple[str, str, int, int]]:
    """What metadata prediction asks for: ``(model id, what, queries, samples)`` per source.

    ``generated``: output group -> samples the run generates (``outputs.predicted_metadata``);
    ``annotated``: annotate name -> (modality, samples in its file[, model id: default the
    modality's GEM-1 metadata-prediction model]). Each query is paid for, like
    the rows' own (the budget guard counts these with them).
    """
    plan = []
    for group, samples in generated.items():
        if samples:
            plan.append((group_metadata_model(group), f"{group} samples", len(chunk_names(samples, batch)), samples))
    for name, (modality, samples, *model) in annotated.items():
        model_id = model[0] if model else PREDICT_METADATA_MODELS[modality]
        plan.append((model_id, f"annotate {name}", len(chunk_names(samples, batch)), samples))
    return plan


def describe_plan(plan: Sequence[tuple[str, str, int, int]]) -> str:
    lines = [f"  {model} ({what}): {queries:,} queries, {samples:,} samples" for model, what, queries, samples in plan]
    total = sum(samples for *_, samples in plan)
    queries = sum(queries for _, _, queries, _ in plan)
    head = f"Metadata prediction: {total:,} samples in {queries:,} queries"
    head += " (each paid for, unless a ticket holds its answer):"
    return "\n".join([head, *lines])


__all__ = [
    "DEFAULT_BATCH",
    "chunk_names",
    "group_metadata_model",
    "describe_plan",
    "planned_predictions",
    "prediction_body",
    "queries_from_counts_file",
    "queries_from_expression",
]
