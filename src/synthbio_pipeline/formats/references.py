"""Counts files a user brings: reference samples (reference conditioning) and data to annotate.

Three layouts are read, chosen by the file's name:

- ``.parquet``: genes as rows, a ``gene_id`` column (else the first text column) and one
  column per sample: the workflow's own merged ``expression.parquet`` is one. Its
  ``synthbio`` label says what the values are (counts or log1p-CPM) and which modality made them.
- ``.tsv``, ``.txt``, ``.csv`` (each also ``.gz``): genes as rows, tab- (comma- for ``.csv``)
  separated, a header line; the gene-id column is ``gene_id`` if there is one, else the first
  column; every other column is a sample. The workflow's ``counts.tsv.gz`` is one.
- ``.h5ad`` (AnnData): samples as rows (``obs_names``), genes as columns (``var_names``), X
  dense or sparse (CSR or CSC), read with h5py (anndata is not needed). The workflow's own
  h5ad carries its label in ``uns["synthbio"]``.

:func:`open_counts` reads a file's gene ids, sample names and label (cheap: no counts);
:meth:`CountsFile.values` then reads the counts of the samples asked for, as float64 (so that
a caller can tell fractional or missing values from counts). Nothing here judges the values:
:mod:`synthbio_pipeline.pipeline.references` does.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.errors import SynthbioError

GENE_ID = "gene_id"
SCHEMA_KEY = b"synthbio"
#: File names the readers take, and the layout each means.
SUFFIXES = {
    ".parquet": "parquet",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".csv": "csv",
    ".tsv.gz": "tsv",
    ".txt.gz": "tsv",
    ".csv.gz": "csv",
    ".h5ad": "h5ad",
}


class CountsFileError(SynthbioError, ValueError):
    """A counts file that cannot be read as one; the message names the file."""


def layout_of(path: str | os.PathLike) -> str | None:
    """``parquet``, ``tsv``, ``csv`` or ``h5ad`` by the file's name; None for any other name."""
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


@dataclass
class CountsFile:
    """An opened counts file: its gene ids and sample names as written, and its label."""

    path: Path
    layout: str
    genes: list[str]
    samples: list[str]
    #: The workflow's ``synthbio`` label (``values``, ``backend``, ``modality``...), or None.
    label: dict[str, Any] | None = None
    _reader: Any = field(default=None, repr=False)

    def values(self, samples: Sequence[str]) -> np.ndarray:
        """The counts of ``samples`` as a genes × samples float64 matrix, in ``genes`` order."""
        known = set(self.samples)
        unknown = [name for name in samples if name not in known]
        if unknown:
            raise KeyError(f"{self.path}: no sample {unknown[0]!r}")
        if not samples:
            return np.zeros((len(self.genes), 0))
        return self._reader(list(samples))


def open_counts(path: str | os.PathLike) -> CountsFile:
    """Open a counts file: gene ids, sample names and label; raise :class:`CountsFileError`."""
    path = Path(path)
    layout = layout_of(path)
    if layout is None:
        accepted = ", ".join(SUFFIXES)
        raise CountsFileError(f"{path}: not a counts file this workflow reads (its name should end in {accepted})")
    if not path.is_file():
        raise CountsFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        if layout == "parquet":
            return _open_parquet(path)
        if layout == "h5ad":
            return _open_h5ad(path)
        return _open_delimited(path, "," if layout == "csv" else "\t", layout)
    except CountsFileError:
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException, EOFError) as error:
        raise CountsFileError(f"{path}: cannot be read as a {layout} counts file ({error})") from error


def _check_names(path: Path, what: str, names: Sequence[str]) -> None:
    repeated = [name for name, times in Counter(names).items() if times > 1]
    if repeated:
        raise CountsFileError(f"{path}: {what} {', '.join(map(repr, repeated[:5]))} appear(s) more than once")


# --- Parquet ---------------------------------------------------------------------------------


def _open_parquet(path: Path) -> CountsFile:
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    label = None
    if schema.metadata and SCHEMA_KEY in schema.metadata:
        try:
            label = json.loads(schema.metadata[SCHEMA_KEY])
        except ValueError:
            label = None
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    if GENE_ID in schema.names:
        gene_column = GENE_ID
    elif text:
        gene_column = text[0]
    else:
        raise CountsFileError(f"{path}: no gene-id column (a '{GENE_ID}' column, or a column of text)")
    samples = [name for name in schema.names if name != gene_column]
    others = [f.name for f in schema if f.name != gene_column and not _numeric(f.type)]
    if others:
        raise CountsFileError(
            f"{path}: column(s) {', '.join(map(repr, others[:5]))} are not numbers; a counts file has a gene-id "
            "column and one column of counts per sample"
        )
    genes = [str(gene) for gene in source.read(columns=[gene_column]).column(0).to_pylist()]
    _check_names(path, "sample", samples)

    def read(names: list[str]) -> np.ndarray:
        table = source.read(columns=names)
        return np.column_stack([_as_float(table.column(name)) for name in names])

    return CountsFile(path, "parquet", genes, samples, label, read)


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _as_float(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.float64()).fill_null(np.nan).to_numpy()


# --- TSV / CSV -------------------------------------------------------------------------------


