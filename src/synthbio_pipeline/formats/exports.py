"""Convert a merged expression + metadata Parquet pair into the files other tools expect.

- :func:`to_h5ad`: AnnData ``.h5ad`` (samples × genes) for scanpy and friends;
- :func:`to_delimited`: a TSV/CSV count matrix (genes × samples) for R's ``read.delim``
  (text cells that a spreadsheet would run as a formula are escaped: :func:`escape_formula`);
- :func:`to_log_cpm`: a log1p-CPM Parquet file in the merged file's own layout.

Each reads the expression file one row group (gene block) at a time and writes its output
atomically. The ``synthbio`` label (``backend: emulator`` for emulated data) travels in
``uns["synthbio"]`` of the h5ad and in the schema metadata of the Parquet output; a TSV/CSV
has no place for it (a comment line would break R's and pandas' default readers), so keep
the Parquet or h5ad next to it when the data are emulated.

The h5ad is written with h5py following the AnnData on-disk format (encoding-type
``anndata`` 0.1.0), not through the ``anndata`` package: that lets X be written block by
block, and anndata releases for Python 3.11 require pandas < 3, which this project pins.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.parquet import (
    COUNTS,
    GENE_ID,
    LOG_CPM,
    PARQUET_OPTIONS,
    SAMPLE_ID,
    SCHEMA_KEY,
    check_pair,
    expression_schema,
)
from synthbio_pipeline.formats.result_json import log_cpm
from synthbio_pipeline.vocabulary.models import SINGLE_CELL, get_model, is_known_model

__all__ = ["ExportError", "escape_formula", "read_label", "to_delimited", "to_h5ad", "to_log_cpm"]

#: A cell starting with one of these is run as a formula by Excel, LibreOffice and Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``+cmd|...``), made inert.

    A leading ``'`` (OWASP's advice) makes the cell text in every spreadsheet; R's and
    pandas' readers keep it as part of the value. Numbers and other text pass unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class ExportError(SynthbioError, ValueError):
    """An input pair that cannot be exported (its message names the file)."""


def read_label(expression_path: str | os.PathLike) -> dict[str, Any]:
    """The ``synthbio`` label of a merged expression file (``values``, ``backend``, ...)."""
    metadata = pq.read_schema(expression_path).metadata or {}
    if SCHEMA_KEY not in metadata:
        raise ExportError(f"{expression_path}: no synthbio label in the schema metadata; not a merged expression file")
    return json.loads(metadata[SCHEMA_KEY])


def _open_expression(expression_path) -> tuple[pq.ParquetFile, list[str], dict]:
    label = read_label(expression_path)
    parquet = pq.ParquetFile(expression_path)
    names = parquet.schema_arrow.names
    if not names or names[0] != GENE_ID:
        raise ExportError(f"{expression_path}: the first column is {names[0] if names else None!r}, not {GENE_ID!r}")
    return parquet, names[1:], label


def _block(parquet: pq.ParquetFile, group: int) -> tuple[pa.Array, np.ndarray]:
    """One row group as (gene ids, genes × samples array)."""
    table = parquet.read_row_group(group)
    values = np.empty((table.num_rows, table.num_columns - 1), table.schema.field(1).type.to_pandas_dtype())
    for j, column in enumerate(table.columns[1:]):
        values[:, j] = column.to_numpy()
    return table.column(0), values


def _library_sizes(parquet: pq.ParquetFile, n_samples: int) -> np.ndarray:
    """Per-sample column sums, one row group at a time (first pass of the CPM)."""
    totals = np.zeros(n_samples, np.int64)
    for group in range(parquet.num_row_groups):
        totals += _block(parquet, group)[1].sum(axis=0, dtype=np.int64)
    return totals


# --- log1p-CPM ---------------------------------------------------------------------------


def to_log_cpm(expression_path: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write log1p(CPM) of a counts file as Parquet: same layout and row groups, float32 values.

    Two streaming passes: library sizes first, then each gene block normalised by them.
    The values equal :func:`synthbio_pipeline.formats.result_json.log_cpm` on the whole matrix.
    """
    parquet, samples, label = _open_expression(expression_path)
    if label.get("values") != COUNTS:
        raise ExportError(f"{expression_path}: holds {label.get('values')!r} values; log1p-CPM needs counts")
    libraries = _library_sizes(parquet, len(samples))
    out_label = {**label, "values": LOG_CPM}
    schema = expression_schema(samples, pa.float32(), out_label)
    with atomic_path(out) as temporary, pq.ParquetWriter(temporary, schema, **PARQUET_OPTIONS) as writer:
        for group in range(parquet.num_row_groups):
            genes, block = _block(parquet, group)
            # log_cpm divides by each row's sum: one extra column holding the counts outside this
            # block makes that sum the whole library, so the block gets log_cpm's exact numbers.
            rows = np.empty((len(samples), block.shape[0] + 1), np.int64)
            rows[:, :-1] = block.T
            rows[:, -1] = libraries - rows[:, :-1].sum(axis=1)
            values = log_cpm(rows)[:, :-1].astype(np.float32)
            writer.write_table(pa.Table.from_arrays([genes, *(pa.array(row) for row in values)], schema=schema))
    return {"samples": len(samples), "genes": parquet.metadata.num_rows, "backend": label.get("backend")}


