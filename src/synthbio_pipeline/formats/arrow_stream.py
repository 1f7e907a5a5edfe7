"""Reader of a self-hosted container's answer: an Apache Arrow IPC stream.

The stream's schema metadata carries ``gene_order`` (a JSON list), ``request_type`` and
``model_version``; each record batch holds some samples. Two layouts, as the vendor's client
(pysynthbio 4.2.4, ``arrow_transformers``) reads them:

- expression (``request_type`` anything but ``predict_metadata``, or none): ``counts``
  (a list of integers per sample), ``metadata`` (a struct), optional latent columns
  ``<name>_latent`` (lists of floats: GEM-1's ``biological_latent``, ``technical_latent``,
  ``perturbation_latent``; GEM-2's ``generated_latent``, or ``z_ref_latent``,
  ``z_target_latent``, ``z_displacement_latent``, named as the JSON result's latents), and for
  GEM-2 autoencode ``model_release_id`` and ``vae_run_id`` (text per sample: the provenance
  the JSON path writes into each sample's metadata row, and so does the part from a stream);
- ``predict_metadata``: ``metadata``, ``latents`` (a struct), ``classifier_probs`` (a struct
  of structs) and ``decoder_sample`` (a struct whose ``counts`` is the list of integers).

::

    with open_arrow_result(stream) as result:     # bytes, a binary file, or a socket's body
        result.gene_order, result.request_type, result.model_version
        for batch in result.batches(): ...        # pyarrow RecordBatches, one at a time
        for sample in result.samples(): ...       # or Sample objects, as the JSON reader yields

:func:`arrow_to_frames` builds the vendor client's DataFrames; :func:`write_arrow_part` writes
the same Parquet part pair as :func:`~synthbio_pipeline.formats.parquet.write_part` does
from a JSON result. Both read the stream one record batch at a time: memory holds one batch
(its size is the server's choice) plus what is being built (the expression matrix for the
frames; one gene block tile for the part).

Counts come out as int64 (the vendor's client casts them so): integer lists of any width
are widened, float lists are truncated toward zero as the JSON path does (non-finite values
are errors); a null list, a null count, or lists of different lengths are errors. A stream
that stops without Arrow's end-of-stream marker (a connection that ended early) is an error.
Every problem raises :class:`~synthbio_pipeline.errors.ResultError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.formats.parquet import PartTarget, write_part
from synthbio_pipeline.formats.result_json import PROVENANCE_KEYS, Sample, log_cpm

if TYPE_CHECKING:  # imported where frames are built: writing parts never needs pandas
    import pandas as pd

#: The ``request_type`` whose batches hold metadata predictions (the only one read differently).
PREDICT_METADATA = "predict_metadata"
#: Latent columns of the expression layout, and the names the frames give them.
LATENT_COLUMNS = {
    "biological_latent": "biological",
    "technical_latent": "technical",
    "perturbation_latent": "perturbation",
}
#: Any ``<name>_latent`` list column of the expression layout is the latent ``<name>`` for the
#: parts (:func:`latent_name`); :func:`arrow_to_frames` reads only :data:`LATENT_COLUMNS`, as the
#: vendor's client does.
LATENT_SUFFIX = "_latent"
#: Arrow IPC's end-of-stream marker: continuation token, then a zero length.
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"

_INT64_MAX = np.iinfo(np.int64).max


class _TailReader:
    """A binary file that reads in full and remembers the last bytes read.

    pyarrow takes a short read for the end of the file, while a socket may return fewer
    bytes than asked: each read is repeated until it has them all or the body ends. The
    last 8 bytes tell whether the stream ended with its end-of-stream marker.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.tail = b""
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._raw.read()
        else:
            data = self._raw.read(size)
            if data and len(data) < size:
                parts = [data]
                got = len(data)
                while got < size:
                    more = self._raw.read(size - got)
                    if not more:
                        break
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
        if data:
            self.tail = (self.tail + bytes(data[-8:]))[-8:]
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class ArrowResult:
    """An open Arrow IPC stream: the schema metadata is read on opening; batches stream.

    ``source`` is the stream's bytes, a binary file object (a socket's body), or a path.
    ``top_level`` holds the schema metadata other than ``gene_order`` and ``model_version``
    (as the JSON reader's ``top_level`` does; ``backend_of`` reads it).
    """

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike):
        self._owned: BinaryIO | None = None
        if isinstance(source, (str, os.PathLike)):
            source = self._owned = open(source, "rb")
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            self._tail: _TailReader | None = None
            self._whole = data
            stream: Any = pa.BufferReader(pa.py_buffer(data))
        else:
            self._whole = None
            stream = self._tail = _TailReader(source)
        try:
            self._reader = ipc.open_stream(stream)
        except (pa.ArrowInvalid, OSError) as error:
            self.close()
            raise ResultError(f"the answer is not an Arrow IPC stream: {error}") from None
        except BaseException:
            self.close()
            raise
        raw = self._reader.schema.metadata or {}
        try:
            self.schema_metadata = {key.decode(): value.decode() for key, value in raw.items()}
        except UnicodeDecodeError:
            self.close()
            raise ResultError("the Arrow stream's schema metadata is not UTF-8 text") from None
        self.gene_order: list[str] = []
        self.has_gene_order = "gene_order" in self.schema_metadata
        if self.has_gene_order:
            try:
                genes = json.loads(self.schema_metadata["gene_order"])
            except ValueError:
                genes = None
            if not isinstance(genes, list) or not all(type(gene) is str for gene in genes):
                self.close()
                raise ResultError("the Arrow stream's gene_order is not a JSON list of gene ids")
            self.gene_order = genes
        self.request_type = self.schema_metadata.get("request_type", "baseline")
        self.model_version: str | None = self.schema_metadata.get("model_version")
        self.top_level = {k: v for k, v in self.schema_metadata.items() if k not in ("gene_order", "model_version")}
        self.schema: pa.Schema = self._reader.schema
        self.rows_read = 0
        self._started = False

    # --- context manager -------------------------------------------------------------------

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> ArrowResult:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def predicts_metadata(self) -> bool:
        """Whether the batches hold metadata predictions (``request_type`` ``predict_metadata``)."""
        return self.request_type == PREDICT_METADATA

    @property
    def n_genes(self) -> int:
        return len(self.gene_order)

    # --- batches -----------------------------------------------------------------------------

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every record batch, once, in order; raises when the stream is cut short."""
        if self._started:
            raise ResultError("the Arrow stream was already read (it is read once, off the wire)")
        self._started = True
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as error:
                raise ResultError(
                    f"the Arrow stream is malformed or cut short after {self.rows_read} samples: {error}"
                ) from None
            self.rows_read += batch.num_rows
            yield batch
        tail = self._whole[-8:] if self._whole is not None else self._tail.tail
        if tail != END_OF_STREAM:
            raise ResultError(
                f"the Arrow stream ended after {self.rows_read} samples without its end-of-stream marker "
                "(the connection ended early?)"
            )

    def counts(self, batch: pa.RecordBatch, width: int | None = None) -> np.ndarray:
        """The batch's counts as an int64 (samples × genes) array (``width``: the expected genes;
        default: gene_order's length, or without one the lists' own length)."""
        if width is None and self.has_gene_order:
            width = self.n_genes
        if self.predicts_metadata:
            column = _column(batch, "decoder_sample")
            if not pa.types.is_struct(column.type) or column.type.get_field_index("counts") < 0:
                raise ResultError("the Arrow stream's decoder_sample is not a struct with counts")
            if column.null_count:
                raise ResultError(
                    f"sample {self.rows_read - batch.num_rows + _first_null(column)} has no decoder_sample"
                )
            column = column.field("counts")
        else:
            column = _column(batch, "counts")
        return counts_matrix(column, width, first=self.rows_read - batch.num_rows)

    def samples(self, expected_samples: int | None = None) -> Iterator[Sample]:
        """Every sample as a :class:`~synthbio_pipeline.formats.result_json.Sample` (counts an
        int64 row, metadata a dict without null values), for :func:`write_part`.

        With ``expected_samples``, another number of samples raises :class:`ResultError`.
        """
        width = self.n_genes if self.has_gene_order else None
        n = 0
        for batch in self.batches():
            if expected_samples is not None and n + batch.num_rows > expected_samples:
                raise ResultError(f"the Arrow stream has more samples than the {expected_samples} expected")
            # A metadata prediction's decoded sample is optional: the predictions are what is read.
            if self.predicts_metadata and "decoder_sample" not in batch.schema.names:
                block = np.zeros((batch.num_rows, 0), dtype=np.int64)
            else:
                block = self.counts(batch, width)
                if width is None:
                    width = block.shape[1]
            metadata = _rows(batch, "metadata")
            latents = self._latents(batch)
            extra = {key: _strings(batch, key) for key in PROVENANCE_KEYS if key in batch.schema.names}
            if self.predicts_metadata and "classifier_probs" in batch.schema.names:
                extra["classifier_probs"] = [_probabilities(row) for row in _rows(batch, "classifier_probs")]
            for i in range(batch.num_rows):
                row = metadata[i] or {}
                yield Sample(
                    block[i].copy(),  # a sample waiting in a queue must not keep its whole batch alive
                    {key: value for key, value in row.items() if value is not None},
                    latents[i] if latents is not None else None,
                    {key: values[i] for key, values in extra.items() if values[i] is not None},
                )
            n += batch.num_rows
            del block, metadata, latents, extra, batch
        if expected_samples is not None and n != expected_samples:
            raise ResultError(f"the Arrow stream has {n} samples, {expected_samples} expected (incomplete answer?)")

    def _latents(self, batch: pa.RecordBatch) -> list[dict | None] | None:
        if self.predicts_metadata:
            return _rows(batch, "latents") if "latents" in batch.schema.names else None
        present = {name: latent_name(name) for name in batch.schema.names if latent_name(name)}
        if not present:
            return None
        columns = {out: batch.column(name).to_pylist() for name, out in present.items()}
        return [{out: values[i] for out, values in columns.items()} for i in range(batch.num_rows)]


def latent_name(column: str) -> str | None:
    """The latent a column of the expression layout holds: ``<name>_latent`` -> ``<name>``
    (GEM-1's ``biological``, ``technical``, ``perturbation``; GEM-2's ``generated``, or
    ``z_ref``, ``z_target``, ``z_displacement``: the names of the JSON result's latents)."""
    if column.endswith(LATENT_SUFFIX) and len(column) > len(LATENT_SUFFIX):
        return column[: -len(LATENT_SUFFIX)]
    return None


def open_arrow_result(source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike) -> ArrowResult:
    """Open an Arrow IPC stream (bytes, a binary file object, or a path) for reading batch by batch."""
    return ArrowResult(source)


# --- columns -------------------------------------------------------------------------------


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    if name not in batch.schema.names:
        raise ResultError(f"the Arrow stream has no {name!r} column (columns: {', '.join(batch.schema.names)})")
    return batch.column(name)


def _rows(batch: pa.RecordBatch, name: str) -> list[Any]:
    """A struct column as Python dicts (``None`` for a null row); all ``None`` when it is absent."""
    if name not in batch.schema.names:
        return [None] * batch.num_rows
    return batch.column(name).to_pylist()


def _probabilities(row: dict | None) -> dict | None:
    """A sample's ``classifier_probs`` (a struct of structs holds every field's every value,
    null where the sample has none) as field -> value -> probability, without the nulls."""
    if row is None:
        return None
    return {
        field: {value: p for value, p in values.items() if p is not None}
        for field, values in row.items()
        if values is not None
    }


def _strings(batch: pa.RecordBatch, name: str) -> list[str | None]:
    """A column of text per sample (GEM-2 autoencode's ``model_release_id``, ``vae_run_id``)."""
    column = batch.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_null(column.type)):
        raise ResultError(f"the Arrow stream's {name} column is {column.type}, not text")
    return column.to_pylist()


