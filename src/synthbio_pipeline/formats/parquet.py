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

Provenance is the pipeline's: the columns it writes (:data:`PIPELINE_COLUMNS`: ``sample_id``,
``condition``, ``backend``, ``model_id``, ``seed``, ``query_id``...) come from the query and
the run, never from the server. A result whose per-sample metadata carries one of those keys
keeps the server's value under ``server_<key>``; a merge checks that each part's rows say
the same ``backend`` and ``model_id`` as its label.

A pair (expression + metadata, a part or the merged files) shares a ``run_id`` in both
labels; :func:`load_expression` refuses two files of different runs. A merge writes both
files completely before renaming either into place, so the old pair stays whole until the
new one is ready; only a kill between the two renames leaves a mixed pair, and that is
refused when read, not silently used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.errors import GeneOrderError, MergeError, ResultError
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.parquet_footer import chunk_layout, stitch_expression
from synthbio_pipeline.formats.result_json import PROVENANCE_KEYS, log_cpm, open_result
from synthbio_pipeline.vocabulary.families import GEM2, gem2_model, is_gem2
from synthbio_pipeline.vocabulary.gem2 import request_view
from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS
from synthbio_pipeline.vocabulary.models import get_model, is_known_model
from synthbio_pipeline.vocabulary.options import BOOLEAN, INTEGER, LIST, LIST_SEPARATOR, MODEL_OPTIONS, QUERY_OPTIONS

if TYPE_CHECKING:  # pandas only where a DataFrame is returned: it costs ~45 MB RSS to import
    import pandas as pd

GENE_ID = "gene_id"
SAMPLE_ID = "sample_id"
#: Genes per row group, in parts and in merged files alike (so a merge copies whole groups).
ROW_GROUP_GENES = 2048
SCHEMA_KEY = b"synthbio"
COUNTS, LOG_CPM = "counts", "log1p_cpm"
_INT32_MAX = np.iinfo(np.int32).max
#: Columns the pipeline writes from the query and the run; the server's metadata never overrides them.
PIPELINE_COLUMNS = (
    SAMPLE_ID,
    "condition",
    "backend",
    "model_id",
    "model_version",
    "query_id",
    "sampling_strategy",
    "num_samples",
    "seed",
    "total_count",
    "deterministic_latents",
)
#: Prefix of a server metadata key that names one of :data:`PIPELINE_COLUMNS` (``server_condition``).
SERVER_PREFIX = "server_"
RUN_ID = "run_id"


def new_run_id() -> str:
    """A fresh id shared by the two files of one pair."""
    return uuid.uuid4().hex


PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": False}


def sample_ids(condition: str, n: int) -> list[str]:
    """Stable sample ids: ``{condition}_1`` ... ``{condition}_{n}``."""
    return [f"{condition}_{i}" for i in range(1, n + 1)]


def backend_of(model_version: Any, top_level: dict) -> str:
    """``emulator`` for data from the bundled emulator, else ``synthesize``."""
    return "emulator" if "emulator" in top_level or str(model_version).startswith("emulator") else "synthesize"


# --- one condition -----------------------------------------------------------------------


@dataclass(frozen=True)
class PartTarget:
    """Where one condition's answer goes and what its rows carry (the query id, known only
    once the query is submitted, is given apart).

    ``extra_columns`` (name -> value) are added to every metadata row of the condition (a
    reference row's provenance). ``expected_genes``, when given, is the gene order the query's
    counts were sent in. ``latents_out``: the samples' latents go there too.
    """

    condition: str
    model_id: str
    body: dict
    expression_out: str | os.PathLike
    metadata_out: str | os.PathLike
    as_counts: bool = True
    extra_columns: dict[str, Any] | None = None
    expected_genes: Sequence[str] | None = None
    latents_out: str | os.PathLike | None = None


