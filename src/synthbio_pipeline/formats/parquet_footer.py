"""Parquet files stitched from other files' encoded column chunks, under a footer written here.

The merge of per-condition parts (:func:`synthbio_pipeline.formats.parquet.merge_parts`)
copies each part's column chunks byte for byte (``copy_file_range``) and writes the footer
itself, with the minimal thrift compact-protocol writer below: nothing is decoded or
re-encoded, and memory does not grow with the number of samples (pyarrow's writer keeps
~1.8 KB of metadata per column chunk until it closes: 400 MB at 10,000 samples).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.errors import MergeError
from synthbio_pipeline.files import atomic_path

# Parquet's thrift enums (parquet.thrift), for the footer the stitching merge writes.
_CODECS = {"UNCOMPRESSED": 0, "SNAPPY": 1, "GZIP": 2, "LZO": 3, "BROTLI": 4, "LZ4": 5, "ZSTD": 6, "LZ4_RAW": 7}
_ENCODINGS = {
    "PLAIN": 0,
    "PLAIN_DICTIONARY": 2,
    "RLE": 3,
    "BIT_PACKED": 4,
    "DELTA_BINARY_PACKED": 5,
    "DELTA_LENGTH_BYTE_ARRAY": 6,
    "DELTA_BYTE_ARRAY": 7,
    "RLE_DICTIONARY": 8,
    "BYTE_STREAM_SPLIT": 9,
}
_PHYSICAL = {
    "BOOLEAN": 0,
    "INT32": 1,
    "INT64": 2,
    "INT96": 3,
    "FLOAT": 4,
    "DOUBLE": 5,
    "BYTE_ARRAY": 6,
    "FIXED_LEN_BYTE_ARRAY": 7,
}


def chunk_layout(expression_parts, schema: pa.Schema) -> list[dict] | None:
    """Where every part's column chunks are, or None when the parts cannot be copied as they are.

    Copying needs the same row groups (gene blocks) in every part, required (non-null)
    columns of the merged type, and no dictionary pages. Only a few integers per
    chunk are kept (footers are dropped as read): 220,000 chunks take 7 MB.
    """
    physical = "INT32" if schema.field(1).type == pa.int32() else "FLOAT"
    rows, layout = None, []
    for path in expression_parts:
        with pq.ParquetFile(path) as source:
            footer = source.metadata
            # Required columns. Not via footer.schema: touching it leaks the whole footer (pyarrow 26,
            # ~1 KB per column, measured), which write_part would pay once per tile.
            nullable = any(field.nullable for field in source.schema_arrow)
        groups = [footer.row_group(g) for g in range(footer.num_row_groups)]
        if rows is None:
            rows = [group.num_rows for group in groups]
        if [group.num_rows for group in groups] != rows or nullable:
            return None
        n = footer.num_columns
        chunks = np.zeros((len(groups), n, 3), np.int64)  # start, compressed size, uncompressed size
        kinds = set()
        for g, group in enumerate(groups):
            for j in range(n):
                chunk = group.column(j)
                if chunk.has_dictionary_page or chunk.num_values != rows[g]:
                    return None
                chunks[g, j] = chunk.data_page_offset, chunk.total_compressed_size, chunk.total_uncompressed_size
                if j:
                    kinds.add((chunk.physical_type, chunk.compression, chunk.encodings))
        gene_chunk = [group.column(0) for group in groups]
        if len(kinds) != 1 or next(iter(kinds))[0] != physical or gene_chunk[0].physical_type != "BYTE_ARRAY":
            return None
        _, codec, encodings = kinds.pop()
        if codec not in _CODECS or any(e not in _ENCODINGS for e in encodings):
            return None
        layout.append(
            {
                "chunks": chunks,
                "rows": rows,
                "codec": _CODECS[codec],
                "encodings": [_ENCODINGS[e] for e in encodings],
                "gene": [
                    (
                        c.compression,
                        c.encodings,
                        c.statistics.min if c.statistics is not None and c.statistics.has_min_max else None,
                        c.statistics.max if c.statistics is not None and c.statistics.has_min_max else None,
                    )
                    for c in gene_chunk
                ],
            }
        )
    return layout


def stitch_expression(
    expression_out, schema: pa.Schema, row_groups: Iterable[list[tuple[Any, dict, int]]], writer_options: dict
) -> None:
    """Write a file of ``schema`` whose row groups are other files' column chunks, copied byte for byte.

    Each item of ``row_groups`` lists one row group's sources, left to right, as (path, that
    file's :func:`chunk_layout` entry, row group in it): the gene_id chunk is the first
    source's (every source must hold the same genes), the value chunks are every source's.
    Only the footer is written here, ~60 bytes per column chunk; items may be produced lazily.
    """
    names = schema.names
    head = _footer_template(schema, writer_options)
    prefixes: dict[tuple, list[bytes]] = {}  # per (codec, encodings): the fields every column's chunks share
    groups, total_rows = 0, 0
    # The serialised RowGroups (~60 bytes per column chunk: 13 MB at 10,000 samples) wait in a
    # spool file, not in memory, until the footer is written.
    with atomic_path(expression_out) as temporary, open(temporary, "wb") as out, tempfile.TemporaryFile() as spool:
        out.write(b"PAR1")
        for ordinal, sources in enumerate(row_groups):
            path0, first, g0 = sources[0]
            n_rows = first["rows"][g0]
            group_start = out.tell()
            gene_bytes = _read_range(path0, *first["chunks"][g0, 0, :2])
            for path, part, g in sources[1:]:
                if _read_range(path, *part["chunks"][g, 0, :2]) != gene_bytes and not _same_genes(
                    (path0, g0), (path, g), names[0]
                ):
                    raise MergeError(f"{path} has other genes (or another gene order) than {path0}")
            codec, encodings, low, high = first["gene"][g0]
            columns = [
                _column_chunk(
                    _chunk_prefix(6, [_ENCODINGS[e] for e in encodings], schema.names[0], _CODECS[codec]),
                    n_rows,
                    int(first["chunks"][g0, 0, 2]),
                    len(gene_bytes),
                    out.tell(),
                    low,
                    high,
                )
            ]
            out.write(gene_bytes)
            uncompressed = int(first["chunks"][g0, 0, 2])
            column = 1
            rows_field = b"\x16" + _zigzag(n_rows)
            for path, part, g in sources:
                chunks = part["chunks"][g]
                with open(path, "rb") as source:
                    # A source's value columns of one row group lie side by side: one copy each, when so.
                    _copy(
                        source,
                        out,
                        int(chunks[1, 0]),
                        int(chunks[1:, 1].sum()),
                        contiguous=bool(np.all(chunks[2:, 0] == chunks[1:-1, 0] + chunks[1:-1, 1])),
                        chunks=chunks,
                    )
                offset = out.tell() - int(chunks[1:, 1].sum())
                key = (part["codec"], tuple(part["encodings"]))
                if key not in prefixes:
                    prefixes[key] = [
                        _chunk_prefix(head["physical"], part["encodings"], name, part["codec"]) for name in names[1:]
                    ]
                shared = prefixes[key]
                for j, (_, compressed, size) in enumerate(chunks[1:].tolist(), start=column - 1):
                    # Fields 6, 7 and 9 of ColumnMetaData (sizes, page offset), then the two struct ends.
                    columns.append(
                        b"".join(
                            [
                                shared[j],
                                rows_field,
                                b"\x16",
                                _varint(size << 1),
                                b"\x16",
                                _varint(compressed << 1),
                                b"\x26",
                                _varint(offset << 1),
                                b"\x00\x00",
                            ]
                        )
                    )
                    offset += compressed
                column += len(chunks) - 1
                uncompressed += int(chunks[1:, 2].sum())
            if column != len(names):
                raise MergeError(f"row group {ordinal} has {column} columns, the schema {len(names)}")
            spool.write(_rowgroup(columns, uncompressed, n_rows, group_start, out.tell() - group_start, ordinal))
            groups += 1
            total_rows += n_rows
        footer_start = out.tell()
        out.write(
            b"".join(
                [
                    head["version"],
                    head["schema"],
                    _field(3, 6, _zigzag(total_rows), 2),
                    _field(4, 9, _list_header(12, groups), 3),
                ]
            )
        )
        spool.seek(0)
        shutil.copyfileobj(spool, out, 1 << 20)
        out.write(head["rest"] + b"\x00")
        footer_size = out.tell() - footer_start
        out.write(footer_size.to_bytes(4, "little") + b"PAR1")


def _read_range(path, start, size) -> bytes:
    with open(path, "rb") as source:
        return os.pread(source.fileno(), int(size), int(start))


def _same_genes(first: tuple[Any, int], other: tuple[Any, int], column: str) -> bool:
    # Same ids, encoded differently (another writer or codec): compare the decoded ids of (path, row group).
    read = lambda p, g: pq.ParquetFile(p).read_row_group(g, columns=[column]).column(0)
    return read(*first).equals(read(*other))


def _copy(source, out, start: int, size: int, *, contiguous: bool, chunks: np.ndarray) -> None:
    ranges = [(start, size)] if contiguous else [(int(c[0]), int(c[1])) for c in chunks[1:]]
    out.flush()
    for offset, remaining in ranges:
        while remaining:
            try:  # in the kernel: the bytes never enter this process
                done = os.copy_file_range(source.fileno(), out.fileno(), remaining, offset)
            except OSError:
                done = out.write(os.pread(source.fileno(), min(remaining, 1 << 24), offset))
            if not done:
                raise MergeError(f"{source.name} ends inside a column chunk")
            offset, remaining = offset + done, remaining - done
    out.seek(0, os.SEEK_END)


# --- a minimal thrift compact-protocol writer (and skipper) for the footer ---------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _field(field_id: int, kind: int, value: bytes, last: int) -> bytes:
    return bytes([((field_id - last) << 4) | kind]) + value  # every delta here is 1..15


def _list_header(kind: int, size: int) -> bytes:
    return bytes([(size << 4) | kind]) if size < 15 else bytes([0xF0 | kind]) + _varint(size)


def _binary(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _chunk_prefix(physical: int, encodings: list[int], name: str, codec: int) -> bytes:
    """A ColumnChunk up to its ColumnMetaData's codec: file_offset 0 (deprecated), type, encodings, path."""
    return b"".join(
        [
            _field(2, 6, _zigzag(0), 0),
            bytes([(1 << 4) | 12]),
            _field(1, 5, _zigzag(physical), 0),
            _field(2, 9, _list_header(5, len(encodings)) + b"".join(_zigzag(e) for e in encodings), 1),
            _field(3, 9, _list_header(8, 1) + _binary(name.encode()), 2),
            _field(4, 5, _zigzag(codec), 3),
        ]
    )


