"""Streaming parser of the result document, the JSON a ready query's ``downloadUrl`` serves.

The document, as the vendor's client (pysynthbio 4.2.4) reads it::

    {"gene_order": ["ENSG00000000003", ...], "model_version": 2,
     "outputs": [{"counts": [0, 12, 5, ...], "metadata": {...}, "latents": {...}}, ...]}

one element of ``outputs`` per sample, in input order, every ``counts`` in ``gene_order``'s
order (a list, ``{"counts": [...]}``, or for single-cell a gene -> count object); an
``error`` or ``errors`` key at the top level means the result is an error.

A bulk result of 1,000 samples is a JSON document of about 180 MB. Loading it with
``json.load`` and building a DataFrame takes seconds and more than a gigabyte; this module
reads it in chunks instead, holding about one output plus a read buffer at a time::

    with open_result("result.json") as result:
        result.gene_order          # read before the first sample
        for sample in result.samples(expected_samples=1000):
            sample.counts          # int64 vector, one count per gene of gene_order
            sample.metadata, sample.latents, sample.extra

How it works: a small recursive-descent scanner walks the top-level object and the
``outputs`` array over a byte buffer filled from the file 1 MiB at a time (the buffer grows
only as far as a single value needs). Each counts array's text, between ``[`` and ``]``,
goes straight to :func:`numpy.fromstring`; every small value (metadata, latents, gene_order,
other keys) is located by the scanner and decoded by :func:`json.loads` on its exact bytes.

:func:`to_frames` builds the same DataFrames as the vendor's client (pysynthbio 4.2.4,
``output_transformers``) from one streaming pass; it is the only function that holds the
whole expression matrix.

Counts are integers on the way out. A document whose counts are floats is read the way the
vendor's client reads it (``DataFrame.astype(int)``): every value is truncated toward zero
(``2.9`` -> ``2``, ``-0.5`` -> ``0``). Non-finite or non-numeric counts (``NaN``, ``null``,
``true``, strings) are errors. Numbers are read by numpy, which is slightly more lenient
than JSON about their spelling (a leading ``+`` or leading zeros are accepted).

Every problem with the document raises :class:`~synthbio_pipeline.errors.ResultError`, with
the byte offset where it was found.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import numpy as np

from synthbio_pipeline.errors import ResultError
from synthbio_pipeline.vocabulary.families import (
    EXPRESSION,
    GEM2_AUTOENCODE,
    GEM2_EXPRESSION,
    GEM2_METADATA_PREDICTION,
    METADATA_PREDICTION,
    RESULT_KINDS,
)

if TYPE_CHECKING:  # imported where frames are built: parsing and writing parts never need pandas (~45 MB)
    import pandas as pd

__all__ = ["DEFAULT_CHUNK_SIZE", "ResultReader", "Sample", "log_cpm", "open_result", "to_frames"]

#: Bytes read from the file at a time.
DEFAULT_CHUNK_SIZE = 1 << 20


# --- byte-level patterns -------------------------------------------------------------------

_WS = re.compile(rb"[ \t\n\r]*")
#: The rest of a string after its opening quote, up to and including the closing quote.
_STRING_TAIL = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
#: A complete string, a bracket or brace, or a lone quote (a string not complete in the buffer).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]', re.S)
#: A number or literal: everything up to the next structural byte or whitespace.
_SCALAR = re.compile(rb'[^ \t\n\r,:\[\]{}"]*')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")

_QUOTE, _COMMA, _COLON = 0x22, 0x2C, 0x3A
_LBRACKET, _RBRACKET, _LBRACE, _RBRACE = 0x5B, 0x5D, 0x7B, 0x7D

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
_EMPTY_COUNTS = np.zeros(0, dtype=np.int64)


@dataclass
class Sample:
    """One element of ``outputs``.

    ``counts`` is an int64 vector in the order of the reader's ``gene_order`` (from a list,
    a ``{"counts": [...]}`` object, a sparse gene-id -> count object, or, for
    metadata-prediction outputs without ``counts``, ``decoder_sample.counts``; empty for a
    GEM-2 metadata prediction, which has none). ``metadata`` is ``{}`` where the output's is
    absent or null, ``latents`` ``None``. ``extra`` holds every other key of the output
    (GEM-1 ``classifier_probs``; GEM-2 ``predicted_metadata``, ``classifier_probabilities``,
    ``model_release_id``, ``vae_run_id``; ``decoder_sample`` minus its counts when it carries
    more than counts); the properties below read the GEM-2 ones.
    """

    counts: np.ndarray
    metadata: dict
    latents: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def predicted_metadata(self) -> dict | None:
        """GEM-2 metadata prediction: the predicted values (``None`` when absent or null)."""
        return self.extra.get("predicted_metadata")

    @property
    def classifier_probabilities(self) -> dict | None:
        """Metadata prediction: field -> value -> probability (GEM-2's key, else GEM-1's)."""
        return self.extra.get("classifier_probabilities", self.extra.get("classifier_probs"))

    @property
    def provenance(self) -> dict[str, Any]:
        """GEM-2 autoencode: ``model_release_id`` and ``vae_run_id`` (``None`` where absent)."""
        return {key: self.extra.get(key) for key in PROVENANCE_KEYS}


#: Output keys whose value is a JSON object (or null) when present.
_OBJECT_KEYS = frozenset({"predicted_metadata", "classifier_probabilities", "classifier_probs"})
#: GEM-2 autoencode's per-sample provenance.
PROVENANCE_KEYS = ("model_release_id", "vae_run_id")


def _describe(data: bytes) -> str:
    return repr(data[:24].decode("utf-8", "replace")) if data else "the end of the document"


def _byte_pos(exc: json.JSONDecodeError) -> int:
    """The byte offset of a decoding error (``exc.pos`` counts characters)."""
    return len(exc.doc[: exc.pos].encode("utf-8", "surrogatepass"))


def _short(value: Any, limit: int = 2000) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


class _Scanner:
    """A JSON scanner over a byte buffer that is refilled from a binary file.

    ``buf[pos]`` is the next unread byte and ``base`` the file offset of ``buf[0]``.
    :meth:`more` appends a chunk and drops everything before ``pos``, so the value that
    starts at ``pos`` always stays in the buffer while its end is searched for; callers that
    hold indexes past ``pos`` subtract the shift it returns.
    """

    def __init__(self, f: BinaryIO, chunk_size: int, base: int):
        self.f = f
        self.chunk = chunk_size
        self.buf = b""
        self.pos = 0
        self.base = base
        self.eof = False

    # --- buffer ----------------------------------------------------------------------------

    def reset(self, offset: int) -> None:
        self.f.seek(offset)
        self.buf, self.pos, self.base, self.eof = b"", 0, offset, False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def more(self) -> int:
        """Read another chunk; return by how much indexes into ``buf`` moved, or -1 at EOF."""
        if self.eof:
            return -1
        keep = len(self.buf) - self.pos
        # A value longer than the buffer doubles the read, so long values cost linear time.
        data = self.f.read(max(self.chunk, keep))
        if not data:
            self.eof = True
            return -1
        if not isinstance(data, bytes):
            if isinstance(data, str):
                raise TypeError("the result must be read from a binary file (open it with 'rb')")
            data = bytes(data)
        shift = self.pos
        self.buf = self.buf[shift:] + data if keep else data
        self.base += shift
        self.pos = 0
        return shift

    # --- errors ----------------------------------------------------------------------------

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        """Raise a ResultError naming the byte offset (``at`` is an index into ``buf``)."""
        index = self.pos if at is None else at
        raise ResultError(f"{message} (at byte {self.base + index})")

    def truncated(self, what: str) -> NoReturn:
        end = self.base + len(self.buf)
        if end == 0:
            raise ResultError("the result document is empty")
        raise ResultError(
            f"the result document ends early at byte {end}, inside {what} (truncated or interrupted download?)"
        )

    def found(self) -> str:
        return _describe(self.buf[self.pos : self.pos + 24])

    # --- tokens ----------------------------------------------------------------------------

    def ws(self, what: str) -> int:
        """Skip whitespace; return the next byte (not consumed). EOF here is a truncation."""
        buf, pos = self.buf, self.pos
        while True:
            if pos < len(buf):
                c = buf[pos]
                if c > 0x20:
                    self.pos = pos
                    return c
                pos = _WS.match(buf, pos).end()
                if pos < len(buf):
                    self.pos = pos
                    return buf[pos]
            self.pos = pos
            if self.more() < 0:
                self.truncated(what)
            buf, pos = self.buf, self.pos

    def more_items(self, close: int, what: str) -> bool:
        """After a member or element: ``True`` past a ``,``; ``False`` past the closing bracket."""
        c = self.ws(what)
        if c == _COMMA or c == close:
            self.pos += 1
            return c == _COMMA
        self.fail(f"malformed JSON: expected ',' or '{chr(close)}' in {what}, found {self.found()}")

    def expect(self, byte: int, what: str) -> None:
        if self.ws(what) != byte:
            self.fail(f"malformed JSON: expected {chr(byte)!r} {what}, found {self.found()}")
        self.pos += 1

    def key(self, what: str) -> str:
        if self.ws(what) != _QUOTE:
            self.fail(f"malformed JSON: expected a key in {what}, found {self.found()}")
        return self.string(what)

    def string(self, what: str) -> str:
        """Read the string at ``pos`` (its opening quote)."""
        buf, start = self.buf, self.pos
        end = buf.find(b'"', start + 1)
        if end >= 0 and buf.find(b"\\", start + 1, end) < 0:
            self.pos = end + 1
            try:
                return buf[start + 1 : end].decode("utf-8")
            except UnicodeDecodeError:
                self.fail(f"invalid UTF-8 in a string in {what}", start)
        value = self.decode(what)
        if not isinstance(value, str):  # pragma: no cover - the value starts with a quote
            self.fail(f"expected a string in {what}", start)
        return value

    def value_end(self, what: str) -> int:
        """Index in ``buf`` just past the JSON value that starts at ``pos`` (not consumed)."""
        c = self.buf[self.pos]
        if c == _QUOTE:
            while True:
                m = _STRING_TAIL.match(self.buf, self.pos + 1)
                if m is not None:
                    return m.end()
                if self.more() < 0:
                    self.truncated(what)
        if c == _LBRACKET or c == _LBRACE:
            return self._container_end(what)
        while True:
            end = _SCALAR.match(self.buf, self.pos).end()
            if end < len(self.buf):
                break
            if self.more() < 0:
                self.truncated(what)
        if end == self.pos:
            self.fail(f"malformed JSON: expected a value in {what}, found {self.found()}")
        return end

    def _container_end(self, what: str) -> int:
        start = self.pos
        closer = b"]" if self.buf[start] == _LBRACKET else b"}"
        # Fast path: the first closer ends the container when nothing before it nests or
        # escapes and the quotes before it pair up (so it is not inside a string).
        search = start + 1
        while True:
            buf = self.buf
            j = buf.find(closer, search)
            if j >= 0:
                break
            search = len(buf)
            shift = self.more()
            if shift < 0:
                self.truncated(what)
            start -= shift
            search -= shift
        if (
            buf.find(b"[", start + 1, j) < 0
            and buf.find(b"{", start + 1, j) < 0
            and buf.find(b"\\", start + 1, j) < 0
            and (buf.find(b'"', start + 1, j) < 0 or buf.count(b'"', start + 1, j) % 2 == 0)
        ):
            return j + 1
        # General path: walk strings and brackets.
        depth = 0
        i = start
        while True:
            buf = self.buf
            m = _TOKEN.search(buf, i)
            if m is None or (m.end() - m.start() == 1 and buf[m.start()] == _QUOTE):
                i = len(buf) if m is None else m.start()
                shift = self.more()
                if shift < 0:
                    self.truncated(what)
                i -= shift
                continue
            c = buf[m.start()]
            if c == _LBRACKET or c == _LBRACE:
                depth += 1
            elif c == _RBRACKET or c == _RBRACE:
                depth -= 1
                if depth == 0:
                    return m.end()
            i = m.end()

    def decode(self, what: str) -> Any:
        """Decode the JSON value at ``pos`` with the stdlib and consume it."""
        return self.decode_raw(what)[0]

    def decode_raw(self, what: str) -> tuple[Any, bytes, int]:
        """Like :meth:`decode`; also the value's bytes and its offset in the file."""
        end = self.value_end(what)
        start = self.pos
        raw = self.buf[start:end]
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            self.fail(f"malformed JSON in {what}: {exc.msg}", start + _byte_pos(exc))
        except (ValueError, RecursionError) as exc:
            self.fail(f"malformed JSON in {what}: {exc}", start)
        self.pos = end
        return value, raw, self.base + start

    def skip(self, what: str) -> None:
        self.pos = self.value_end(what)

    def at_eof(self) -> bool:
        """Skip whitespace; true if nothing else follows."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return False
            if self.more() < 0:
                return True


class _OutputReader:
    """Turns the elements of ``outputs`` into :class:`Sample` objects."""

    def __init__(self, scanner: _Scanner, gene_order: list[str] | None, *, require_counts: bool = True):
        self.s = scanner
        self.gene_order = gene_order or []
        #: Values per counts vector: gene_order's length, or (without a gene_order) the first vector's.
        self.n_genes: int | None = None if gene_order is None else len(gene_order)
        self.has_gene_order = gene_order is not None
        self.require_counts = require_counts
        self._lookup: dict[str, int] | None = None
        self._duplicates: tuple[np.ndarray, np.ndarray] | None = None

    def gene_index(self) -> dict[str, int]:
        """gene id -> column, built once per reader (sparse counts only)."""
        if self._lookup is None:
            lookup = {gene: i for i, gene in enumerate(self.gene_order)}
            if len(lookup) < self.n_genes:
                # A gene listed twice gets the same count in both columns, as in the vendor's client.
                dst = [i for i, gene in enumerate(self.gene_order) if lookup[gene] != i]
                src = [lookup[self.gene_order[i]] for i in dst]
                self._duplicates = (np.array(src, dtype=np.intp), np.array(dst, dtype=np.intp))
            self._lookup = lookup
        return self._lookup

    # --- one output ------------------------------------------------------------------------

    def read(self, index: int, skip: bool = False) -> Sample | None:
        s = self.s
        what = f"output {index}"
        if s.ws(what) != _LBRACE:
            s.fail(f"{what} is not a JSON object: found {s.found()}")
        start = s.offset
        s.pos += 1
        counts = decoder_counts = metadata = latents = None
        extra: dict[str, Any] = {}
        c = s.ws(what)
        if c == _RBRACE:
            s.pos += 1
        else:
            while True:
                key = s.key(what)
                s.expect(_COLON, f"after the key {key!r} in {what}")
                c = s.ws(what)
                if skip:
                    s.skip(what)
                elif key == "counts":
                    counts = self.counts(index, "the counts")
                elif key == "metadata":
                    metadata = s.decode(f"the metadata of {what}")
                elif key == "latents":
                    latents = s.decode(f"the latents of {what}")
                elif key == "decoder_sample" and c == _LBRACE:
                    decoder_counts, rest = self.decoder_sample(index)
                    if rest:
                        extra[key] = rest
                else:
                    value = extra[key] = s.decode(f"{key!r} of {what}")
                    if key in _OBJECT_KEYS and value is not None and not isinstance(value, dict):
                        raise ResultError(f"the {key} of {what} is not a JSON object (at byte {start})")
                if not s.more_items(_RBRACE, what):
                    break
        if skip:
            return None
        if counts is None:
            counts = decoder_counts
        if counts is None:
            if self.require_counts:
                raise ResultError(f"{what} has no counts (nor decoder_sample.counts) (at byte {start})")
            counts = _EMPTY_COUNTS
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise ResultError(f"the metadata of {what} is not a JSON object (at byte {start})")
        if latents is not None and not isinstance(latents, dict):
            raise ResultError(f"the latents of {what} are not a JSON object (at byte {start})")
        return Sample(counts, metadata, latents, extra)

    def decoder_sample(self, index: int) -> tuple[np.ndarray | None, dict]:
        """``decoder_sample: {"counts": [...], ...}``: its counts, and its other keys."""
        s = self.s
        what = f"the decoder_sample of output {index}"
        s.pos += 1
        counts = None
        rest: dict[str, Any] = {}
        if s.ws(what) == _RBRACE:
            s.pos += 1
            return None, rest
        while True:
            key = s.key(what)
            s.expect(_COLON, f"after the key {key!r} in {what}")
            s.ws(what)
            if key == "counts":
                counts = self.counts(index, "the decoder_sample counts")
            else:
                rest[key] = s.decode(what)
            if not s.more_items(_RBRACE, what):
                return counts, rest

    # --- counts ----------------------------------------------------------------------------

    def counts(self, index: int, what: str) -> np.ndarray:
        """The counts value at ``pos``, in any of its three shapes, as a dense int64 vector."""
        s = self.s
        c = s.buf[s.pos]
        if c == _LBRACKET:
            return self.counts_list(index, what)
        if c == _LBRACE:
            if self._wrapped_ahead():
                return self.counts_wrapped(index, what)
            return self.counts_sparse(index, what)
        s.fail(f"{what} of output {index} is neither a list nor an object: found {s.found()}")

    def _wrapped_ahead(self) -> bool:
        """Does the object at ``pos`` start with the key "counts"? (``pos`` does not move.)"""
        s = self.s
        while True:
            j = _WS.match(s.buf, s.pos + 1).end()
            if j + 8 <= len(s.buf):
                return s.buf.startswith(b'"counts"', j)
            if s.more() < 0:
                return False  # the sparse reader reports the truncation

    def counts_list(self, index: int, what: str) -> np.ndarray:
        """The hot path: find the closing bracket and let numpy parse what lies between."""
        s = self.s
        start = s.pos + 1
        search = start
        while True:
            buf = s.buf
            end = buf.find(b"]", search)
            if end >= 0:
                break
            search = len(buf)
            shift = s.more()
            if shift < 0:
                s.truncated(f"{what} of output {index}")
            start -= shift
            search -= shift
        at = s.base + start
        s.pos = end + 1
        counts = self.parse_numbers(buf[start:end], index, what, at)
        self.check_length(counts, index, what, at)
        return counts

    def check_length(self, counts: np.ndarray, index: int, what: str, at: int) -> None:
        """Every counts vector has one value per gene (without a gene_order: as many as the first)."""
        if self.n_genes is None:
            self.n_genes = len(counts)
        elif len(counts) != self.n_genes:
            against = "gene_order has" if self.has_gene_order else "the first output's counts have"
            raise ResultError(
                f"output {index}: {what} has {len(counts)} values but {against} {self.n_genes}"
                f"{' genes' if self.has_gene_order else ''} (at byte {at})"
            )

    def parse_numbers(self, body: bytes, index: int, what: str, at: int) -> np.ndarray:
        """The comma-separated numbers of ``body`` as int64 (floats truncated toward zero)."""
        try:
            values = np.fromstring(body, dtype=np.int64, sep=",")
        except ValueError:
            values = None
        if values is not None and len(values) <= 1 and not body.strip():
            return _EMPTY_COUNTS.copy()  # numpy reads blank text as [0]
        if values is None:
            try:
                floats = np.fromstring(body, dtype=np.float64, sep=",")
            except ValueError:
                self._bad_item(body, index, what, at)
            values = self._truncate_floats(floats, index, what, at)
        elif len(values) and (values.max() == _INT64_MAX or values.min() == _INT64_MIN):
            raise ResultError(f"output {index}: {what} hold a value outside the int64 range (at byte {at})")
        tail = body[-32:].rstrip() or body.rstrip()
        if tail.endswith(b","):
            raise ResultError(f"output {index}: malformed JSON: a trailing comma in {what} (at byte {at})")
        return values

    @staticmethod
    def _truncate_floats(floats: np.ndarray, index: int, what: str, at: int) -> np.ndarray:
        finite = np.isfinite(floats)
        if not finite.all():
            k = int(np.flatnonzero(~finite)[0])
            raise ResultError(
                f"output {index}: {what} item {k} is {float(floats[k])!r}, not a finite number (at byte {at})"
            )
        if len(floats) and not (np.abs(floats) < 2.0**63).all():
            raise ResultError(f"output {index}: {what} hold a value outside the int64 range (at byte {at})")
        return floats.astype(np.int64)  # truncation toward zero, like pandas' astype(int)

    @staticmethod
    def _bad_item(body: bytes, index: int, what: str, at: int) -> NoReturn:
        offset = 0
        for k, item in enumerate(body.split(b",")):
            text = item.strip(b" \t\n\r")
            if not _NUMBER.fullmatch(text):
                where = at + offset + (len(item) - len(item.lstrip(b" \t\n\r")))
                shown = text[:40].decode("utf-8", "replace")
                raise ResultError(f"output {index}: {what} item {k} is not a number: {shown!r} (at byte {where})")
            offset += len(item) + 1
        raise ResultError(f"output {index}: {what} are not a list of numbers (at byte {at})")

    def counts_from_python(self, values: Any, raw: bytes, index: int, what: str, at: int) -> np.ndarray:
        """Numbers decoded by the stdlib (sparse values, or counts found via json.loads)."""
        if not isinstance(values, list):
            raise ResultError(f"output {index}: {what} are not a list (at byte {at})")
        try:
            array = np.array(values)
        except (ValueError, OverflowError, TypeError):
            array = np.array(values, dtype=object)
        kind = array.dtype.kind if array.ndim == 1 else "O"
        if kind in "iu" and (b"true" in raw or b"false" in raw) and any(type(v) is bool for v in values):
            kind = "b"
        if kind in "iu":
            if array.dtype != np.int64:
                if len(array) and (array.max() > _INT64_MAX or array.min() < _INT64_MIN):
                    raise ResultError(f"output {index}: {what} hold a value outside the int64 range (at byte {at})")
                array = array.astype(np.int64)
            return array
        if kind == "f":
            return self._truncate_floats(array, index, what, at)
        for k, v in enumerate(values):
            if type(v) is bool or not isinstance(v, (int, float)):
                raise ResultError(f"output {index}: {what} item {k} is not a number: {v!r} (at byte {at})")
            if isinstance(v, int) and not _INT64_MIN <= v <= _INT64_MAX:
                raise ResultError(f"output {index}: {what} item {k} is outside the int64 range (at byte {at})")
        raise ResultError(f"output {index}: {what} are not numbers (at byte {at})")  # pragma: no cover

    def counts_wrapped(self, index: int, what: str) -> np.ndarray:
        """``{"counts": [...]}`` (other keys of that object are ignored, as by the vendor)."""
        s = self.s
        inner = f"{what} object of output {index}"
        s.pos += 1
        counts = None
        while True:
            key = s.key(inner)
            s.expect(_COLON, f"after the key {key!r} in {inner}")
            c = s.ws(inner)
            if key == "counts":
                if c != _LBRACKET:
                    s.fail(f"output {index}: {what}.counts is not a list: found {s.found()}")
                counts = self.counts_list(index, what)
            else:
                s.skip(inner)
            if not s.more_items(_RBRACE, inner):
                return counts

    def counts_sparse(self, index: int, what: str) -> np.ndarray:
        """A single-cell object gene id -> count; genes it leaves out count 0."""
        mapping, raw, at = self.s.decode_raw(f"{what} of output {index}")
        if "counts" in mapping:  # {"counts": [...]} with "counts" not first: the vendor reads the list
            counts = self.counts_from_python(mapping["counts"], raw, index, what, at)
            self.check_length(counts, index, what, at)
            return counts
        if self.n_genes is None:
            raise ResultError(f"output {index}: sparse {what} (gene id -> count) need a gene_order (at byte {at})")
        lookup = self.gene_index()
        try:
            columns = list(map(lookup.__getitem__, mapping))
        except KeyError:
            unknown = next(gene for gene in mapping if gene not in lookup)
            raise ResultError(
                f"output {index}: the sparse {what} name the gene {unknown!r}, "
                f"which is not in gene_order (at byte {at})"
            ) from None
        dense = np.zeros(self.n_genes, dtype=np.int64)
        if columns:
            dense[columns] = self.counts_from_python(list(mapping.values()), raw, index, what, at)
            if self._duplicates is not None:
                src, dst = self._duplicates
                dense[dst] = dense[src]
        return dense


class ResultReader:
    """An open result document: ``gene_order``, ``model_version`` and ``top_level`` are read
    on opening; :meth:`samples` streams the outputs.

    ``top_level`` holds every top-level key other than ``gene_order``, ``model_version`` and
    ``outputs``. Keys that come after ``outputs`` in the document (``model_version`` too) are
    read once the outputs have been (when ``outputs`` comes before ``gene_order``, everything
    is known at once); an ``error`` key found there raises at the end of :meth:`samples`.
    """

    def __init__(
        self,
        source: str | os.PathLike | BinaryIO,
        *,
        expected_samples: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        require_gene_order: bool = True,
        require_counts: bool = True,
    ):
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.require_gene_order = require_gene_order
        if isinstance(source, (str, bytes, os.PathLike)):
            self._file: BinaryIO = open(source, "rb", buffering=0)
            self._owns_file = True
        else:
            if isinstance(source, io.TextIOBase):
                raise TypeError("the result must be read from a binary file (open it with 'rb')")
            self._file = source
            self._owns_file = False
        try:
            self._seekable = bool(getattr(self._file, "seekable", lambda: False)())
            start = self._file.tell() if self._seekable else 0
            self._scanner = _Scanner(self._file, chunk_size, start)
            self.expected_samples = expected_samples
            self.gene_order: list[str] = []
            self.model_version: int | str | None = None
            self.top_level: dict[str, Any] = {}
            self._outputs_at = -1  # file offset of the '[' of outputs
            self._have_genes = False
            self._tail_known = False  # have the top-level keys after the outputs been read?
            self._fresh = True
            self._read_header()
            genes = self.gene_order if self._have_genes else None
            self._outputs = _OutputReader(self._scanner, genes, require_counts=require_counts)
        except BaseException:
            self.close()
            raise

    # --- context manager -------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> ResultReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def n_genes(self) -> int:
        return len(self.gene_order)

    @property
    def has_gene_order(self) -> bool:
        """Whether the document has a ``gene_order`` (always, unless opened with ``require_gene_order=False``)."""
        return self._have_genes

    def __iter__(self) -> Iterator[Sample]:
        return self.samples()

    # --- the top level ---------------------------------------------------------------------

    def _member(self, key: str, s: _Scanner) -> None:
        """Read one top-level value other than ``outputs``."""
        if key in ("error", "errors"):
            value = s.decode(f"the top-level {key!r}")
            raise ResultError(f"the result is an error: {_short(value)}")
        if key == "gene_order":
            at = s.offset
            genes = s.decode("gene_order")
            if not isinstance(genes, list) or not all(type(g) is str for g in genes):
                raise ResultError(f"gene_order is not a list of gene ids (at byte {at})")
            self.gene_order = genes
            self._have_genes = True
        elif key == "model_version":
            self.model_version = s.decode("model_version")
        else:
            self.top_level[key] = s.decode(f"the top-level {key!r}")

    def _read_header(self) -> None:
        s = self._scanner
        what = "the top-level object"
        if s.ws(what) != _LBRACE:
            s.fail(f"the result is not a JSON object: found {s.found()}")
        s.pos += 1
        if s.ws(what) == _RBRACE:
            s.pos += 1
        else:
            while True:
                key = s.key(what)
                s.expect(_COLON, f"after the top-level key {key!r}")
                c = s.ws(f"the top-level {key!r}")
                if key == "outputs":
                    if self._outputs_at >= 0:
                        s.fail("the result has two 'outputs' keys")
                    if c != _LBRACKET:
                        s.fail(f"'outputs' is not a list: found {s.found()}")
                    self._outputs_at = s.offset
                    if self._have_genes:
                        return  # stand at the outputs; the caller reads them
                    self._skip_outputs()
                else:
                    self._member(key, s)
                if not s.more_items(_RBRACE, "the result document"):
                    break
        if not s.at_eof():
            s.fail(f"unexpected data after the end of the result document: {s.found()}")
        if not self._have_genes and self.require_gene_order:
            raise ResultError("the result has no gene_order")
        if self._outputs_at < 0:
            raise ResultError("the result has no outputs")
        # The whole document was read: outputs came before gene_order. Go back to them.
        if not self._seekable:
            raise ResultError("the result lists its outputs before gene_order and the source is not seekable")
        s.reset(self._outputs_at)
        self._tail_known = True

    def _skip_outputs(self) -> None:
        """Walk over the outputs array (without parsing counts) to reach what follows."""
        s = self._scanner
        skipper = _OutputReader(s, [])
        s.pos += 1  # '['
        if s.ws("the outputs list") == _RBRACKET:
            s.pos += 1
            return
        index = 0
        while True:
            skipper.read(index, skip=True)
            index += 1
            if not s.more_items(_RBRACKET, "the outputs list"):
                return

    def _read_tail(self) -> None:
        """The top-level members after ``outputs``, then the end of the document."""
        s = self._scanner
        what = "the top-level object"
        while True:
            c = s.ws(what)
            if c == _RBRACE:
                s.pos += 1
                break
            if c != _COMMA:
                s.fail(f"malformed JSON: expected ',' or '}}' after the outputs, found {s.found()}")
            s.pos += 1
            key = s.key(what)
            s.expect(_COLON, f"after the top-level key {key!r}")
            s.ws(f"the top-level {key!r}")
            if key == "outputs":
                s.fail("the result has two 'outputs' keys")
            if key == "gene_order":
                s.skip(what)  # the outputs were read against the first one
            else:
                self._member(key, s)
        if not s.at_eof():
            s.fail(f"unexpected data after the end of the result document: {s.found()}")
        self._tail_known = True

    # --- the outputs -----------------------------------------------------------------------

    def samples(self, expected_samples: int | None = None) -> Iterator[Sample]:
        """Yield every output in document order.

        With ``expected_samples`` (here or given to :func:`open_result`), a document with
        another number of outputs raises :class:`ResultError` (before yielding an output
        beyond the expected number, or at the end). A truncated or malformed document always
        raises, at the point where the problem is found. Calling it again re-reads the
        outputs from the start (the source must then be seekable).
        """
        expected = self.expected_samples if expected_samples is None else expected_samples
        if expected is not None and (not isinstance(expected, int) or expected < 0):
            raise ValueError("expected_samples must be a non-negative integer")
        if not self._fresh:
            if not self._seekable:
                raise ResultError("the outputs were already read and the source is not seekable")
            self._scanner.reset(self._outputs_at)
        self._fresh = False
        return self._iterate(expected)

    def _iterate(self, expected: int | None) -> Iterator[Sample]:
        s = self._scanner
        outputs = self._outputs
        what = "the outputs list"
        s.expect(_LBRACKET, what)
        count = 0
        if s.ws(what) == _RBRACKET:
            s.pos += 1
        else:
            while True:
                if expected is not None and count >= expected:
                    raise ResultError(f"the result has more outputs than the {expected} expected (at byte {s.offset})")
                sample = outputs.read(count)
                count += 1
                yield sample
                if not s.more_items(_RBRACKET, what):
                    break
        if not self._tail_known:
            self._read_tail()
        if expected is not None and count != expected:
            raise ResultError(f"the result has {count} outputs, {expected} expected (truncated or incomplete result?)")


def open_result(
    source: str | os.PathLike | BinaryIO,
    *,
    expected_samples: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    require_gene_order: bool = True,
    require_counts: bool = True,
) -> ResultReader:
    """Open a result document (a path or a binary file object) for streaming.

    ``gene_order``, ``model_version`` and ``top_level`` are read at once; an ``error`` or
    ``errors`` key before the outputs, a missing ``gene_order`` or ``outputs`` raise
    :class:`ResultError` here. Use it as a context manager; a file object passed in is not
    closed.

    Metadata predictions may lack what expression results need: with ``require_gene_order``
    false a document without ``gene_order`` is read (its counts vectors must then all have
    the first one's length; sparse counts need the gene order); with ``require_counts`` false
    an output without counts gets an empty vector (GEM-2 predict-metadata has none).
    """
    return ResultReader(
        source,
        expected_samples=expected_samples,
        chunk_size=chunk_size,
        require_gene_order=require_gene_order,
        require_counts=require_counts,
    )


# --- whole-result conveniences ---------------------------------------------------------------


class _GrowingMatrix:
    """Rows of int64 written into a preallocated array.

    The array is allocated with ``np.empty`` at the first row (untouched rows of an
    over-estimate are never paged in), grows by 1.5x with a copy when the estimate was
    short, and is shrunk in place at the end.
    """

    def __init__(self, n_columns: int):
        self.n_columns = n_columns
        self.rows = 0
        self.array: np.ndarray | None = None

    def _allocate(self, capacity: int) -> None:
        array = np.empty((capacity, self.n_columns), dtype=np.int64)
        if self.rows:
            array[: self.rows] = self.array[: self.rows]
        self.array = array

    def append(self, row: np.ndarray, estimate: Callable[[], int]) -> None:
        if self.array is None:
            self._allocate(max(estimate(), 1))
        elif self.rows == self.array.shape[0]:
            self._allocate(max(self.rows * 3 // 2, self.rows + 16))
        self.array[self.rows] = row
        self.rows += 1

    def finish(self) -> np.ndarray:
        if self.array is None:
            return np.empty((0, self.n_columns), dtype=np.int64)
        if self.array.shape[0] != self.rows:
            self.array.resize((self.rows, self.n_columns), refcheck=False)  # shrinks: no copy, no fill
        return self.array


def _remaining_bytes(reader: ResultReader) -> int | None:
    try:
        return os.fstat(reader._file.fileno()).st_size - reader._scanner.offset
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def to_frames(
    source: str | os.PathLike | BinaryIO,
    *,
    as_counts: bool = True,
    result_kind: str = EXPRESSION,
    expected_samples: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, pd.DataFrame]:
    """Read a whole result into the DataFrames the vendor's client (pysynthbio 4.2.4) builds.

    ``result_kind`` (:data:`~synthbio_pipeline.vocabulary.families.RESULT_KINDS`; a model id's
    is :func:`~synthbio_pipeline.vocabulary.families.result_kind`) picks the layout:

    - ``expression`` (GEM-1): ``metadata`` (one row per sample), ``expression`` (samples ×
      genes, columns = gene_order, int64 counts; log1p-CPM floats when ``as_counts`` is
      false) and ``latents`` (a list per latent key; an empty DataFrame when no output has
      latents). Unlike the vendor's client, an output without latents in a result where
      others have them gets an empty row, so latents rows stay aligned with samples.
    - ``metadata-prediction`` (GEM-1): ``metadata``, ``latents``, ``classifier_probs`` and
      ``expression`` (the decoder sample's counts); ``gene_order`` is optional (integer
      column labels without it).
    - ``gem-2-expression``: as ``expression``, but every output has a ``metadata`` and a
      ``latents`` row (empty where null or absent), so all three frames line up.
    - ``gem-2-metadata-prediction``: ``metadata`` (the ``predicted_metadata``), ``latents``,
      ``classifier_probs`` (the ``classifier_probabilities``) and an ``expression`` of n
      rows and no columns; no counts and no gene_order needed.
    - ``gem-2-autoencode``: as ``gem-2-expression``, plus ``provenance`` (``model_release_id``
      and ``vae_run_id`` per sample; ``None`` where an output lacks one).
    """
    import pandas as pd

    if result_kind not in RESULT_KINDS:
        raise ValueError(f"result_kind must be one of {', '.join(RESULT_KINDS)}, not {result_kind!r}")
    predicted = result_kind in (METADATA_PREDICTION, GEM2_METADATA_PREDICTION)
    has_counts = result_kind != GEM2_METADATA_PREDICTION
    gem2 = result_kind in (GEM2_EXPRESSION, GEM2_METADATA_PREDICTION, GEM2_AUTOENCODE)
    metadata_rows: list[dict] = []
    latents_rows: list[dict | None] = []
    probs_rows: list[Any] = []
    provenance_rows: list[dict] = []
    n = 0
    with open_result(
        source,
        expected_samples=expected_samples,
        chunk_size=chunk_size,
        require_gene_order=not predicted,
        require_counts=has_counts,
    ) as reader:
        genes = reader.gene_order if reader.has_gene_order and (reader.gene_order or not predicted) else None
        matrix = _GrowingMatrix(len(genes)) if genes is not None else None

        def estimate() -> int:
            """Rows to allocate at the first output: the expected number, or the file's
            size over the first output's share of it (bulk outputs are all alike)."""
            used = reader._scanner.offset - reader._outputs_at
            remaining = _remaining_bytes(reader)
            guess = int(remaining / used * 1.05) + 2 if remaining is not None and used > 0 else None
            if expected_samples is not None:
                # A wrong expected_samples must end in a ResultError, not a MemoryError.
                return expected_samples if guess is None else min(expected_samples, max(4 * guess, 64))
            return 64 if guess is None else guess

        for sample in reader.samples():
            n += 1
            if has_counts:
                if matrix is None:  # no gene_order: the first vector says how many values
                    matrix = _GrowingMatrix(len(sample.counts))
                matrix.append(sample.counts, estimate)
            if result_kind == GEM2_METADATA_PREDICTION:
                metadata_rows.append(sample.predicted_metadata or {})
                probs_rows.append(sample.extra.get("classifier_probabilities") or {})
            else:
                metadata_rows.append(sample.metadata)
                if predicted:
                    probs_rows.append(sample.extra.get("classifier_probs") or {})
            latents_rows.append(sample.latents)
            if result_kind == GEM2_AUTOENCODE:
                provenance_rows.append(sample.provenance)
    metadata = pd.DataFrame(metadata_rows)
    if predicted or gem2 or any(row is not None for row in latents_rows):
        latents = pd.DataFrame([row if row is not None else {} for row in latents_rows])
    else:
        latents = pd.DataFrame()
    if not has_counts:
        expression = pd.DataFrame(index=range(n))
    else:
        counts = matrix.finish() if matrix is not None else np.empty((0, 0), dtype=np.int64)
        values = counts if as_counts else log_cpm(counts)
        del counts
        expression = pd.DataFrame(values, columns=genes, copy=False)
    if predicted:
        return {
            "metadata": metadata,
            "latents": latents,
            "classifier_probs": pd.DataFrame(probs_rows),
            "expression": expression,
        }
    frames = {"metadata": metadata, "expression": expression, "latents": latents}
    if result_kind == GEM2_AUTOENCODE:
        frames["provenance"] = pd.DataFrame(provenance_rows)
    return frames


def log_cpm(counts: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
    """log1p(counts / row sum * 1e6), per row (sample); a row that sums to 0 gives 0s.

    Takes a 2-D array (a 1-D array is one sample) or a DataFrame, whose index and
    columns are kept. Always returns float64 and never modifies its input.
    """
    pd = sys.modules.get("pandas")  # a DataFrame means pandas is imported already; never import it here
    if pd is not None and isinstance(counts, pd.DataFrame):
        values = counts.to_numpy(dtype=np.float64, copy=True)
        return pd.DataFrame(_log_cpm_rows(values), index=counts.index, columns=counts.columns, copy=False)
    array = np.asarray(counts)
    if array.ndim == 1:
        return _log_cpm_rows(array.astype(np.float64)[None, :])[0]
    if array.ndim != 2:
        raise ValueError(f"log_cpm takes a 1-D or 2-D array, not {array.ndim}-D")
    return _log_cpm_rows(array.astype(np.float64))


def _log_cpm_rows(values: np.ndarray) -> np.ndarray:
    """In place on a float64 array of its own."""
    totals = values.sum(axis=1, keepdims=True)
    empty = totals[:, 0] == 0
    totals[empty] = 1.0
    values /= totals
    values *= 1e6
    np.log1p(values, out=values)
    values[empty] = 0.0
    return values
