"""Parquet outputs: a part per condition, the merged pair per modality, and loading them.

Expression files hold **genes as rows**: a ``gene_id`` column (Ensembl ids, in the model's
gene order) and one column per sample, named by its ``sample_id`` (``{condition}_{n}``).
That is the orientation count-matrix tools (DESeq2, edgeR) expect, and it was measured to
be the fast one here: for 1,000 samples × 44,590 genes, pyarrow wrote it in 0.5 s (56 MB)
and read it back in 0.3 s, against 2.8 s and 3.2 s with 44,590 gene columns. Reading some
samples is a column projection; reading some genes reads the row groups that hold them
(``ROW_GROUP_GENES`` genes each). :func:`load_expression` returns either orientation.

Metadata files hold one row per sample, in the same order as the expression columns.
Both files carry a ``synthbio`` entry in their schema metadata saying what the values are
and which backend made them (``emulator`` data is labelled as such).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._io import atomic_path
from .errors import ResultError, SynthbioError
from .query import METADATA_KEYS
from .results import log_cpm, open_result

GENE_ID = "gene_id"
SAMPLE_ID = "sample_id"
#: Genes per row group, in parts and in merged files alike (so a merge copies whole groups).
ROW_GROUP_GENES = 2048
SCHEMA_KEY = b"synthbio"
COUNTS, LOG_CPM = "counts", "log1p_cpm"
_INT32_MAX = np.iinfo(np.int32).max
_PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": False}


class MergeError(SynthbioError, ValueError):
    """Parts that cannot be merged: different genes, repeated sample ids, mixed value kinds."""


def sample_ids(condition: str, n: int) -> list[str]:
    """Stable sample ids: ``{condition}_1`` ... ``{condition}_{n}``."""
    return [f"{condition}_{i}" for i in range(1, n + 1)]


def backend_of(model_version: Any, top_level: dict) -> str:
    """``emulator`` for data from the bundled emulator, else ``synthesize``."""
    return "emulator" if "emulator" in top_level or str(model_version).startswith("emulator") else "synthesize"


# --- one condition -----------------------------------------------------------------------


def write_part(
    result_path: str | os.PathLike,
    *,
    condition: str,
    model_id: str,
    query_id: str,
    body: dict,
    expression_out: str | os.PathLike,
    metadata_out: str | os.PathLike,
    as_counts: bool = True,
) -> dict[str, Any]:
    """Turn one downloaded result into the condition's expression and metadata parts.

    Samples are streamed from the result into a temporary spool file (one row per
    sample), then written gene block by gene block, so memory stays at one block
    whatever the number of samples. Both outputs appear atomically, or not at all.
    """
    expected = sum(int(item.get("num_samples", 0)) for item in body.get("inputs", [])) or None
    kind = COUNTS if as_counts else LOG_CPM
    dtype = np.dtype(np.int32 if as_counts else np.float32)
    with open_result(result_path, expected_samples=expected) as reader, tempfile.TemporaryFile() as spool:
        genes = reader.gene_order
        metadata_rows = []
        for sample in reader.samples(expected):
            spool.write(_sample_values(sample.counts, as_counts, len(metadata_rows)).tobytes())
            metadata_rows.append(sample.metadata)
        spool.flush()
        backend = backend_of(reader.model_version, reader.top_level)
        ids = sample_ids(condition, len(metadata_rows))
        label = {"values": kind, "backend": backend, "model_id": model_id, "orientation": "genes x samples"}
        schema = _expression_schema(ids, pa.from_numpy_dtype(dtype), label)
        with atomic_path(expression_out) as temporary, pq.ParquetWriter(temporary, schema, **_PARQUET_OPTIONS) as out:
            for start in range(0, len(genes), ROW_GROUP_GENES):
                stop = min(start + ROW_GROUP_GENES, len(genes))
                block = _read_gene_block(spool.fileno(), len(ids), len(genes), start, stop, dtype)
                columns = [pa.array(genes[start:stop], pa.string())] + [pa.array(row) for row in block]
                out.write_batch(pa.record_batch(columns, schema=schema))
        model_version = reader.model_version
    metadata = _metadata_frame(ids, metadata_rows, condition=condition, model_id=model_id, query_id=query_id,
                               model_version=model_version, backend=backend, body=body)
    write_metadata(metadata, metadata_out, label)
    return {"condition": condition, "samples": len(ids), "genes": len(genes), "backend": backend,
            "model_version": model_version, "query_id": query_id}


def _sample_values(counts: np.ndarray, as_counts: bool, index: int) -> np.ndarray:
    if counts.size and (counts.min() < 0 or counts.max() > _INT32_MAX):
        raise ResultError(f"output {index} has counts outside 0..{_INT32_MAX:,} (min {counts.min()}, max {counts.max()})")
    if as_counts:
        return counts.astype(np.int32)
    return log_cpm(counts.reshape(1, -1))[0].astype(np.float32)


def _read_gene_block(fd: int, n_samples: int, n_genes: int, start: int, stop: int, dtype: np.dtype) -> np.ndarray:
    """Rows ``start:stop`` of every sample from the spool, as a (samples × genes) array."""
    block = np.empty((n_samples, stop - start), dtype)
    width = (stop - start) * dtype.itemsize
    for i in range(n_samples):
        offset = (i * n_genes + start) * dtype.itemsize
        block[i] = np.frombuffer(os.pread(fd, width, offset), dtype)
    return block


def _expression_schema(ids: Sequence[str], value_type: pa.DataType, label: dict) -> pa.Schema:
    fields = [pa.field(GENE_ID, pa.string(), nullable=False)]
    fields += [pa.field(sample, value_type, nullable=False) for sample in ids]
    return pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(label).encode()})


def _metadata_frame(ids, rows, *, condition, model_id, query_id, model_version, backend, body) -> pd.DataFrame:
    inputs = body.get("inputs", [])
    requested = inputs[0].get("metadata", {}) if len(inputs) == 1 else {}
    keys = [key for key in METADATA_KEYS if any(key in row for row in rows) or key in requested]
    keys += sorted({key for row in rows for key in row} - set(keys))
    frame = pd.DataFrame(
        {
            SAMPLE_ID: ids,
            "condition": condition,
            "backend": backend,
            "model_id": model_id,
            "model_version": None if model_version is None else str(model_version),
            "query_id": query_id,
            "sampling_strategy": body.get("sampling_strategy"),
            "num_samples": len(ids),
            "seed": pd.array([body.get("seed")] * len(ids), dtype="Int64"),
            "total_count": pd.array([body.get("total_count")] * len(ids), dtype="Int64"),
            "deterministic_latents": pd.array([body.get("deterministic_latents")] * len(ids), dtype="boolean"),
        }
    )
    for key in keys:
        # Metadata is text, as the API spells it: a column has one type in every part.
        values = [row.get(key, requested.get(key)) for row in rows]
        frame[key] = pd.array([None if value is None else str(value) for value in values], dtype="string")
    return frame


def write_metadata(frame: pd.DataFrame, path: str | os.PathLike, label: dict) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), SCHEMA_KEY: json.dumps(label).encode()})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary, compression="zstd")


# --- merging -----------------------------------------------------------------------------


def merge_parts(
    expression_parts: Sequence[str | os.PathLike],
    metadata_parts: Sequence[str | os.PathLike],
    expression_out: str | os.PathLike,
    metadata_out: str | os.PathLike,
) -> dict[str, Any]:
    """Merge per-condition parts into one expression file and one metadata file.

    Streams row group by row group: memory holds one gene block of every sample, not the
    whole matrix, and does not grow with the number of parts beyond that block.
    """
    if not expression_parts or len(expression_parts) != len(metadata_parts):
        raise MergeError(f"{len(expression_parts)} expression parts and {len(metadata_parts)} metadata parts")
    schemas = [pq.read_schema(path) for path in expression_parts]
    labels = [json.loads(schema.metadata[SCHEMA_KEY]) for schema in schemas]
    kinds = {label["values"] for label in labels}
    if len(kinds) != 1:
        raise MergeError(f"parts hold different kinds of values ({', '.join(sorted(kinds))}); rerun with one as_counts")
    ids = [name for schema in schemas for name in schema.names[1:]]
    repeated = sorted(sample for sample, times in Counter(ids).items() if times > 1)
    if repeated:
        raise MergeError(f"sample ids appear in more than one part: {', '.join(repeated[:5])}")
    value_type = pa.int32() if kinds == {COUNTS} else pa.float32()
    backends = sorted({label["backend"] for label in labels})
    label = {"values": kinds.pop(), "backend": backends[0] if len(backends) == 1 else backends,
             "orientation": "genes x samples", "parts": len(expression_parts)}
    schema = _expression_schema(ids, value_type, label)

    if len(expression_parts) == 1:
        # One part is already the merged file: copy its bytes rather than decode and re-encode them.
        with atomic_path(expression_out) as temporary:
            shutil.copyfile(expression_parts[0], temporary)
    else:
        _merge_expression(expression_parts, expression_out, schema)

    metadata = pd.concat([pd.read_parquet(path) for path in metadata_parts], ignore_index=True)
    if list(metadata[SAMPLE_ID]) != ids:
        raise MergeError("the metadata parts do not list the same samples, in the same order, as the expression parts")
    write_metadata(metadata, metadata_out, label)
    return {"samples": len(ids), "parts": len(expression_parts), "backend": label["backend"]}


def _merge_expression(expression_parts, expression_out, schema: pa.Schema) -> None:
    """Write the parts side by side, one row group (gene block) at a time."""
    footers = [pq.read_metadata(path) for path in expression_parts]  # parsed once, not once per group
    with atomic_path(expression_out) as temporary, pq.ParquetWriter(temporary, schema, **_PARQUET_OPTIONS) as out:
        for group in range(footers[0].num_row_groups):
            gene_ids, columns = None, []
            for path, footer in zip(expression_parts, footers):
                table = pq.ParquetFile(path, metadata=footer).read_row_group(group)
                if gene_ids is None:
                    gene_ids = table.column(0)
                elif not table.column(0).equals(gene_ids):
                    raise MergeError(f"{path} has other genes (or another gene order) than {expression_parts[0]}")
                columns.extend(table.columns[1:])
            out.write_table(pa.Table.from_arrays([gene_ids, *columns], schema=schema))


# --- reading -----------------------------------------------------------------------------


def load_expression(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike | None = None,
    *,
    orientation: str = "genes",
    genes: Iterable[str] | None = None,
    samples: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Load an expression file (and its metadata) into pandas, aligned.

    ``orientation="genes"`` gives genes × samples (as stored, index ``gene_id``);
    ``"samples"`` gives samples × genes (index ``sample_id``, like the vendor's client).
    ``genes`` and ``samples`` select a subset without reading the rest of the file. The
    metadata comes back indexed by ``sample_id`` in the expression's sample order.
    """
    if orientation not in ("genes", "samples"):
        raise ValueError(f"orientation is 'genes' or 'samples', not {orientation!r}")
    columns = None if samples is None else [GENE_ID, *samples]
    filters = None if genes is None else [(GENE_ID, "in", list(genes))]
    expression = pq.read_table(expression_path, columns=columns, filters=filters).to_pandas().set_index(GENE_ID)
    expression.columns.name = SAMPLE_ID
    if orientation == "samples":
        expression = expression.T
    metadata = None
    if metadata_path is not None:
        metadata = pd.read_parquet(metadata_path).set_index(SAMPLE_ID)
        order = expression.index if orientation == "samples" else expression.columns
        missing = order.difference(metadata.index)
        if len(missing):
            raise MergeError(f"{metadata_path} has no rows for samples {', '.join(missing[:5])}")
        metadata = metadata.loc[order]
    return expression, metadata