# --- TSV / CSV ---------------------------------------------------------------------------


def to_delimited(
    expression_path: str | os.PathLike, out: str | os.PathLike, *, sep: str | None = None
) -> dict[str, Any]:
    """Write the matrix as delimited text: genes as rows, ``gene_id`` then one column per sample.

    ``sep`` defaults to a comma for ``.csv`` (or ``.csv.gz``) and a tab otherwise; a ``.gz``
    name is gzip-compressed. R: ``read.delim(path, row.names = 1, check.names = FALSE)``.
    The text carries no synthbio label (see the module docstring).
    """
    out = Path(out)
    suffixes = [suffix.lower() for suffix in out.suffixes]
    if sep is None:
        sep = "," if ".csv" in suffixes else "\t"
    parquet, samples, label = _open_expression(expression_path)
    header = [GENE_ID, *(escape_formula(sample) for sample in samples)]
    with atomic_path(out) as temporary:
        opener = gzip.open if suffixes and suffixes[-1] == ".gz" else open
        with opener(temporary, "wt", newline="", encoding="utf-8") as handle:
            for group in range(parquet.num_row_groups):
                chunk = parquet.read_row_group(group).to_pandas()
                # Gene ids come from the server's result: never let one be a spreadsheet formula, nor
                # break a row with a carriage return (the csv writer quotes only "\n" here).
                chunk[GENE_ID] = chunk[GENE_ID].map(lambda gene: escape_formula(gene).replace("\r", "\\r"))
                chunk.columns = header
                chunk.to_csv(handle, sep=sep, index=False, header=group == 0, lineterminator="\n")
            if parquet.num_row_groups == 0:
                handle.write(sep.join(header) + "\n")
    return {"samples": len(samples), "genes": parquet.metadata.num_rows, "backend": label.get("backend")}


# --- h5ad --------------------------------------------------------------------------------


def to_h5ad(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sparse: bool | None = None,
) -> dict[str, Any]:
    """Write an AnnData ``.h5ad``: obs = samples (every metadata column, index ``sample_id``),
    var = genes (index ``gene_id``), X = the values, ``uns["synthbio"]`` = the label.

    ``sparse=None`` picks CSR when every sample comes from a single-cell model (counts there
    are mostly zero) and a dense array otherwise: bulk counts are mostly non-zero, so CSR
    would take about twice the space (a value and an index per entry). Dense X is written
    one gene block at a time; CSR X is counted in a first pass, then filled into arrays of
    exactly its size, so memory holds the sparse matrix and one block.
    """
    import h5py  # in the workflow extra: only exports need it

    parquet, samples, label = _open_expression(expression_path)
    check_pair(expression_path, metadata_path, parquet.schema_arrow.metadata)
    metadata = pq.read_table(metadata_path)
    if metadata.num_columns == 0 or metadata.column_names[0] != SAMPLE_ID:
        raise ExportError(f"{metadata_path}: the first column is not {SAMPLE_ID!r}")
    if metadata.column(SAMPLE_ID).to_pylist() != samples:
        raise ExportError(f"{metadata_path} does not list the samples of {expression_path} in the same order")
    if sparse is None:
        models = set(metadata.column("model_id").to_pylist()) if "model_id" in metadata.column_names else set()
        sparse = bool(models) and all(
            is_known_model(str(m)) and get_model(str(m)).modality == SINGLE_CELL for m in models
        )
    genes = pq.read_table(expression_path, columns=[GENE_ID]).column(0).to_pylist()
    dtype = np.dtype(parquet.schema_arrow.field(1).type.to_pandas_dtype()) if samples else np.dtype(np.int32)
    shape = (len(samples), len(genes))

    with atomic_path(out) as temporary, h5py.File(temporary, "w") as f:
        _attrs(f, "anndata", "0.1.0")
        if sparse:
            _write_csr(f, parquet, shape, dtype)
        else:
            x = f.create_dataset("X", shape=shape, dtype=dtype)
            _attrs(x, "array", "0.2.0")
            start = 0
            for group in range(parquet.num_row_groups):
                block = _block(parquet, group)[1]
                x[:, start : start + block.shape[0]] = block.T
                start += block.shape[0]
        _write_dataframe(
            f, "obs", SAMPLE_ID, samples, {name: metadata.column(name) for name in metadata.column_names[1:]}
        )
        _write_dataframe(f, "var", GENE_ID, genes, {})
        uns = f.create_group("uns")
        _attrs(uns, "dict", "0.1.0")
        # The Parquet label says "genes x samples"; AnnData's X is samples x genes.
        _write_uns(uns, "synthbio", {**label, "orientation": "samples x genes"})
        for name in ("layers", "obsm", "obsp", "varm", "varp"):
            _attrs(f.create_group(name), "dict", "0.1.0")
    return {"samples": shape[0], "genes": shape[1], "sparse": sparse, "backend": label.get("backend")}