def write_part(result_path: str | os.PathLike, target: PartTarget, *, query_id: str) -> dict[str, Any]:
    """Turn one downloaded result into ``target``'s expression and metadata parts (and its
    latents, :func:`write_latents`, with ``target.latents_out``).

    ``result_path`` is a JSON result document, or a reader already open that yields the same
    samples (``gene_order``, ``model_version``, ``top_level``, ``samples(expected)``: a
    self-hosted Arrow stream's, :func:`~synthbio_pipeline.formats.arrow_stream.write_arrow_part`).
    A result in another gene order than ``target.expected_genes`` raises :class:`GeneOrderError`.

    Samples are parsed on a second thread (numpy parses counts without the GIL) while this
    one appends each sample's values to one spool file per gene block. Each block is then
    encoded by pyarrow ``TILE_SAMPLES`` samples at a time, as small one-row-group files whose
    column chunks are copied into the part, which gets a footer written here (as
    :func:`merge_parts` does). Memory holds one tile (``TILE_SAMPLES`` × ``ROW_GROUP_GENES``
    values) and ~60 bytes of footer per column chunk, whatever the number of samples. Both
    outputs appear atomically, or not at all.
    """
    condition, model_id, body, as_counts = target.condition, target.model_id, target.body, target.as_counts
    expected_genes, latents_out = target.expected_genes, target.latents_out
    # Either family's body: GEM-1's inputs list, or GEM-2's inputs.items.
    items, _ = request_view(body)
    expected = sum(int(item.get("num_samples", 0)) for item in items) or None
    kind = COUNTS if as_counts else LOG_CPM
    dtype = np.dtype(np.int32 if as_counts else np.float32)
    with _open_source(result_path, expected) as reader, contextlib.ExitStack() as stack:
        genes = reader.gene_order
        if expected_genes is not None and list(expected_genes) != genes:
            raise GeneOrderError(
                f"condition {condition}: the result's gene order ({len(genes):,} genes) is not the one its reference "
                f"counts were sent in ({len(expected_genes):,} genes): the cached gene order is stale. Delete it "
                "(resources/gene_order/) and rerun; the query was paid for, its answer is not used"
            )
        bounds = [(start, min(start + ROW_GROUP_GENES, len(genes))) for start in range(0, len(genes), ROW_GROUP_GENES)]
        spools = [stack.enter_context(tempfile.TemporaryFile()) for _ in bounds]
        metadata_rows = []
        latent_rows: list[dict | None] = []
        for sample in _prefetched(reader.samples(expected)):
            if latents_out is not None:
                latent_rows.append(sample.latents)
            values = _sample_values(sample.counts, as_counts, len(metadata_rows))
            for spool, (start, stop) in zip(spools, bounds):
                spool.write(values[start:stop])
            # GEM-2 autoencode's provenance (model_release_id, vae_run_id) goes into the sample's row.
            provenance = {key: sample.extra[key] for key in PROVENANCE_KEYS if sample.extra.get(key) is not None}
            metadata_rows.append({**sample.metadata, **provenance} if provenance else sample.metadata)
        backend = backend_of(reader.model_version, reader.top_level)
        ids = sample_ids(condition, len(metadata_rows))
        label = {
            "values": kind,
            "backend": backend,
            "model_id": model_id,
            "orientation": "genes x samples",
            RUN_ID: new_run_id(),
        }
        label["family"] = model_family(model_id)
        if is_known_model(model_id):
            label["modality"] = get_model(model_id).modality
        elif is_gem2(model_id):
            modality = (gem2_model(model_id).modality if gem2_model(model_id) else None) or (
                body.get("inputs", {}).get("modality") if isinstance(body.get("inputs"), dict) else None
            )
            if modality:
                label["modality"] = modality
        schema = expression_schema(ids, pa.from_numpy_dtype(dtype), label)
        _write_expression(target.expression_out, schema, genes, spools, bounds, dtype)
        model_version = reader.model_version
    metadata = _metadata_table(
        ids,
        metadata_rows,
        condition=condition,
        model_id=model_id,
        query_id=query_id,
        model_version=model_version,
        backend=backend,
        body=body,
        extra_columns=target.extra_columns or {},
    )
    write_metadata(metadata, target.metadata_out, label)
    if latents_out is not None:
        write_latents(ids, latent_rows, latents_out, label)
    return {
        "condition": condition,
        "samples": len(ids),
        "genes": len(genes),
        "backend": backend,
        "model_version": model_version,
        "query_id": query_id,
    }


def model_family(model_id: str) -> str:
    """``gem-2`` for GEM-2's ids, else the model table's family (``gem-1`` for unknown ids)."""
    if is_gem2(model_id):
        return GEM2
    return get_model(model_id).family if is_known_model(model_id) else "gem-1"


def _open_source(source, expected: int | None):
    """A JSON result document's path (opened here), or a reader already open (left open)."""
    if hasattr(source, "samples") and hasattr(source, "gene_order"):
        if getattr(source, "has_gene_order", True) is False:
            raise ResultError("the Arrow stream has no gene_order in its schema metadata: the part needs gene ids")
        return contextlib.nullcontext(source)
    return open_result(source, expected_samples=expected)