def _first_null(array: pa.Array) -> int:
    return int(np.flatnonzero(~np.asarray(array.is_valid().to_numpy(zero_copy_only=False)))[0])


def counts_matrix(column: pa.Array | pa.ChunkedArray, width: int | None, *, first: int = 0) -> np.ndarray:
    """A list column of counts (one list per sample) as an int64 (samples × width) array.

    ``width`` is the number of genes each list must have (``None``: the first list's). The
    values are read without going through Python objects; int64 lists are not copied.
    ``first`` is the index of the column's first sample, for error messages.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise ResultError(f"the Arrow counts column is {kind}, not a list of counts per sample")
    rows = len(column)
    if column.null_count:
        raise ResultError(f"sample {first + _first_null(column)} has null counts in the Arrow stream")
    if pa.types.is_fixed_size_list(kind):
        lengths = np.full(rows, kind.list_size, dtype=np.int64)
        start = column.offset * kind.list_size
    else:
        offsets = _numbers(column.offsets)
        lengths = np.diff(offsets)
        start = int(offsets[0]) if rows else 0
    if width is None:
        width = int(lengths[0]) if rows else 0
    wrong = np.flatnonzero(lengths != width)
    if len(wrong):
        k = int(wrong[0])
        raise ResultError(
            f"sample {first + k} has {int(lengths[k])} counts in the Arrow stream, {width} expected "
            "(every sample carries a full gene vector)"
        )
    # The values of these rows (flatten() would do it too, but it loads pyarrow.compute, ~10 MB).
    flat = column.values.slice(start, rows * width)
    if flat.null_count:
        raise ResultError(f"the Arrow counts of samples {first}..{first + rows - 1} hold null values")
    value_type = flat.type
    if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        raise ResultError(f"the Arrow counts are {value_type}, not numbers")
    values = _numbers(flat)
    if pa.types.is_integer(value_type):
        if pa.types.is_uint64(value_type) and len(values) and values.max() > _INT64_MAX:
            raise ResultError("the Arrow counts hold a value outside the int64 range")
        values = values.astype(np.int64, copy=False)
    elif pa.types.is_floating(value_type):
        values = values.astype(np.float64, copy=False)
        if not np.isfinite(values).all():
            raise ResultError("the Arrow counts hold a value that is not a finite number")
        if len(values) and not (np.abs(values) < 2.0**63).all():
            raise ResultError("the Arrow counts hold a value outside the int64 range")
        values = values.astype(np.int64)  # truncation toward zero, like the JSON path and pandas' astype(int)
    return values.reshape(rows, width)


def _numbers(array: pa.Array) -> np.ndarray:
    """A numeric array without nulls as a numpy view of its buffer (``to_numpy`` imports pandas)."""
    kind = array.type
    letter = "f" if pa.types.is_floating(kind) else "i" if pa.types.is_signed_integer(kind) else "u"
    dtype = np.dtype(f"{letter}{kind.bit_width // 8}")
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


# --- whole-stream conveniences -----------------------------------------------------------


def arrow_to_frames(
    source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike | ArrowResult,
    *,
    as_counts: bool = True,
) -> dict[str, pd.DataFrame]:
    """The DataFrames the vendor's client (pysynthbio 4.2.4) builds from a self-hosted stream.

    Expression layout: ``metadata``, ``expression`` (samples × genes, columns = gene_order or
    integer labels without one, int64; log1p-CPM floats when ``as_counts`` is false),
    ``latents`` (``biological``, ``technical``, ``perturbation`` list cells, from whichever
    latent columns the stream has; an empty DataFrame when it has none). ``predict_metadata``
    layout: ``metadata``, ``latents``, ``classifier_probs`` and ``expression`` (the decoder
    sample's counts). A null metadata row counts as empty (one row per sample, always).
    """
    import pandas as pd

    result = source if isinstance(source, ArrowResult) else ArrowResult(source)
    with result:
        width = result.n_genes if result.has_gene_order else None
        blocks: list[np.ndarray] = []
        metadata: list[dict] = []
        struct_rows: dict[str, list] = {"latents": [], "classifier_probs": []}
        # One list per latent column the stream has (empty lists when it has no batch, as pysynthbio).
        latents: dict[str, list] = {out: [] for name, out in LATENT_COLUMNS.items() if name in result.schema.names}
        for batch in result.batches():
            block = result.counts(batch, width)
            width = block.shape[1] if width is None else width
            blocks.append(block)
            metadata += [row or {} for row in _rows(batch, "metadata")]
            if result.predicts_metadata:
                for name, rows in struct_rows.items():
                    rows += [row or {} for row in _rows(batch, name)]
            else:
                for name, out in LATENT_COLUMNS.items():
                    if out in latents:
                        latents[out] += _rows(batch, name)
            del batch
        n = sum(len(block) for block in blocks)
        # np.empty is paged in as blocks are copied, and each block is freed once copied: the
        # peak is about one matrix and one batch, not two matrices.
        counts = np.empty((n, width or 0), dtype=np.int64)
        row = 0
        while blocks:
            block = blocks.pop(0)
            counts[row : row + len(block)] = block
            row += len(block)
            del block
        values = counts if as_counts else log_cpm(counts)
        del counts
        expression = pd.DataFrame(values, columns=result.gene_order if result.has_gene_order else None, copy=False)
        if result.predicts_metadata:
            return {
                "metadata": pd.DataFrame(metadata),
                "latents": pd.DataFrame(struct_rows["latents"]),
                "classifier_probs": pd.DataFrame(struct_rows["classifier_probs"]),
                "expression": expression,
            }
        return {"metadata": pd.DataFrame(metadata), "expression": expression, "latents": pd.DataFrame(latents)}


def write_arrow_part(
    source: bytes | bytearray | memoryview | BinaryIO | str | os.PathLike | ArrowResult,
    target: PartTarget,
    *,
    query_id: str,
) -> dict[str, Any]:
    """A self-hosted stream as ``target``'s expression and metadata parts: the same files as
    :func:`~synthbio_pipeline.formats.parquet.write_part` writes from the JSON result of the
    same samples (same gene blocks and tiles; memory of one batch and one tile)."""
    result = source if isinstance(source, ArrowResult) else ArrowResult(source)
    with result:
        return write_part(result, target, query_id=query_id)


__all__ = [
    "END_OF_STREAM",
    "LATENT_COLUMNS",
    "LATENT_SUFFIX",
    "PREDICT_METADATA",
    "ArrowResult",
    "arrow_to_frames",
    "counts_matrix",
    "latent_name",
    "open_arrow_result",
    "write_arrow_part",
]