def _column_chunk(prefix: bytes, rows, uncompressed, compressed, offset, low=None, high=None) -> bytes:
    meta = [
        prefix,
        _field(5, 6, _zigzag(rows), 4),
        _field(6, 6, _zigzag(uncompressed), 5),
        _field(7, 6, _zigzag(compressed), 6),
        _field(9, 6, _zigzag(offset), 7),
    ]
    if low is not None and high is not None:  # gene_id min/max: lets readers skip gene blocks
        stats = (
            _field(3, 6, _zigzag(0), 0)
            + _field(5, 8, _binary(str(high).encode()), 3)
            + _field(6, 8, _binary(str(low).encode()), 5)
            + b"\x00"
        )
        meta.append(_field(12, 12, stats, 9))
    return b"".join(meta) + b"\x00\x00"


def _rowgroup(columns: list[bytes], uncompressed: int, rows: int, start: int, compressed: int, ordinal: int) -> bytes:
    return b"".join(
        [
            _field(1, 9, _list_header(12, len(columns)), 0),
            *columns,
            _field(2, 6, _zigzag(uncompressed), 1),
            _field(3, 6, _zigzag(rows), 2),
            _field(5, 6, _zigzag(start), 3),
            _field(6, 6, _zigzag(compressed), 5),
            _field(7, 4, _zigzag(ordinal), 6),
            b"\x00",
        ]
    )