#: Samples per file pyarrow encodes for :func:`write_part`: its writer keeps ~1-2 KB of metadata
#: per column chunk until close, so a bounded number of columns per writer bounds memory.
TILE_SAMPLES = 512
# Statistics only where a reader filters (gene_id): per-sample min/max cost ~0.4 s at 1,000 samples.
# No stored arrow schema: the tiles' footers are dropped, the part's footer is written by stitch_expression.
_TILE_OPTIONS = {**PARQUET_OPTIONS, "write_statistics": [GENE_ID], "store_schema": False}


def _write_expression(path, schema: pa.Schema, genes: Sequence[str], spools, bounds, dtype: np.dtype) -> None:
    """The part from the gene blocks' spool files: one row group per block, stitched from tiles."""
    n = len(schema) - 1
    if not n:  # no samples: nothing to stitch, and pyarrow's footer is only the gene column's
        with atomic_path(path) as temporary:
            pq.write_table(
                pa.table([_string_array(genes)], schema=schema),
                temporary,
                row_group_size=ROW_GROUP_GENES,
                **_TILE_OPTIONS,
            )
        return
    tiles = [(first, min(first + TILE_SAMPLES, n)) for first in range(0, n, TILE_SAMPLES)]
    tile_schemas = [
        pa.schema([schema.field(0), *(schema.field(j + 1) for j in range(first, last))]) for first, last in tiles
    ]
    buffer = np.empty(min(n, TILE_SAMPLES) * ROW_GROUP_GENES, dtype)  # reused: pyarrow copies what it encodes
    with tempfile.TemporaryDirectory(prefix="synthbio-tiles-") as scratch:
        paths = [os.path.join(scratch, f"tile{i}.parquet") for i in range(len(tiles))]

        def row_groups() -> Iterator[list]:
            for spool, (start, stop) in zip(spools, bounds):
                spool.flush()
                width = stop - start
                gene_ids = _string_array(genes[start:stop])
                for tile_path, tile_schema, (first, last) in zip(paths, tile_schemas, tiles):
                    rows = _read_gene_block(spool.fileno(), first * width * dtype.itemsize, last - first, width, buffer)
                    columns = [gene_ids] + [
                        pa.Array.from_buffers(schema.field(1).type, width, [None, pa.py_buffer(row)]) for row in rows
                    ]
                    pq.write_table(pa.Table.from_arrays(columns, schema=tile_schema), tile_path, **_TILE_OPTIONS)
                    del columns, rows
                layout = chunk_layout(paths, schema)
                if layout is None:
                    raise RuntimeError(
                        f"pyarrow wrote tiles of genes {start}..{stop} that cannot be copied as they are"
                    )
                yield [(tile_path, part, 0) for tile_path, part in zip(paths, layout)]

        stitch_expression(path, schema, row_groups(), PARQUET_OPTIONS)


def _prefetched(samples: Iterator, depth: int = 4) -> Iterator:
    """Run the ``samples`` generator on a second thread, ``depth`` samples ahead.

    Errors reach the caller in document order, after the samples before them.
    """
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        while not stop.is_set():  # the consumer may have gone: never block for good
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for sample in samples:
                if not offer((sample, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((done, exc))

    worker = threading.Thread(target=produce, name="synthbio-parse", daemon=True)
    worker.start()
    try:
        while True:
            sample, error = slots.get()
            if sample is done:
                if error is not None:
                    raise error
                return
            yield sample
    finally:
        stop.set()
        worker.join()
        samples.close()


def _sample_values(counts: np.ndarray, as_counts: bool, index: int) -> np.ndarray:
    if counts.size and (counts.min() < 0 or counts.max() > _INT32_MAX):
        raise ResultError(
            f"output {index} has counts outside 0..{_INT32_MAX:,} (min {counts.min()}, max {counts.max()})"
        )
    if as_counts:
        return counts.astype(np.int32)
    return log_cpm(counts.reshape(1, -1))[0].astype(np.float32)


def _read_gene_block(fd: int, offset: int, n_samples: int, width: int, buffer: np.ndarray) -> np.ndarray:
    """``n_samples`` samples' values for ``width`` genes from a block's spool file (sample after
    sample, from byte ``offset``), read with one call into ``buffer``, as a (samples × genes) view."""
    block = buffer[: n_samples * width].reshape(n_samples, width)
    view = memoryview(block.reshape(-1)).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if not got:
            raise ResultError(f"the spool file ended after {offset + done} of {offset + len(view)} bytes")
        done += got
    return block


# Arrays are built from their buffers: any pa.array / pa.scalar call imports pandas (pyarrow's
# array-like check), ~45 MB RSS that the write path otherwise never needs.
def _string_array(values: Sequence[str | None], kind: pa.DataType | None = None) -> pa.Array:
    """A (large_)string array; ``pa.array`` also costs ~0.1 s per 1,000 calls in type checks."""
    kind = pa.string() if kind is None else kind
    encoded = [b"" if value is None else value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, np.int64 if pa.types.is_large_string(kind) else np.int32)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    missing = np.fromiter((value is None for value in values), bool, len(encoded))
    validity = _bitmap(~missing) if missing.any() else None
    return pa.Array.from_buffers(
        kind,
        len(encoded),
        [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
        null_count=int(missing.sum()),
    )


def _constant_array(value: Any, kind: pa.DataType, n: int) -> pa.Array:
    """``n`` times an int64 or bool ``value`` (None: all null), checked as pandas' Int64/boolean would."""
    if value is None:
        return pa.nulls(n, kind)
    if pa.types.is_boolean(kind):
        if value not in (True, False):
            raise ValueError(f"{value!r} is not a boolean")
        return pa.Array.from_buffers(kind, n, [None, _bitmap(np.full(n, bool(value)))])
    if isinstance(value, (str, bytes)) or int(value) != value:
        raise ValueError(f"{value!r} is not an integer")
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(np.full(n, int(value), np.int64))])


def _bitmap(bits: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.packbits(bits, bitorder="little"))


def expression_schema(ids: Sequence[str], value_type: pa.DataType, label: dict) -> pa.Schema:
    fields = [pa.field(GENE_ID, pa.string(), nullable=False)]
    fields += [pa.field(sample, value_type, nullable=False) for sample in ids]
    return pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(label).encode()})