def _text_stream(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _open_delimited(path: Path, delimiter: str, layout: str) -> CountsFile:
    import pandas as pd

    with _text_stream(path) as stream:
        try:
            header = next(csv.reader(stream, delimiter=delimiter))
        except StopIteration:
            raise CountsFileError(f"{path}: the file is empty") from None
        except UnicodeDecodeError:
            raise CountsFileError(f"{path}: not UTF-8 text") from None
    header = [name.strip() for name in header]
    if len(header) < 2:
        other = "comma" if delimiter == "\t" else "tab"
        raise CountsFileError(
            f"{path}: the header has {len(header)} column(s); a {layout.upper()} counts file has a gene-id column "
            f"and one column per sample ({other}-separated? name it {'.csv' if other == 'comma' else '.tsv'})"
        )
    _check_names(path, "column", header)
    gene_column = GENE_ID if GENE_ID in header else header[0]
    samples = [name for name in header if name != gene_column]

    def frame(columns: list[str], text: bool) -> pd.DataFrame:
        # Gene ids are text as written ("NA" is a name there); counts are numbers, a gap is NaN.
        options = {"dtype": str, "keep_default_na": False} if text else {"dtype": np.float64}
        try:
            return pd.read_csv(
                path, sep=delimiter, usecols=columns, encoding="utf-8-sig", compression="infer", **options
            )
        except ValueError as error:
            raise CountsFileError(f"{path}: {_pandas_problem(error, columns)}") from None

    genes = frame([gene_column], text=True)[gene_column].tolist()

    def read(names: list[str]) -> np.ndarray:
        return frame(names, text=False)[names].to_numpy(np.float64)

    return CountsFile(path, layout, [str(gene).strip() for gene in genes], samples, None, read)


def _pandas_problem(error: ValueError, columns: list[str]) -> str:
    text = str(error)
    if "could not convert" in text or "Unable to parse" in text or "invalid literal" in text:
        return f"sample column(s) {', '.join(map(repr, columns[:5]))} hold something other than numbers ({text})"
    return text


# --- h5ad ------------------------------------------------------------------------------------


def _strings(values: Any) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def _index_of(group: Any, path: Path, what: str) -> list[str]:
    import h5py

    if isinstance(group, h5py.Dataset):
        raise CountsFileError(
            f"{path}: {what} is stored the way anndata before 0.7 did; re-save the file with a current anndata"
        )
    name = group.attrs.get("_index", "_index")
    name = name.decode() if isinstance(name, bytes) else str(name)
    if name not in group:
        raise CountsFileError(f"{path}: {what} has no index ({name!r})")
    return _strings(group[name][()])


def _read_uns_label(f: Any) -> dict[str, Any] | None:
    import h5py

    node = f.get("uns/synthbio")
    if node is None:
        return None
    if isinstance(node, h5py.Dataset):  # a label written as one JSON string
        try:
            value = json.loads(_strings([node[()]])[0])
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    label: dict[str, Any] = {}
    for key, item in node.items():
        if isinstance(item, h5py.Dataset):
            value = item[()]
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, np.ndarray):
                value = _strings(value)
            elif isinstance(value, np.generic):
                value = value.item()
            label[key] = value
    return label


def _open_h5ad(path: Path) -> CountsFile:
    import h5py

    with h5py.File(path, "r") as f:
        if "X" not in f or "obs" not in f or "var" not in f:
            missing = [name for name in ("X", "obs", "var") if name not in f]
            raise CountsFileError(f"{path}: not an AnnData file (no {', '.join(missing)})")
        samples = _index_of(f["obs"], path, "obs")
        genes = _index_of(f["var"], path, "var")
        label = _read_uns_label(f)
        x = f["X"]
        if isinstance(x, h5py.Dataset):
            encoding, shape = "dense", x.shape
        else:
            encoding = x.attrs.get("encoding-type", b"")
            encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
            shape = tuple(int(n) for n in x.attrs.get("shape", (0, 0)))
            if encoding not in ("csr_matrix", "csc_matrix"):
                raise CountsFileError(
                    f"{path}: X is stored as {encoding or 'an unknown encoding'}; expected dense, CSR or CSC"
                )
    if tuple(shape) != (len(samples), len(genes)):
        raise CountsFileError(f"{path}: X is {shape[0]} x {shape[1]}, but obs has {len(samples)} and var {len(genes)}")
    _check_names(path, "sample (obs name)", samples)
    positions = {name: i for i, name in enumerate(samples)}

    def read(names: list[str]) -> np.ndarray:
        rows = [positions[name] for name in names]
        out = np.zeros((len(genes), len(rows)))
        with h5py.File(path, "r") as f:
            x = f["X"]
            if encoding == "dense":
                for j, row in enumerate(rows):
                    out[:, j] = x[row, :]
            elif encoding == "csr_matrix":
                indptr = x["indptr"]
                for j, row in enumerate(rows):
                    start, stop = int(indptr[row]), int(indptr[row + 1])
                    out[x["indices"][start:stop], j] = x["data"][start:stop]
            else:  # CSC: each gene's column lists the samples that have it
                indices, data, indptr = x["indices"][()], x["data"][()], x["indptr"][()]
                gene_of = np.repeat(np.arange(len(genes)), np.diff(indptr))
                for j, row in enumerate(rows):
                    hit = indices == row
                    out[gene_of[hit], j] = data[hit]
        return out

    return CountsFile(path, "h5ad", genes, samples, label, read)


__all__ = ["GENE_ID", "SUFFIXES", "CountsFile", "CountsFileError", "layout_of", "open_counts"]