def _footer_template(schema: pa.Schema, writer_options: dict) -> dict:
    """The footer's fixed fields, as pyarrow writes them for ``schema`` in a file with no rows.

    Taking the schema, key-value metadata, created_by and column orders from pyarrow keeps
    the logical types right; only the row groups and the row count are ours.
    """
    sink = pa.BufferOutputStream()
    pq.ParquetWriter(sink, schema, **{**writer_options, "store_schema": False}).close()
    data = sink.getvalue().to_pybytes()
    size = int.from_bytes(data[-8:-4], "little")
    fields = _struct_fields(data[-8 - size : -8])
    kept = {field_id: (kind, raw) for field_id, kind, raw in fields}
    if 5 not in kept and schema.metadata:  # without store_schema pyarrow leaves the label out: add it
        pairs = [
            _field(1, 8, _binary(k), 0) + _field(2, 8, _binary(v), 1) + b"\x00" for k, v in schema.metadata.items()
        ]
        kept[5] = (9, _list_header(12, len(pairs)) + b"".join(pairs))
    rest, last = [], 4
    for field_id in sorted(f for f in kept if f > 4):
        kind, raw = kept[field_id]
        rest.append(bytes([((field_id - last) << 4) | kind]) + raw)
        last = field_id
    physical = _PHYSICAL["INT32" if schema.field(1).type == pa.int32() else "FLOAT"]
    return {
        "version": _field(1, 5, kept[1][1], 0),
        "schema": _field(2, 9, kept[2][1], 1),
        "rest": b"".join(rest),
        "physical": physical,
    }