# How pandas (3.x) stores each kind of metadata column, as (pandas_type, numpy_type) in the
# b"pandas" schema metadata: pd.read_parquet gives these dtypes back (str, string, Int64, boolean).
_STR, _STRING, _EMPTY = ("object", "str"), ("object", "string"), ("empty", "object")
_INT64, _NULLABLE_INT64, _NULLABLE_BOOL = ("int64", "int64"), ("int64", "Int64"), ("bool", "boolean")
#: The column type of each kind of query option (arrow type, pandas kind).
_OPTION_TYPES = {
    INTEGER: (pa.int64(), _NULLABLE_INT64),
    BOOLEAN: (pa.bool_(), _NULLABLE_BOOL),
    LIST: (pa.large_string(), _STR),
}


def _metadata_table(
    ids, rows, *, condition, model_id, query_id, model_version, backend, body, extra_columns=None
) -> pa.Table:
    """One row per sample, built with pyarrow (no pandas import on the write path), with the
    pandas metadata ``DataFrame.to_parquet`` would write for the frame this used to build.

    The query options' columns are every model's (``QUERY_OPTIONS``), then those only the
    model takes (a reference-conditioning model's ``conditioning``); ``extra_columns`` follow (text, whole numbers,
    booleans, or None: an all-null column)."""
    inputs, flat = request_view(body)  # GEM-2 bodies keep their options under "options"
    requested = inputs[0].get("metadata", {}) if len(inputs) == 1 else {}
    keys = [key for key in METADATA_KEYS if any(key in row for row in rows) or key in requested]
    keys += sorted({key for row in rows for key in row} - set(keys))
    n = len(ids)

    def text(value) -> tuple[pa.Array, tuple[str, str]]:
        # A constant None is an all-null object column in pandas, a null column in arrow.
        return (pa.nulls(n), _EMPTY) if value is None else (_string_array([value] * n, pa.large_string()), _STR)

    columns = {
        SAMPLE_ID: (_string_array(ids, pa.large_string()), _STR),
        "condition": text(condition),
        "backend": text(backend),
        "model_id": text(model_id),
        "model_version": text(None if model_version is None else str(model_version)),
        "query_id": text(query_id),
        "sampling_strategy": text(flat.get("sampling_strategy")),
        "num_samples": (_constant_array(n, pa.int64(), n), _INT64),
    }
    own = get_model(model_id).options if is_known_model(model_id) else ()
    options = {**QUERY_OPTIONS, **{n: o for n, o in MODEL_OPTIONS.items() if n in own or n in body}}
    for name, option in options.items():
        arrow_type, kind = _OPTION_TYPES[option.type]
        value = flat.get(name)
        if option.type == LIST:
            columns[name] = text(None if value is None else LIST_SEPARATOR.join(map(str, value)))
        else:
            columns[name] = (_constant_array(value, arrow_type, n), kind)
    for name, value in (extra_columns or {}).items():
        if name in columns:
            raise ValueError(f"extra column {name!r} is one of the metadata table's own")
        if value is None or isinstance(value, str):
            columns[name] = text(value)
        elif isinstance(value, bool):
            columns[name] = (_constant_array(value, pa.bool_(), n), _NULLABLE_BOOL)
        else:
            columns[name] = (_constant_array(value, pa.int64(), n), _NULLABLE_INT64)
    for key in keys:
        # Metadata is text, as the API spells it: a column has one type in every part. A key that
        # names a column of ours is the server's say, kept beside ours, never in its place.
        name = key
        while name in columns:
            name = SERVER_PREFIX + name
        values = [row.get(key, requested.get(key)) for row in rows]
        columns[name] = (
            _string_array([_metadata_text(value) for value in values], pa.large_string()),
            _STRING,
        )
    table = pa.table({name: array for name, (array, _) in columns.items()})
    return table.replace_schema_metadata(
        {b"pandas": _pandas_metadata({name: kind for name, (_, kind) in columns.items()})}
    )