def _attrs(node, encoding_type: str, encoding_version: str) -> None:
    node.attrs["encoding-type"] = encoding_type
    node.attrs["encoding-version"] = encoding_version


def _write_csr(f, parquet: pq.ParquetFile, shape: tuple[int, int], dtype: np.dtype) -> None:
    n_samples, n_genes = shape
    per_sample = np.zeros(n_samples, np.int64)
    for group in range(parquet.num_row_groups):
        per_sample += np.count_nonzero(_block(parquet, group)[1], axis=0)
    indptr = np.zeros(n_samples + 1, np.int64)
    np.cumsum(per_sample, out=indptr[1:])
    data = np.empty(indptr[-1], dtype)
    indices = np.empty(indptr[-1], np.int32 if n_genes <= np.iinfo(np.int32).max else np.int64)
    cursor = indptr[:-1].copy()
    start = 0
    for group in range(parquet.num_row_groups):
        by_sample = np.ascontiguousarray(_block(parquet, group)[1].T)
        rows, cols = np.nonzero(by_sample)  # row-major: grouped by sample, genes ascending
        counts = np.bincount(rows, minlength=n_samples)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        positions = cursor[rows] + (np.arange(rows.size) - first[rows])
        data[positions] = by_sample[rows, cols]
        indices[positions] = cols + start
        cursor += counts
        start += by_sample.shape[1]
    group = f.create_group("X")
    _attrs(group, "csr_matrix", "0.1.0")
    group.attrs["shape"] = np.array(shape, np.int64)
    for name, values in (("data", data), ("indices", indices), ("indptr", indptr)):
        _write_array(group, name, values)


def _write_array(parent, name: str, values: np.ndarray) -> None:
    _attrs(parent.create_dataset(name, data=values), "array", "0.2.0")


def _write_strings(parent, name: str, values) -> None:
    import h5py

    dataset = parent.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"))
    _attrs(dataset, "string-array", "0.2.0")


def _write_dataframe(f, name: str, index_name: str, index: list[str], columns: dict[str, pa.ChunkedArray]) -> None:
    import h5py

    group = f.create_group(name)
    _attrs(group, "dataframe", "0.2.0")
    group.attrs["_index"] = index_name
    group.attrs["column-order"] = np.array(list(columns), dtype=h5py.string_dtype("utf-8"))
    _write_strings(group, index_name, index)
    for column, values in columns.items():
        _write_column(group, column, values)


def _write_column(group, name: str, values: pa.ChunkedArray) -> None:
    """One metadata column in the AnnData element type that keeps its values and its gaps."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values, kind = values.cast(kind.value_type), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        # Text as categorical: repeated values (condition, tissue, backend) and missing ones (code -1).
        encoded = pd.Categorical(values.to_pylist())
        node = group.create_group(name)
        _attrs(node, "categorical", "0.2.0")
        node.attrs["ordered"] = False
        _write_strings(node, "categories", [str(c) for c in encoded.categories])
        _write_array(node, "codes", encoded.codes)
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        numpy_type = np.bool_ if pa.types.is_boolean(kind) else kind.to_pandas_dtype()
        mask = values.is_null().to_numpy(zero_copy_only=False)
        filled = values.fill_null(False if pa.types.is_boolean(kind) else 0).to_numpy(zero_copy_only=False)
        node = group.create_group(name)
        _attrs(node, "nullable-boolean" if numpy_type is np.bool_ else "nullable-integer", "0.1.0")
        _write_array(node, "values", filled.astype(numpy_type))
        _write_array(node, "mask", mask)
    elif pa.types.is_floating(kind):
        _write_array(group, name, values.to_numpy(zero_copy_only=False))
    else:
        # Anything else (dates, lists) as text, so no column is dropped.
        text = [None if value is None else str(value) for value in values.to_pylist()]
        _write_column(group, name, pa.chunked_array([pa.array(text, pa.string())]))


def _write_uns(parent, name: str, value: Any) -> None:
    import h5py

    if isinstance(value, dict):
        group = parent.create_group(name)
        _attrs(group, "dict", "0.1.0")
        for key, item in value.items():
            if item is not None:  # HDF5 has no null; an absent key reads back the same way
                _write_uns(group, str(key), item)
    elif isinstance(value, str):
        dataset = parent.create_dataset(name, data=value, dtype=h5py.string_dtype("utf-8"))
        _attrs(dataset, "string", "0.2.0")
    elif isinstance(value, (bool, int, float)):
        dataset = parent.create_dataset(name, data=value)
        _attrs(dataset, "numeric-scalar", "0.2.0")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        _write_strings(parent, name, value)
    else:
        _write_uns(parent, name, json.dumps(value))
