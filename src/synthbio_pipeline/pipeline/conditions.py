"""The conditions table: one row per biological condition, one model query per row.

    condition   num_samples  tissue_ontology_id  sex   modality  mode
    lung_m      4            UBERON:0002048      male  bulk      sample generation

``condition`` and ``num_samples`` are required; every metadata key of the API may be a
column (an empty cell means "not set"); ``modality``, ``mode`` (or its synonym
``sampling_strategy``), ``model_id`` and the query options (``seed``, ``total_count``,
``deterministic_latents``, ``conditioning``, ``fixed_total_count``) override the defaults per
row. A row with a ``reference`` (a counts file) and ``reference_sample`` (a sample in it) is
reference-conditioned: it uses the modality's reference-conditioning model, and its metadata
may only be perturbation keys (the rest is inferred from the reference). The files
themselves are checked by :mod:`synthbio_pipeline.pipeline.references`. :func:`read_conditions` checks
the whole table before anything is sent and raises one :class:`ConditionsError` listing
every problem with its file, line, condition and column. The vocabulary and its rules live
in :mod:`synthbio_pipeline.vocabulary`: each row is turned into a query, checked there, and
each problem's query path is mapped back to the column it came from.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.files import atomic_path, size_text
from synthbio_pipeline.vocabulary.families import (
    AUTOENCODE,
    FROM_REFERENCE,
    GEM2,
    GEM2_MODEL_IDS,
    GEM2_OPERATION_BY_NAME,
    PREDICT_EXPRESSION,
    gem2_model,
    output_group,
)
from synthbio_pipeline.vocabulary.gem2 import (
    GEM2_TABLE_KEYS,
    GENE_PERTURBATION,
    PERTURBATION_COLUMNS,
    gem2_body,
    gem2_item,
    gem2_modes,
    gem2_problems,
    perturbation_lists,
)
from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS, MetadataKey, metadata_value_problem
from synthbio_pipeline.vocabulary.models import (
    BASELINE,
    DEFAULT_MODALITY,
    MODALITY_MODELS,
    MODELS,
    REFERENCE_CONDITIONING,
    REFERENCE_MODELS,
    get_model,
    is_known_model,
)
from synthbio_pipeline.vocabulary.options import (
    ALL_OPTIONS,
    BOOLEAN,
    FALSE_WORDS,
    LIST,
    LIST_SEPARATOR,
    QUERY_OPTIONS,
    TRUE_WORDS,
)
from synthbio_pipeline.vocabulary.query import CLIENT_SOURCE, MODEL_FIELDS, WIRE_MODE, query_problems, to_wire
from synthbio_pipeline.vocabulary.values import parse_finite, parse_whole, too_long
from synthbio_pipeline.vocabulary.words import did_you_mean, quoted

CONDITION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
CONDITION_RULE = "1-100 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit"
#: More samples than this in one condition is almost surely a typo (and would be costly).
MAX_SAMPLES_PER_CONDITION = 10_000
#: Rows a table may have (config ``max_table_rows``): a larger one is refused before it is all read.
MAX_TABLE_ROWS = 20_000
#: Bytes per row a table may average: a file larger than (rows + 1) × this is refused unread.
MAX_BYTES_PER_ROW = 4096
#: Names Windows reserves for devices, with or without an extension (``nul.txt``): no file may have them.
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
)
REQUIRED_COLUMNS = ("condition", "num_samples")
#: The columns that override the config's defaults: the model's fields, then the query options.
OPTION_COLUMNS = (*MODEL_FIELDS, *ALL_OPTIONS)
#: A reference-conditioned row's counts file (relative to the working directory) and its sample.
REFERENCE_COLUMNS = ("reference", "reference_sample")
#: The column naming a row's model (any id of the model table, GEM-2's included); ``model_id``
#: is its synonym. Empty: the GEM-1 model of the row's modality.
MODEL_COLUMN = "model"
#: The GEM-2 operation of a ``gem-2`` row (a compatibility id names its own).
OPERATION_COLUMN = "operation"
#: Columns only GEM-2 rows take: its metadata keys that GEM-1 lacks, the perturbation columns
#: and the operation.
GEM2_ONLY_COLUMNS = (
    *(key for key in GEM2_TABLE_KEYS if key not in METADATA_KEYS),
    *PERTURBATION_COLUMNS,
    OPERATION_COLUMN,
)
#: The GEM-2 operations a table row runs: from metadata, and from a reference sample's counts
#: (``reference``/``reference_sample``) moved to the row's metadata or autoencoded.
TABLE_GEM2_OPERATIONS = (PREDICT_EXPRESSION, FROM_REFERENCE, AUTOENCODE)
#: The GEM-2 operations whose items carry a sample's counts (a reference row's).
GEM2_COUNTS_OPERATIONS = tuple(o for o in TABLE_GEM2_OPERATIONS if "counts" in GEM2_OPERATION_BY_NAME[o].item_keys)
#: The kinds of GEM-1 model a table row runs (metadata prediction is an output, not a row).
TABLE_GEM1_KINDS = (BASELINE, REFERENCE_CONDITIONING)
#: GEM-1 ids the table runs, for messages.
TABLE_GEM1_IDS = tuple(spec.model_id for spec in MODELS if spec.kind in TABLE_GEM1_KINDS)
#: GEM-2 compatibility ids the table runs, for messages.
TABLE_GEM2_IDS = tuple(
    row.model_id for row in GEM2_MODEL_IDS.values() if row.operation in TABLE_GEM2_OPERATIONS and row.member is None
)


@dataclass(frozen=True)
class TableProblem:
    """One problem in the table: where (file, line, condition, column) and what."""

    file: str
    line: int | None
    column: str | None
    message: str
    condition: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        if self.condition:
            where += f" (condition {self.condition!r})"
        if self.column:
            where += f", column {self.column!r}"
        return f"{where}: {self.message}"


class _Problems(list):
    """The problems found so far in one file."""

    def __init__(self, file: Path):
        super().__init__()
        self.file = str(file)

    def add(self, line, column, message, condition=None) -> None:
        self.append(TableProblem(self.file, line, column, message, condition))


class ConditionsError(SynthbioError, ValueError):
    def __init__(self, problems: list[TableProblem]):
        self.problems = list(problems)
        lines = [f"the conditions table has {len(self.problems)} problem(s); nothing was sent:"]
        lines += [f"- {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Condition:
    """One validated row: everything needed to build its model query."""

    name: str
    row: int
    modality: str
    model_id: str
    mode: str | None
    num_samples: int
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The query options (seed, total_count, ...) set by the row or a config default.
    options: dict[str, Any] = field(default_factory=dict)
    #: A reference-conditioned row's counts file, as the table gives it, and its sample (None:
    #: the file's only sample).
    reference: str | None = None
    reference_sample: str | None = None
    #: The GEM-2 operation of a GEM-2 row; ``None`` for GEM-1.
    operation: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.reference is not None

    @property
    def is_gem2(self) -> bool:
        return self.operation is not None

    @property
    def family(self) -> str:
        return GEM2 if self.is_gem2 else "gem-1"

    @property
    def group(self) -> str:
        """The output group its samples merge into (``bulk``, ``gem-2-bulk``, ...): one gene
        order and one model family per merged matrix."""
        return output_group(self.model_id, self.modality)

    def query(self, counts: list[int] | None = None) -> dict[str, Any]:
        """The user-facing query of this condition (rsynthbio's vocabulary).

        A reference row's input carries ``counts``, the reference aligned to the model's gene
        order (:mod:`synthbio_pipeline.pipeline.references`); without them the query has none.
        A GEM-2 row's query is its wire body with its ``model_id``.
        """
        if self.is_gem2:
            return {"model_id": self.model_id, **self.wire_body()}
        query: dict[str, Any] = {"model_id": self.model_id, "modality": self.modality}
        if self.mode is not None:
            query["mode"] = self.mode
        item: dict[str, Any] = {"metadata": dict(self.metadata), "num_samples": self.num_samples}
        if counts is not None:
            item = {"counts": counts, **item}
        query["inputs"] = [item]
        return {**query, **self.options}

    def wire_body(self, counts: list[int] | None = None) -> dict[str, Any]:
        """The exact JSON body of ``POST /api/models/{model_id}/predict`` (a reference row's
        without its ``counts`` unless they are given); a GEM-2 row's in GEM-2's shape."""
        if self.is_gem2:
            return gem2_body(
                self.operation,
                self.modality,
                [
                    table_gem2_item(
                        self.operation, self.metadata, self.num_samples, self.options.get("total_count"), counts
                    )
                ],
                seed=self.options.get("seed"),
                sampling_strategy=self.mode if GEM2_OPERATION_BY_NAME[self.operation].draws_samples else None,
                source=CLIENT_SOURCE,
            )
        return to_wire(self.query(counts), validate=False)[1]


def table_gem2_item(
    operation: str,
    metadata: Mapping[str, Any],
    num_samples: Any,
    output_total: int | None = None,
    counts: list[int] | None = None,
) -> dict[str, Any]:
    """A GEM-2 row's one item, with only the keys its operation takes: ``autoencode`` takes a
    sample's counts (and the library size) and no metadata or ``num_samples``."""
    spec = GEM2_OPERATION_BY_NAME[operation]
    item = gem2_item(metadata, num_samples, output_total if spec.takes_output_total else None)
    allowed = spec.item_keys + spec.optional_item_keys
    if "metadata" not in allowed or (not metadata and "metadata" not in spec.item_keys):
        item.pop("metadata")
    if "num_samples" not in allowed:
        item.pop("num_samples")
    if counts is not None:
        item = {"counts": counts, **item}
    return item


def read_conditions(
    path: str | Path, defaults: Mapping[str, Any] | None = None, *, max_rows: int = MAX_TABLE_ROWS
) -> list[Condition]:
    """Read and check a conditions table (TSV, or CSV by its ``.csv`` name).

    A table of more than ``max_rows`` rows (or a file too large to hold that many) is refused
    before it is read in full.
    """
    path = Path(path)
    defaults = {key: value for key, value in (defaults or {}).items() if value is not None}
    problems = _Problems(path)
    rows = _read_rows(path, problems, max_rows)
    if rows is None:
        raise ConditionsError(problems)
    header, records = rows
    _check_header(header, problems)
    if problems:
        raise ConditionsError(problems)

    conditions, seen = [], {}
    for line, cells in records:
        record = dict(zip(header, cells))
        condition = _condition_of(record, line, defaults, problems, seen)
        if condition is not None:
            conditions.append(condition)
    if not records:
        problems.add(None, None, "the table has a header but no conditions")
    if problems:
        raise ConditionsError(problems)
    return conditions


def write_query(condition: Condition, path: str | Path, counts: list[int] | None = None) -> None:
    """Write a condition's wire body as JSON, atomically (a reference row's with its ``counts``,
    on one line: 44,590 numbers one per line would be a 300,000-line file)."""
    if condition.is_reference and counts is None:
        raise ValueError(f"condition {condition.name!r} has a reference: its query needs the aligned counts")
    body = condition.wire_body(counts)
    # allow_nan=False: NaN or infinity never reaches a query file (JSON has no such numbers).
    if counts is None:
        text = json.dumps(body, indent=2, ensure_ascii=False, allow_nan=False)
    else:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    with atomic_path(path) as temporary:
        temporary.write_text(text + "\n")


# --- reading ---------------------------------------------------------------------------


def _read_rows(
    path: Path, problems: _Problems, max_rows: int = MAX_TABLE_ROWS
) -> tuple[list[str], list[tuple[int, list[str]]]] | None:
    limit = (max_rows + 1) * MAX_BYTES_PER_ROW
    try:
        size = path.stat().st_size
        if size > limit:
            problems.add(
                None,
                None,
                f"the file is {size_text(size)}, more than a table of {max_rows:,} row{'' if max_rows == 1 else 's'} "
                "should take "
                f"({size_text(limit)} at most); nothing was read. Split the table, or raise max_table_rows "
                "in the config if you mean to run this many conditions",
            )
            return None
        raw = path.read_bytes()
    except OSError as error:
        problems.add(None, None, f"cannot read the file: {error.strerror}")
        return None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is dropped, not taken for part of a name
    except UnicodeDecodeError as error:
        problems.add(None, None, f"not UTF-8 text (byte {error.start}); save the table as UTF-8")
        return None
    if not text.strip():
        problems.add(
            None, None, "the file is empty; expected a header line naming at least 'condition' and 'num_samples'"
        )
        return None
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    first_line = text.lstrip("\r\n").splitlines()[0]
    if delimiter not in first_line:
        other = "," if delimiter == "\t" else "\t"
        hint = (
            f"; it looks {'comma' if other == ',' else 'tab'}-separated: "
            f"{'name the file .csv' if other == ',' else 'name the file .tsv'} or save it "
            f"{'tab' if delimiter == chr(9) else 'comma'}-separated"
            if other in first_line
            else ""
        )
        kind = "tab" if delimiter == "\t" else "comma"
        problems.add(1, None, f"the header has no {kind}: a {path.suffix or 'table'} file is {kind}-separated{hint}")
        return None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records = []
    header: list[str] | None = None
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are allowed anywhere
            if header is None:
                header = [cell.strip() for cell in cells]
                continue
            if len(cells) != len(header):
                problems.add(reader.line_num, None, f"{len(cells)} fields, but the header has {len(header)}")
                continue
            records.append((reader.line_num, cells))
            if len(records) > max_rows:
                problems.add(
                    reader.line_num,
                    None,
                    f"the table has more than {max_rows:,} rows (the limit; the rest was not read): split it, "
                    "or raise max_table_rows in the config if you mean to run this many conditions",
                )
                return None
    except csv.Error as error:
        problems.add(reader.line_num, None, f"malformed table: {error}")
        return None
    return header or [], records


def _check_header(header: list[str], problems: _Problems) -> None:
    for column in REQUIRED_COLUMNS:
        if column not in header:
            hint = did_you_mean(column, [name for name in header if name])
            problems.add(1, column, f"required column is missing{hint}")
    seen = set()
    for position, name in enumerate(header, start=1):
        if not name:
            problems.add(1, None, f"column {position} has no name")
        elif name in seen:
            problems.add(1, name, "the column appears twice")
        elif name not in KNOWN_COLUMNS:
            hint = did_you_mean(name, KNOWN_COLUMNS)
            allowed = "; allowed: condition, num_samples, the API metadata keys (GEM-1's and GEM-2's) and " + ", ".join(
                (MODEL_COLUMN, *OPTION_COLUMNS, *REFERENCE_COLUMNS, *PERTURBATION_COLUMNS, OPERATION_COLUMN)
            )
            problems.add(1, name, f"unknown column{hint or allowed}")
        seen.add(name)
    if MODEL_COLUMN in header and "model_id" in header:
        problems.add(1, "model_id", f"give {MODEL_COLUMN!r} or its synonym 'model_id', not both")
    if "mode" in header and WIRE_MODE in header:
        problems.add(1, WIRE_MODE, f"give 'mode' or its synonym {WIRE_MODE!r}, not both")


KNOWN_COLUMNS = (
    *REQUIRED_COLUMNS,
    MODEL_COLUMN,
    *OPTION_COLUMNS,
    *REFERENCE_COLUMNS,
    *METADATA_KEYS,
    *(key for key in GEM2_TABLE_KEYS if key not in METADATA_KEYS),
    *PERTURBATION_COLUMNS,
    OPERATION_COLUMN,
)

# --- one row ---------------------------------------------------------------------------


def _condition_of(
    record: dict[str, str], line: int, defaults: Mapping[str, Any], problems: _Problems, seen
) -> Condition | None:
    raw_name = record["condition"]
    name = raw_name.strip()
    before = len(problems)

    def bad(column, message):
        problems.add(line, column, message, name or None)

    if not name:
        bad("condition", f"empty; every row needs a condition id ({CONDITION_RULE})")
    elif raw_name != name:
        bad("condition", f"{raw_name!r} has leading or trailing whitespace; ids are {CONDITION_RULE}")
    elif not CONDITION_PATTERN.fullmatch(name):
        bad("condition", f"{name!r} is not a valid id: use {CONDITION_RULE} (it becomes part of file paths)")
    elif portable_name_problem(name):
        bad("condition", portable_name_problem(name))
    elif name.lower() in seen:
        first, first_line = seen[name.lower()]
        if first == name:
            bad("condition", f"duplicate id {name!r}: also on line {first_line}")
        else:
            bad(
                "condition",
                f"duplicate id {name!r}: {first!r} on line {first_line} differs only in case, and on "
                "case-insensitive file systems (macOS, Windows) both would write the same files",
            )
    else:
        seen[name.lower()] = (name, line)

    cells = {column: value.strip() for column, value in record.items() if value.strip() != ""}
    reference, reference_sample = cells.get("reference"), cells.get("reference_sample")
    if reference_sample is not None and reference is None:
        bad("reference_sample", "names a sample of a reference file: give the file in the 'reference' column too")
    model_column = MODEL_COLUMN if MODEL_COLUMN in cells else "model_id"
    model_id = cells.get(model_column)
    if model_id is not None and model_id.startswith(GEM2):
        if gem2_model(model_id) is None:
            hint = did_you_mean(model_id, list(GEM2_MODEL_IDS))
            bad(
                model_column,
                f"unknown GEM-2 model id {model_id!r}{hint or f'; the table runs {quoted(TABLE_GEM2_IDS)}'}",
            )
            return None
        return _gem2_condition(cells, name, line, defaults, model_id, model_column, bad, problems, before)
    for column in GEM2_ONLY_COLUMNS:
        if column in cells:
            which = model_id or "its modality's GEM-1 model"
            bad(
                column,
                f"a GEM-2 column: the row's model ({which}) does not take it; "
                f"set the row's {MODEL_COLUMN!r} to a GEM-2 id (gem-2-bulk, gem-2-sc, ...) or leave the cell empty",
            )
    if model_id is not None and not is_known_model(model_id):
        hint = did_you_mean(model_id, [*TABLE_GEM1_IDS, *TABLE_GEM2_IDS])
        bad(
            model_column,
            f"unknown model id {model_id!r}{hint or f'; the table runs {quoted(TABLE_GEM1_IDS)} and GEM-2 ids'}",
        )
        return None
    if model_id is not None and get_model(model_id).kind not in TABLE_GEM1_KINDS:
        bad(
            model_column,
            f"{model_id} answers metadata, not samples: the conditions table runs {quoted(TABLE_GEM1_IDS)} "
            "(and GEM-2 ids); predict the rows' metadata with outputs: predicted_metadata, a counts file's with "
            "an 'annotate:' entry of the config (config/README.md)",
        )
        return None
    modality, modality_column = _pick(cells, defaults, "modality")
    mode, mode_column = _pick(cells, defaults, "mode", synonym=WIRE_MODE)
    if model_id is not None:
        # The model names its modality: a row's cell must agree, a config default gives way.
        own = get_model(model_id).modality
        if "modality" in cells and cells["modality"] != own:
            bad("modality", f"{model_id} is for {own!r}, the row says {cells['modality']!r}")
        modality, modality_column = own, model_column
    elif modality is None:
        modality = DEFAULT_MODALITY
    if model_id and is_known_model(model_id):
        kind = get_model(model_id).kind
        takes = get_model(model_id).options
        if reference is not None and kind != REFERENCE_CONDITIONING:
            bad(model_column, f"a row with a reference needs a reference-conditioning model, not {model_id} ({kind})")
        elif reference is None and kind == REFERENCE_CONDITIONING:
            bad("reference", f"model {model_id} generates from a reference sample: give its counts file here")
    else:
        kind = REFERENCE_CONDITIONING if reference is not None else BASELINE
        takes = None
    models = REFERENCE_MODELS if reference is not None else MODALITY_MODELS
    model_id = model_id or models.get(modality)
    if takes is None:
        takes = get_model(model_id).options if model_id and is_known_model(model_id) else ()
    if mode is None and model_id and is_known_model(model_id):
        mode = get_model(model_id).default_mode

    query: dict[str, Any] = {"modality": modality}
    if model_id:
        query["model_id"] = model_id
    if mode is not None:
        query["mode"] = mode
    hint = "give the row a reference" if kind != REFERENCE_CONDITIONING else f"{model_id} does not take it"
    options, columns = _read_options(
        cells,
        defaults,
        bad,
        (*QUERY_OPTIONS, *takes),
        lambda key: f"only rows with a reference take {key!r} ({hint}, or leave the cell empty)",
    )
    columns |= {"modality": modality_column, "mode": mode_column, "model_id": model_column}
    if (
        reference is not None
        and "total_count" in cells
        and options.get("fixed_total_count") is not True
        and not any(problem.column == "fixed_total_count" for problem in problems[before:])
    ):
        bad(
            "total_count",
            "a reference row keeps its reference's library size unless fixed_total_count is true: "
            "set fixed_total_count to true, or leave total_count empty",
        )
    metadata = {key: _parse_metadata(key, value) for key, value in cells.items() if key in METADATA_KEYS}
    num_samples = _parse_int(cells.get("num_samples", ""))
    if _too_long(num_samples, "num_samples", bad):
        num_samples = 1  # a stand-in, so that the row's other cells are still checked
    query.update(options)
    query["inputs"] = [{"metadata": metadata, "num_samples": num_samples}]

    for found in query_problems(query):
        path = found.path
        if path.startswith("inputs[0].counts"):
            continue  # a reference row's counts come from its file, checked with it
        if path.startswith("inputs[0].metadata."):
            bad(path.split(".", 2)[2], found.message)
        elif path == "inputs[0].num_samples":
            _num_samples_problem(num_samples, found.message, bad)
        else:
            _report_at(bad, columns.get(path) or path, path, found.message)
    _check_sample_cap(num_samples, bad)
    if len(problems) > before:
        return None
    return Condition(
        name=name,
        row=line,
        modality=query["modality"],
        model_id=model_id,
        mode=mode,
        num_samples=num_samples,
        metadata=metadata,
        options=options,
        reference=reference,
        reference_sample=reference_sample,
    )


def _gem2_condition(
    cells: dict[str, str], name, line, defaults: Mapping[str, Any], model_id, model_column, bad, problems, before
) -> Condition | None:
    """A GEM-2 row: its metadata columns and perturbation columns, checked by GEM-2's rules
    on the body it sends (:func:`~synthbio_pipeline.vocabulary.gem2.gem2_problems`), each
    problem told at the column it came from."""
    row = gem2_model(model_id)
    operation = row.operation or cells.get(OPERATION_COLUMN) or PREDICT_EXPRESSION
    reference = cells.get("reference")
    if row.operation is not None and cells.get(OPERATION_COLUMN, row.operation) != row.operation:
        bad(
            OPERATION_COLUMN,
            f"{model_id} runs {row.operation!r}, the row says {cells[OPERATION_COLUMN]!r}; "
            f"use model {GEM2} to name the operation, or leave the cell empty",
        )
        return None
    if operation not in TABLE_GEM2_OPERATIONS and operation in GEM2_OPERATION_BY_NAME:
        column = OPERATION_COLUMN if row.operation is None else model_column
        bad(
            column,
            f"{operation!r} answers metadata, not samples: the conditions table runs GEM-2's "
            f"{quoted(TABLE_GEM2_OPERATIONS)}; predict a counts file's metadata with an 'annotate:' entry "
            "of the config (config/README.md)",
        )
        return None
    reads_counts = operation in GEM2_COUNTS_OPERATIONS
    if reads_counts and reference is None:
        bad("reference", f"{model_id} ({operation}) reads a sample's counts: give its counts file here")
    elif not reads_counts and ("reference" in cells or "reference_sample" in cells):
        column = "reference" if "reference" in cells else "reference_sample"
        bad(
            column,
            f"{model_id} ({operation}) generates from metadata: a row with a reference runs "
            f"{FROM_REFERENCE!r} (gem-2-bulk_reference-conditioning, ...) or {AUTOENCODE!r}",
        )
    modality, modality_column = _pick(cells, defaults, "modality")
    if row.modality is not None:
        if "modality" in cells and cells["modality"] != row.modality:
            bad("modality", f"{model_id} is for {row.modality!r}, the row says {cells['modality']!r}")
        modality, modality_column = row.modality, model_column
    elif modality is None:
        modality = DEFAULT_MODALITY
    mode, mode_column = _pick(cells, defaults, "mode", synonym=WIRE_MODE)
    if mode is None and modality in MODALITY_MODELS:
        mode = gem2_modes(modality)[0]
    options, columns = _read_options(
        cells,
        defaults,
        bad,
        ("seed", "total_count"),
        lambda key: f"{model_id} (GEM-2) does not take {key!r}; its options are seed, total_count and mode",
    )
    columns |= {"modality": modality_column, "mode": mode_column, "operation": OPERATION_COLUMN}
    metadata: dict[str, Any] = {}
    for key, value in cells.items():
        if key in GEM2_TABLE_KEYS:
            metadata[key] = _parse_metadata(key, value, GEM2_TABLE_KEYS)
        elif key in METADATA_KEYS:
            allowed = ", ".join((*GEM2_TABLE_KEYS, *PERTURBATION_COLUMNS))
            hint = " (GEM-2 names the tissue: column 'tissue')" if key == "tissue_ontology_id" else ""
            bad(key, f"a GEM-1 metadata key: {model_id} (GEM-2) does not take it{hint}; its columns are {allowed}")
    lists, sources = perturbation_lists(cells)
    for index, element in enumerate(lists.get("gene_perturbations", [])):
        message = metadata_value_problem(GENE_PERTURBATION, element[GENE_PERTURBATION.name])
        if message:
            bad("gene_perturbations", f"gene {index + 1}: {message}")
    metadata.update(lists)
    spec = GEM2_OPERATION_BY_NAME.get(operation)
    if spec is not None and not spec.draws_samples:
        # One output per item: the row's sample, encoded and decoded.
        if cells.get("num_samples") != "1":
            bad("num_samples", f"{operation!r} answers one output per reference sample: num_samples must be 1")
        num_samples = 1
        if "mode" in cells or WIRE_MODE in cells:
            bad(
                "mode" if "mode" in cells else WIRE_MODE,
                f"{operation!r} draws no samples: it takes no sampling strategy",
            )
        mode = None
    else:
        num_samples = _parse_int(cells.get("num_samples", ""))
    if _too_long(num_samples, "num_samples", bad):
        num_samples = 1  # a stand-in, so that the row's other cells are still checked
    if spec is not None and "metadata" not in spec.item_keys + spec.optional_item_keys:
        columns_given = {key: key for key in metadata} | {s: s for s in sources.values()}
        for column in columns_given:
            if column not in lists:
                bad(column, f"{operation!r} takes no metadata: the sample's counts say it all")
    item = (
        table_gem2_item(operation, metadata, num_samples, options.get("total_count"))
        if spec is not None
        else gem2_item(metadata, num_samples, options.get("total_count"))
    )
    body = gem2_body(
        operation,
        modality,
        [item],
        seed=options.get("seed"),
        sampling_strategy=mode,
    )
    item = "inputs.items[0]."
    for found in gem2_problems(model_id, body):
        path, message = found.path, found.message
        if path == item + "counts":
            continue  # a reference row's counts come from its file, checked with it
        if path.startswith(item + "metadata."):
            rest = path[len(item + "metadata.") :]
            column = sources.get(rest.split(".")[0], rest.split("[")[0].split(".")[0])
            if column == "gene_perturbations" and any(p.column == column for p in problems[before:]):
                continue
            bad(column, message)
            continue
        if path == item + "num_samples":
            _num_samples_problem(num_samples, message, bad)
            continue
        key = {
            "options.seed": "seed",
            "options.sampling_strategy": "mode",
            "inputs.modality": "modality",
            "operation": "operation",
        }.get(path, "total_count" if path.startswith(item + "output_total") else path)
        _report_at(bad, columns.get(key, key), key, message)
    _check_sample_cap(num_samples, bad)
    if len(problems) > before:
        return None
    return Condition(
        name=name,
        row=line,
        modality=modality,
        model_id=model_id,
        mode=mode,
        num_samples=num_samples,
        metadata=metadata,
        options=options,
        reference=reference,
        reference_sample=cells.get("reference_sample") if reference is not None else None,
        operation=operation,
    )


def _read_options(cells: Mapping[str, str], defaults, bad, takes, refusal: Callable[[str], str]) -> tuple[dict, dict]:
    """A row's query options (its cell, else the config default), parsed; and the column each
    came from. An option the row does not take (not in ``takes``) is dropped: set in the row's
    own cell it is refused with ``refusal(key)``; a config default of it is for other rows."""
    options, columns = {}, {}
    for key, option in ALL_OPTIONS.items():
        value, column = _pick(cells, defaults, key)
        if _too_long(value, column, bad, key) or value is None:
            continue
        if key not in takes:
            if column == key:
                bad(key, refusal(key))
            continue
        options[key] = _parse_option(option.type, value)
        columns[key] = column
    return options, columns


def _too_long(value: Any, column: str, bad, key: str | None = None) -> bool:
    """Refuse a text value too long to be checked further at ``column`` (a config default's at
    the row's ``key``, naming the default); whether it was."""
    if isinstance(value, str) and too_long(value):
        _report_at(bad, column, key or column, f"{value[:20]}... {too_long(value)}")
        return True
    return False


def _report_at(bad, column: str, key: str, message: str) -> None:
    """Report a problem at the column it came from; a config default is named as the source."""
    if column.startswith("config defaults."):
        bad(key, f"{message} (the value is {column}; set this row's {key!r} to override it)")
    else:
        bad(column, message)


def _num_samples_problem(num_samples: Any, message: str, bad) -> None:
    """Report the query's problem with ``num_samples``; an empty cell is told it is required."""
    bad("num_samples", "required: a whole number of at least 1" if num_samples == "" else message)


def _check_sample_cap(num_samples: Any, bad) -> None:
    if isinstance(num_samples, int) and num_samples > MAX_SAMPLES_PER_CONDITION:
        bad(
            "num_samples",
            f"{num_samples:,} is more than {MAX_SAMPLES_PER_CONDITION:,} samples in one condition; "
            "split it into several conditions if you mean it",
        )


def _pick(cells: Mapping[str, str], defaults: Mapping[str, Any], key: str, synonym: str | None = None):
    """A row's value of ``key`` (or its synonym), else the config default; and where it came from."""
    for column in (key, synonym):
        if column and column in cells:
            return cells[column], column
    if key in defaults:
        return defaults[key], f"config defaults.{key}"
    return None, key


def _parse_int(value: Any) -> Any:
    return parse_whole(value)  # a whole number of bounded length, else left as written (the check names it)


def _parse_option(kind: str, value: Any) -> Any:
    if kind == BOOLEAN:
        return _parse_bool(value)
    if kind == LIST:
        return _parse_list(value)
    return _parse_int(value)


def _parse_list(value: Any) -> Any:
    """``biological;technical`` (a cell, or a config default written as text) -> a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(LIST_SEPARATOR)]
    return value


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in (*TRUE_WORDS, *FALSE_WORDS):
        return value.lower() in TRUE_WORDS
    return value


def _parse_metadata(key: str, value: str, keys: Mapping[str, MetadataKey] = METADATA_KEYS) -> Any:
    if keys[key].numeric:
        return parse_finite(value)  # NaN, infinity and overlong numbers stay text: the check refuses them
    return value


def portable_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name on Windows, macOS or Linux alike (outputs travel), or None."""
    stem = name.split(".", 1)[0].upper()
    if stem in WINDOWS_RESERVED:
        return (
            f"{name!r} is a device name Windows reserves ({stem}, with any extension): files named after it "
            "cannot be copied to Windows; rename the condition"
        )
    if name.endswith("."):
        return f"{name!r} ends with a dot, which Windows drops from file names; rename the condition"
    return None