def latents_table(ids: Sequence[str], rows: Sequence[dict | None]) -> pa.Table:
    """One row per sample: ``sample_id``, then one list<float64> column per latent name, in
    the order they first appear (GEM-1: ``biological``, ``technical``, ``perturbation``; GEM-2:
    ``generated``...); null where a sample has none (GEM-2 keeps its rows aligned)."""
    names: list[str] = []
    for row in rows:
        for name in row or {}:
            if name not in names:
                names.append(name)
    columns = {SAMPLE_ID: _string_array(list(ids), pa.large_string())}
    for name in names:
        values = [None if not row or row.get(name) is None else [float(x) for x in row[name]] for row in rows]
        columns[name] = pa.array(values, type=pa.list_(pa.float64()))
    return pa.table(columns)


def write_latents(ids: Sequence[str], rows: Sequence[dict | None], path: str | os.PathLike, label: dict) -> None:
    """A condition's latents part (:func:`latents_table`), atomically, with the part's label."""
    table = latents_table(ids, rows)
    table = table.replace_schema_metadata({SCHEMA_KEY: json.dumps(label).encode()})
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def merge_latents(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """The latents parts of one output group in one file, in the given order (columns the
    union of the parts', null where a part has none); returns the number of samples."""
    tables = [pq.read_table(path) for path in parts]
    merged = pa.concat_tables([table.replace_schema_metadata(None) for table in tables], promote_options="default")
    labels = [json.loads(table.schema.metadata[SCHEMA_KEY]) for table in tables if table.schema.metadata]
    # Emulated data says so in every file it lands in: the parts' backends and models are kept.
    backends = sorted({label["backend"] for label in labels if label.get("backend")})
    label = {
        "parts": len(tables),
        "family": labels[0].get("family") if labels else None,
        "backend": backends[0] if len(backends) == 1 else backends,
        "model_id": ",".join(sorted({label["model_id"] for label in labels if label.get("model_id")})),
    }
    if labels and labels[0].get("values"):
        label["values"] = labels[0]["values"]
    with atomic_path(out) as temporary:
        pq.write_table(merged.replace_schema_metadata({SCHEMA_KEY: json.dumps(label).encode()}), temporary)
    return merged.num_rows


def _metadata_text(value: Any) -> str | None:
    """A metadata value as text: lists and objects (GEM-2's perturbation lists) as JSON."""
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _pandas_metadata(kinds: dict[str, tuple[str, str]]) -> bytes:
    """The b"pandas" schema metadata pyarrow writes for a frame with these columns and a RangeIndex."""
    return json.dumps(
        {
            "index_columns": [],
            "column_indexes": [],
            "columns": [
                {
                    "name": name,
                    "field_name": name,
                    "pandas_type": pandas_type,
                    "numpy_type": numpy_type,
                    "metadata": None,
                }
                for name, (pandas_type, numpy_type) in kinds.items()
            ],
            "attributes": {},
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": _pandas_version(),
        }
    ).encode()


@functools.cache
def _pandas_version() -> str | None:
    try:
        return importlib.metadata.version("pandas")
    except importlib.metadata.PackageNotFoundError:
        return None


def _column_kind(field: pa.Field) -> tuple[str, str]:
    """What pandas stores for a column it did not describe (a part written by other code)."""
    if pa.types.is_null(field.type):
        return _EMPTY
    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
        return _STR
    name = np.dtype(field.type.to_pandas_dtype()).name
    return name, name


def write_metadata(frame: pa.Table | pd.DataFrame, path: str | os.PathLike, label: dict) -> None:
    """Write a metadata table (or DataFrame) with the ``synthbio`` label in its schema metadata."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
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
    if len(expression_parts) == 1:
        # A part's footer holds samples x row groups entries, and pyarrow parses all of it even
        # for the schema (62 MB at 3,000 samples); the one part's metadata file, written with
        # it by write_part, has the same label and samples.
        only = pq.ParquetFile(metadata_parts[0])  # pq.read_table would import pandas
        labels = [json.loads(only.schema_arrow.metadata[SCHEMA_KEY])]
        ids = only.read(columns=[SAMPLE_ID]).column(0).to_pylist()
    else:
        schemas = [pq.read_schema(path) for path in expression_parts]
        labels = [json.loads(schema.metadata[SCHEMA_KEY]) for schema in schemas]
        ids = [name for schema in schemas for name in schema.names[1:]]
    kinds = {label["values"] for label in labels}
    if len(kinds) != 1:
        raise MergeError(f"parts hold different kinds of values ({', '.join(sorted(kinds))}); rerun with one as_counts")
    repeated = sorted(sample for sample, times in Counter(ids).items() if times > 1)
    if repeated:
        raise MergeError(f"sample ids appear in more than one part: {', '.join(repeated[:5])}")
    value_type = pa.int32() if kinds == {COUNTS} else pa.float32()
    backends = sorted({label["backend"] for label in labels})
    # A part names its model; a merged batch (merged again per modality) names its models.
    models = sorted({m for label in labels for m in [label.get("model_id"), *label.get("model_ids", [])] if m})
    modalities = {label.get("modality") for label in labels}
    families = {label.get("family", "gem-1") for label in labels}
    if len(families) != 1:
        raise MergeError(
            f"parts come from different model families ({', '.join(sorted(families))}): a merged matrix holds "
            "one gene order and one family; merge each family's parts apart"
        )
    label = {
        "values": kinds.pop(),
        "backend": backends[0] if len(backends) == 1 else backends,
        "orientation": "genes x samples",
        "parts": len(expression_parts),
        # One part is copied as it is, so the pair keeps that part's run id (its expression carries it).
        RUN_ID: labels[0].get(RUN_ID) if len(expression_parts) == 1 else new_run_id(),
    }
    if label[RUN_ID] is None:
        del label[RUN_ID]
    # Which models and which modality made the samples (a reference file's modality is checked with it).
    if models:
        label["model_ids"] = models
    label["family"] = families.pop()
    if len(modalities) == 1 and None not in modalities:
        label["modality"] = modalities.pop()
    schema = expression_schema(ids, value_type, label)

    # Both files are written in full before either is renamed into place (the metadata first):
    # the old pair stays whole until the new one is ready.
    with atomic_path(expression_out) as expression_temporary, atomic_path(metadata_out) as metadata_temporary:
        if len(expression_parts) == 1:
            # One part is already the merged file: copy its bytes rather than decode and re-encode them.
            shutil.copyfile(expression_parts[0], expression_temporary)
        else:
            _merge_expression(expression_parts, expression_temporary, schema)
        row_backends = _merge_metadata(metadata_parts, ids, metadata_temporary, label)
        if row_backends != set(backends):
            raise MergeError(
                f"the expression parts say backend {', '.join(backends)} but the metadata rows say "
                f"{', '.join(sorted(row_backends))}; the parts do not belong together"
            )
    return {"samples": len(ids), "parts": len(expression_parts), "backend": label["backend"]}


#: Rows of metadata gathered before they are written: memory stays at this many rows, not K parts' worth.
METADATA_ROWS_PER_WRITE = 8192


def _merge_metadata(metadata_parts, ids: list[str], metadata_out, label: dict) -> set[str]:
    """Concatenate the metadata parts (a key only some parts have is null in the others), streaming.

    The parts' schemas are read first (small) to unify them; rows are then written a few
    thousand at a time (holding 1,000 parts' tables cost 25 MB), and checked against ``ids``
    and against each part's label (``backend``, ``model_id``). Returns the rows' backends.
    """
    schemas = [pq.ParquetFile(path).schema_arrow for path in metadata_parts]
    unified = pa.unify_schemas([schema.remove_metadata() for schema in schemas], promote_options="permissive")
    unified = unified.with_metadata(
        {b"pandas": _merged_pandas_metadata(unified, schemas), SCHEMA_KEY: json.dumps(label).encode()}
    )
    pending, rows, seen, backends = [], 0, 0, set()
    with atomic_path(metadata_out) as temporary, pq.ParquetWriter(temporary, unified, compression="zstd") as out:
        for index, path in enumerate(metadata_parts):
            table = pq.ParquetFile(path).read()  # pq.read_table would import pandas
            backends |= _check_provenance(path, table, schemas[index])
            table = pa.table(
                [
                    table.column(field.name).cast(field.type)
                    if field.name in table.column_names
                    else pa.nulls(table.num_rows, field.type)
                    for field in unified
                ],
                schema=unified,
            )
            if table.column(SAMPLE_ID).to_pylist() != ids[seen : seen + table.num_rows]:
                raise MergeError(f"{path} does not list the samples of expression part {index + 1}, in their order")
            seen += table.num_rows
            pending.append(table)
            rows += table.num_rows
            if rows >= METADATA_ROWS_PER_WRITE or index == len(metadata_parts) - 1:
                out.write_table(pa.concat_tables(pending))
                pending, rows = [], 0
    if seen != len(ids):
        raise MergeError("the metadata parts do not list the same samples, in the same order, as the expression parts")
    return backends


def _check_provenance(path, table: pa.Table, schema: pa.Schema) -> set[str]:
    """A metadata part's rows must say what its label says about where the data came from."""
    part_label = json.loads((schema.metadata or {}).get(SCHEMA_KEY, b"{}"))
    found = {}
    for key in ("backend", "model_id"):
        if key in table.column_names:
            found[key] = {str(value) for value in table.column(key).to_pylist() if value is not None}
            if key in part_label and table.num_rows and found[key] != {str(part_label[key])}:
                raise MergeError(
                    f"{path}: its rows say {key} {', '.join(sorted(found[key]))} but its label says "
                    f"{part_label[key]!r}; provenance must agree"
                )
    return found.get("backend") or ({str(part_label["backend"])} if "backend" in part_label else set())


def _merged_pandas_metadata(schema: pa.Schema, parts: Sequence[pa.Schema]) -> bytes:
    """Each column as the first part that has it with values describes it (a metadata key only
    some parts have keeps its string dtype; a column all-null in one part takes another's)."""
    kinds: dict[str, tuple[str, str]] = {}
    for part in parts:
        described = {
            c["name"]: (c["pandas_type"], c["numpy_type"])
            for c in (part.pandas_metadata or {}).get("columns", [])
            if isinstance(c.get("name"), str)
        }
        for name, kind in described.items():
            if name in schema.names and (name not in kinds or kinds[name] == _EMPTY):
                kinds[name] = kind
    return _pandas_metadata({field.name: kinds.get(field.name) or _column_kind(field) for field in schema})


def _merge_expression(expression_parts, expression_out, schema: pa.Schema) -> None:
    """Write the parts side by side as one file with the parts' row groups.

    Parts written by :func:`write_part` share their gene blocks, so the merge copies each
    part's encoded column chunks byte for byte (``copy_file_range``) and writes the footer
    itself: nothing is decoded or re-encoded, memory does not grow with the number of samples
    (pyarrow's writer keeps every column chunk's metadata, ~1.8 KB each, until close: 400 MB
    at 10,000 samples), and time is the copy. Parts that do not line up are re-encoded.
    """
    layout = chunk_layout(expression_parts, schema)
    if layout is None:
        reencode_expression(expression_parts, expression_out, schema)
    else:
        groups = (
            [(path, part, g) for path, part in zip(expression_parts, layout)] for g in range(len(layout[0]["rows"]))
        )
        stitch_expression(expression_out, schema, groups, PARQUET_OPTIONS)


def reencode_expression(expression_parts, expression_out, schema: pa.Schema) -> None:
    """Fallback: decode and rewrite ``ROW_GROUP_GENES`` genes of every part at a time."""
    files = [pq.ParquetFile(path) for path in expression_parts]  # footers parsed once, not once per block
    ends = [np.cumsum([f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)]) for f in files]
    n_genes = int(ends[0][-1]) if len(ends[0]) else 0
    if any((int(e[-1]) if len(e) else 0) != n_genes for e in ends):
        raise MergeError(f"the parts do not hold the same number of genes as {expression_parts[0]}")
    with atomic_path(expression_out) as temporary, pq.ParquetWriter(temporary, schema, **PARQUET_OPTIONS) as out:
        for start in range(0, n_genes, ROW_GROUP_GENES):
            stop = min(start + ROW_GROUP_GENES, n_genes)
            gene_ids, columns = None, []
            for path, source, end in zip(expression_parts, files, ends):
                # The part's row groups that overlap genes start..stop (parts may group genes otherwise).
                first, last = int(np.searchsorted(end, start, "right")), int(np.searchsorted(end, stop - 1, "right"))
                offset = start - (int(end[first - 1]) if first else 0)
                table = source.read_row_groups(list(range(first, last + 1))).slice(offset, stop - start)
                if gene_ids is None:
                    gene_ids = table.column(0)
                elif not table.column(0).equals(gene_ids):
                    raise MergeError(f"{path} has other genes (or another gene order) than {expression_parts[0]}")
                columns.extend(table.columns[1:])
            out.write_table(pa.Table.from_arrays([gene_ids, *columns], schema=schema))


# --- reading -----------------------------------------------------------------------------


def check_pair(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    expression_metadata: dict | None = None,
) -> None:
    """Refuse an expression file and a metadata file that were not written as one pair.

    Both carry the pair's ``run_id`` in their ``synthbio`` label; files of different runs (a
    merge killed between its two renames, or files copied from two runs) raise MergeError.
    A file without a run id (written by other code, or rewritten with pandas) cannot be told
    apart, and is left to the callers' sample checks. ``expression_metadata`` is the
    expression file's schema metadata, when already read.
    """
    if expression_metadata is None:
        expression_metadata = pq.read_schema(expression_path).metadata
    ids = []
    for metadata in (expression_metadata, pq.read_schema(metadata_path).metadata):
        try:
            ids.append(json.loads((metadata or {}).get(SCHEMA_KEY, b"{}")).get(RUN_ID))
        except (ValueError, AttributeError):
            ids.append(None)
    if None not in ids and ids[0] != ids[1]:
        raise MergeError(
            f"{expression_path} and {metadata_path} are not one pair: they come from different runs "
            f"(run ids {ids[0]} and {ids[1]}); a merge was interrupted between writing the two, or the "
            "files were copied from different runs. Run the merge again"
        )


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
    ``genes`` and ``samples`` select a subset without reading the rest of the file; a gene
    or sample the file does not have raises :class:`KeyError`. The metadata comes back
    indexed by ``sample_id`` in the expression's sample order.
    """
    import pandas as pd  # lazy, like pyarrow.compute: writing parts needs neither
    import pyarrow.compute as pc

    if orientation not in ("genes", "samples"):
        raise ValueError(f"orientation is 'genes' or 'samples', not {orientation!r}")
    columns = None if samples is None else [GENE_ID, *samples]
    # One ParquetFile: the footer (samples x row groups column chunks) is parsed once, not per step.
    source = pq.ParquetFile(expression_path)
    if columns is not None:
        known = set(source.schema_arrow.names)
        unknown = [name for name in columns if name not in known]
        if unknown:
            raise KeyError(f"{expression_path} has no samples {', '.join(unknown[:5])}")
    if genes is None:
        table = source.read(columns=columns)
    else:
        # Read only the row groups (gene blocks) that hold a wanted gene, then keep those rows.
        wanted = pa.array(list(genes), pa.string())
        present = source.read(columns=[GENE_ID]).column(0)
        hits = np.flatnonzero(pc.is_in(present, value_set=wanted).to_numpy(False))
        if len(hits) < len(pc.unique(wanted)):
            found = set(present.take(pa.array(hits)).to_pylist())
            unknown = [gene for gene in dict.fromkeys(wanted.to_pylist()) if gene not in found]
            raise KeyError(
                f"{expression_path} has no genes {', '.join(map(str, unknown[:5]))}"
                + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
                + (f"; its {len(present):,} gene ids are like {present[0]}" if len(present) else "; it has no genes")
            )
        ends = np.cumsum([source.metadata.row_group(g).num_rows for g in range(source.num_row_groups)])
        groups = sorted(set(np.searchsorted(ends, hits, side="right").tolist()))
        table = source.read_row_groups(groups, columns=columns)
        table = table.filter(pc.is_in(table.column(GENE_ID), value_set=wanted))
    expression = table.to_pandas().set_index(GENE_ID)
    expression.columns.name = SAMPLE_ID
    if orientation == "samples":
        expression = expression.T
    metadata = None
    if metadata_path is not None:
        check_pair(expression_path, metadata_path, source.schema_arrow.metadata)
        metadata = pd.read_parquet(metadata_path).set_index(SAMPLE_ID)
        order = expression.index if orientation == "samples" else expression.columns
        missing = order.difference(metadata.index)
        if len(missing):
            raise MergeError(f"{metadata_path} has no rows for samples {', '.join(missing[:5])}")
        metadata = metadata.loc[order]
    return expression, metadata