def _struct_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """The top-level fields of one compact-protocol struct: (id, type, raw value bytes)."""
    fields, position, field_id = [], 0, 0
    while data[position]:
        header = data[position]
        position += 1
        kind, delta = header & 0x0F, header >> 4
        if delta:
            field_id += delta
        else:
            raw, position = _read_varint(data, position)
            field_id = (raw >> 1) ^ -(raw & 1)
        end = _skip(data, position, kind)
        fields.append((field_id, kind, data[position:end]))
        position = end
    return fields


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, position


def _skip(data: bytes, position: int, kind: int, in_list: bool = False) -> int:
    if kind in (1, 2):
        return position + 1 if in_list else position  # a field's bool lives in its header
    if kind == 3:
        return position + 1
    if kind in (4, 5, 6):
        return _read_varint(data, position)[1]
    if kind == 7:
        return position + 8
    if kind == 8:
        size, position = _read_varint(data, position)
        return position + size
    if kind in (9, 10):
        header = data[position]
        position += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, position = _read_varint(data, position)
        for _ in range(size):
            position = _skip(data, position, element, True)
        return position
    if kind == 11:
        size, position = _read_varint(data, position)
        if size:
            types = data[position]
            position += 1
            for _ in range(size):
                position = _skip(data, position, types >> 4, True)
                position = _skip(data, position, types & 0x0F, True)
        return position
    if kind == 12:
        while data[position]:
            header = data[position]
            position += 1
            if not header >> 4:
                position = _read_varint(data, position)[1]
            position = _skip(data, position, header & 0x0F)
        return position + 1
    raise MergeError(f"unexpected thrift type {kind} in a Parquet footer")
