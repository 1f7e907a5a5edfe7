"""Figures and a summary table of one merged expression + metadata pair, for a Snakemake report.

    data = compute_report("results/bulk/expression.parquet", "results/bulk/metadata.parquet")
    plot_library_sizes(data, "report/library_sizes.svg")
    plot_detected_genes(data, "report/detected_genes.svg")
    plot_pca(data, "report/pca.svg")
    plot_condition_correlation(data, "report/condition_correlation.svg")
    write_condition_summary(data, "report/conditions.tsv")
    # or all of them at once: write_report(expression, metadata, pca="report/pca.svg", ...)
    # or into one folder: write_report_folder(expression, metadata, "report/"), which is
    # `synthbio-pipeline report EXPRESSION METADATA OUTDIR` on the command line

:func:`compute_report` reads the expression file row group by row group (``ROW_GROUP_GENES``
genes of every sample at a time), in two passes: the first sums library sizes and detected
genes per sample; the second turns each block into log1p-CPM (which needs the library
sizes), keeps the ``pca_genes`` most variable genes seen so far and accumulates the sums
that give the Pearson correlation of the condition means. Memory is one block of all samples
plus the kept genes, whatever the number of genes.

Each plot function writes one file atomically; its format follows the suffix (``.svg``,
``.png``, ``.pdf``). SVG text stays text (searchable, small). Figures of emulator data say
"emulator data (synthetic, not a model)" in their title.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.exports import escape_formula
from synthbio_pipeline.formats.parquet import COUNTS, GENE_ID, LOG_CPM, SAMPLE_ID, SCHEMA_KEY, check_pair
from synthbio_pipeline.formats.result_json import log_cpm

__all__ = [
    "EMULATOR_NOTE",
    "ReportData",
    "ReportError",
    "compute_report",
    "condition_styles",
    "condition_summary",
    "conditions_frame",
    "backend_name",
    "data_source",
    "emulator_warning",
    "file_label",
    "new_figure",
    "plot_condition_correlation",
    "plot_detected_genes",
    "plot_library_sizes",
    "plot_pca",
    "read_run_summaries",
    "save_figure",
    "titled",
    "write_condition_summary",
    "write_conditions_page",
    "write_delimited",
    "write_html_table",
    "write_report",
]

EMULATOR_NOTE = "emulator data (synthetic, not a model)"
DEFAULT_PCA_GENES = 2000
#: Beyond this many conditions, names are not drawn (no axis labels, no legend): they could
#: not be read, and the figures would grow without bound (a 200-condition heat map drawn at
#: its natural size took 19 s and 3.4 GB). The summary table lists every condition.
MAX_NAMED_CONDITIONS = 60


class ReportError(SynthbioError, ValueError):
    """An expression file and metadata file that do not belong together, or cannot be read."""


@dataclass
class ReportData:
    """Everything the figures and the summary table show, computed from one merged pair.

    Per-sample arrays follow ``samples`` (the expression file's column order).
    ``library_sizes`` is ``None`` for a file of log1p-CPM values (the counts are gone).
    ``correlation[i, j]`` is the Pearson correlation, over genes, of the mean log1p-CPM of
    ``conditions[i]`` and ``conditions[j]``.
    """

    samples: list[str]
    sample_conditions: list[str]
    conditions: list[str]
    values: str
    backend: str
    n_genes: int
    library_sizes: np.ndarray | None
    detected_genes: np.ndarray
    pca: np.ndarray
    explained_variance: np.ndarray
    pca_gene_ids: list[str]
    correlation: np.ndarray
    metadata: pd.DataFrame

    @property
    def single_cell(self) -> bool:
        """Whether the samples are single cells (their models' modality)."""
        from synthbio_pipeline.vocabulary.models import SINGLE_CELL, get_model, is_known_model

        if "model_id" not in self.metadata:
            return False
        models = {str(m) for m in self.metadata["model_id"].dropna().unique()}
        return bool(models) and all(is_known_model(m) and get_model(m).modality == SINGLE_CELL for m in models)

    @property
    def unit(self) -> str:
        """What one sample is: ``cell`` or ``sample``."""
        return "cell" if self.single_cell else "sample"

    @property
    def is_emulator(self) -> bool:
        return "emulator" in self.backend

    def title(self, text: str) -> str:
        return titled(text, self.backend)


def titled(text: str, backend: str) -> str:
    """A figure title, with a line saying when (part of) the data comes from the emulator."""
    if backend == "emulator":
        return f"{text}\n{EMULATOR_NOTE}"
    if "emulator" in backend:
        return f"{text}\npartly {EMULATOR_NOTE}"
    return text


# --- statistics --------------------------------------------------------------------------


def compute_report(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    *,
    pca_genes: int = DEFAULT_PCA_GENES,
) -> ReportData:
    """Per-sample statistics, PCA and condition correlation of a merged pair, streamed."""
    if pca_genes < 1:
        raise ValueError(f"pca_genes must be at least 1, not {pca_genes}")
    parquet = pq.ParquetFile(expression_path)
    schema = parquet.schema_arrow
    if schema.names[:1] != [GENE_ID]:
        raise ReportError(f"{expression_path} has no leading {GENE_ID!r} column; is it a merged expression file?")
    samples = schema.names[1:]
    label = json.loads((schema.metadata or {}).get(SCHEMA_KEY, b"{}"))
    values = label.get("values", COUNTS)
    if values not in (COUNTS, LOG_CPM):
        raise ReportError(f"{expression_path} holds values of unknown kind {values!r}")

    check_pair(expression_path, metadata_path, schema.metadata)
    metadata = pd.read_parquet(metadata_path)
    if list(metadata[SAMPLE_ID]) != samples:
        raise ReportError(f"{metadata_path} does not list the samples of {expression_path} in the same order")
    sample_conditions = [str(c) for c in metadata["condition"]]
    conditions = list(dict.fromkeys(sample_conditions))  # the conditions table's order
    backend = backend_name(label, metadata)

    # Pass 1: library sizes and detected genes.
    library = np.zeros(len(samples), np.int64)
    detected = np.zeros(len(samples), np.int64)
    n_genes = 0
    for block, _ in _blocks(parquet):
        if values == COUNTS:
            library += block.sum(axis=1, dtype=np.int64)
        detected += np.count_nonzero(block > 0, axis=1)
        n_genes += block.shape[1]

    # Pass 2: log1p-CPM per block; top-variance genes for the PCA; condition-mean cross products.
    membership = np.zeros((len(conditions), len(samples)))
    index = {condition: i for i, condition in enumerate(conditions)}
    for j, condition in enumerate(sample_conditions):
        membership[index[condition], j] = 1.0
    membership /= membership.sum(axis=1, keepdims=True)
    kept = np.zeros((len(samples), 0))
    kept_variance, kept_genes, kept_ids = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, object)
    mean_sum = np.zeros(len(conditions))
    cross = np.zeros((len(conditions), len(conditions)))
    start = 0
    for block, ids in _blocks(parquet):
        cpm = _block_log_cpm(block, library) if values == COUNTS else block.astype(np.float64)
        means = membership @ cpm  # conditions x genes
        mean_sum += means.sum(axis=1)
        cross += means @ means.T
        variance = cpm.var(axis=0)
        positions = np.arange(start, start + cpm.shape[1])
        kept = np.concatenate([kept, cpm], axis=1)
        kept_variance = np.concatenate([kept_variance, variance])
        kept_genes = np.concatenate([kept_genes, positions])
        kept_ids = np.concatenate([kept_ids, np.array(ids, object)])
        if kept.shape[1] > pca_genes:
            # Highest variance first; ties by gene position, so the choice is deterministic.
            order = np.lexsort((kept_genes, -kept_variance))[:pca_genes]
            order.sort()
            kept, kept_variance, kept_genes, kept_ids = (
                kept[:, order],
                kept_variance[order],
                kept_genes[order],
                kept_ids[order],
            )
        start += cpm.shape[1]

    pca, explained = _pca(kept)
    return ReportData(
        samples=samples,
        sample_conditions=sample_conditions,
        conditions=conditions,
        values=values,
        backend=backend,
        n_genes=n_genes,
        library_sizes=library if values == COUNTS else None,
        detected_genes=detected,
        pca=pca,
        explained_variance=explained,
        pca_gene_ids=[str(gene) for gene in kept_ids],
        correlation=_pearson(mean_sum, cross, n_genes),
        metadata=metadata,
    )


def _blocks(parquet: pq.ParquetFile):
    """(samples x genes array, gene ids) for each row group."""
    for group in range(parquet.metadata.num_row_groups):
        table = parquet.read_row_group(group)
        ids = table.column(0).to_pylist()
        if table.num_columns == 1:
            yield np.zeros((0, len(ids))), ids
            continue
        yield np.stack([column.to_numpy() for column in table.columns[1:]]), ids


def _block_log_cpm(block: np.ndarray, library: np.ndarray) -> np.ndarray:
    """log_cpm of a gene block with each sample's whole-library total as its denominator.

    log_cpm normalises by the row sum; a last column holding the rest of each library
    makes that sum the library size, so the block's values equal those of the full matrix.
    """
    rest = (library - block.sum(axis=1, dtype=np.int64)).astype(np.float64)
    widened = np.concatenate([block.astype(np.float64), rest[:, None]], axis=1)
    return log_cpm(widened)[:, :-1]


def _pca(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores on the first two components (samples x 2) and their share of the variance."""
    scores, explained = np.zeros((matrix.shape[0], 2)), np.zeros(2)
    if matrix.shape[0] < 2 or matrix.shape[1] == 0:
        return scores, explained
    centred = matrix - matrix.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum())
    k = min(2, len(s))
    # SVD signs are arbitrary: make each component's largest loading on a sample positive.
    signs = np.sign(u[np.abs(u[:, :k]).argmax(axis=0), range(k)])
    signs[signs == 0] = 1.0
    scores[:, :k] = u[:, :k] * s[:k] * signs
    if total > 0:
        explained[:k] = s[:k] ** 2 / total
    return scores, explained


def _pearson(sums: np.ndarray, cross: np.ndarray, n: int) -> np.ndarray:
    if n < 2:
        return np.full_like(cross, np.nan)
    mean = sums / n
    covariance = cross / n - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(covariance), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.outer(sd, sd)
    return np.clip(correlation, -1.0, 1.0)


def file_label(path: str | os.PathLike) -> dict:
    """The label a merged Parquet file carries in its schema metadata (``{}`` when it has none)."""
    return json.loads((pq.read_schema(path).metadata or {}).get(SCHEMA_KEY, b"{}"))


def backend_name(label: dict, metadata: pd.DataFrame | None = None) -> str:
    """``emulator``, ``synthesize``, or ``emulator+synthesize`` for a mixed file: the backends
    its ``label`` names and, given the metadata, those of its ``backend`` column."""
    found = label.get("backend", [])
    found = {found} if isinstance(found, str) else set(found)
    if metadata is not None and "backend" in metadata:
        found |= {str(b) for b in metadata["backend"].dropna().unique()}
    return "+".join(sorted(found)) or "unknown"


# --- summary table -----------------------------------------------------------------------


def read_run_summaries(paths: Sequence[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Per condition, its prediction's summary (``seconds``, ``submissions``, ``query_id``, ...).

    ``paths`` are the ``summary.json`` files the prediction wrapper writes, one per batch:
    ``{"conditions": [{"condition": ..., "seconds": ..., ...}, ...], "seconds": ...}``.
    """
    runs: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            document = json.loads(Path(path).read_text())
            conditions = document["conditions"]
            for entry in conditions:
                runs[str(entry["condition"])] = entry
        except (ValueError, KeyError, TypeError) as exc:
            raise ReportError(
                f"{path} is not a prediction summary (a 'conditions' list of objects with a 'condition' each): {exc}"
            ) from exc
    return runs


def condition_summary(data: ReportData, runs: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per condition: ids, model version, backend, samples and median statistics.

    With ``runs`` (:func:`read_run_summaries`), also ``seconds`` (submission to parsed result)
    and ``submissions`` (times the query was bought) of each condition's prediction.
    """
    frame = pd.DataFrame({"condition": data.sample_conditions, "detected": data.detected_genes})
    frame["library"] = data.library_sizes if data.library_sizes is not None else np.nan
    for column in ("query_id", "model_version", "backend"):
        frame[column] = data.metadata[column].astype("string").to_numpy() if column in data.metadata else pd.NA
    rows = []
    for condition in data.conditions:
        group = frame[frame.condition == condition]
        row = {
            "condition": condition,
            "query_id": _joined(group.query_id),
            "model_version": _joined(group.model_version),
            "backend": _joined(group.backend),
            "samples": len(group),
            "library_size_median": group.library.median() if data.library_sizes is not None else np.nan,
            "detected_genes_median": group.detected.median(),
        }
        if runs is not None:
            run = runs.get(condition, {})
            row["seconds"] = run.get("seconds", np.nan)
            row["submissions"] = run.get("submissions", pd.NA)
        rows.append(row)
    table = pd.DataFrame(rows)
    if runs is not None:
        table["submissions"] = table["submissions"].astype("Int64")
    return table


def _joined(values: pd.Series) -> str:
    # A condition normally has one query; a rerun part could in principle bring another.
    return ";".join(dict.fromkeys(str(v) for v in values.dropna()))


def write_condition_summary(
    data: ReportData, path: str | os.PathLike, runs: dict[str, dict[str, Any]] | None = None
) -> pd.DataFrame:
    """Write :func:`condition_summary` as TSV (``.tsv``), an HTML page (``.html``) or CSV
    (anything else); return it."""
    table = condition_summary(data, runs)
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        notes = [f"{len(data.samples):,} samples × {data.n_genes:,} genes; medians per condition."]
        if data.library_sizes is None:
            notes.append("Library sizes are not available: the expression file holds log1p-CPM (as_counts: false).")
        if runs is not None:
            notes.append(
                "seconds: from submission to the parsed result (a rerun that downloaded an answered "
                "query again counts that time); submissions: times the query was sent (and paid for)."
            )
        # Shortest columns first, so the numbers fit on screen; the long query id last.
        shown = table.rename(columns=_SUMMARY_HEADERS)
        shown = shown[[name for name in _SUMMARY_HEADERS.values() if name in shown]]
        write_html_table(
            shown,
            path,
            title=f"Per-condition summary ({len(data.conditions):,} conditions)",
            notes=notes,
            emulator=emulator_warning(data.backend),
            code_columns=["query id"],
        )
        return table
    write_delimited(table, path, float_format="%.10g")
    return table


def write_delimited(frame: pd.DataFrame, path: str | os.PathLike, *, float_format: str) -> None:
    """Write ``frame`` atomically as TSV (``.tsv``) or CSV (anything else), missing values as ``NA``.

    Text cells a spreadsheet would run as a formula (model versions and query ids are the
    server's text) get a leading ``'``: :func:`~synthbio_pipeline.formats.exports.escape_formula`.
    """
    separator = "\t" if Path(path).suffix.lower() == ".tsv" else ","
    text = frame.select_dtypes(include=["object", "string"]).columns
    escaped = frame.assign(**{column: frame[column].map(escape_formula) for column in text})
    with atomic_path(path) as temporary:
        escaped.to_csv(temporary, sep=separator, index=False, float_format=float_format, na_rep="NA")


_SUMMARY_HEADERS = {
    "condition": "condition",
    "samples": "samples",
    "seconds": "seconds",
    "submissions": "submissions",
    "library_size_median": "median library size",
    "detected_genes_median": "median detected genes",
    "model_version": "model version",
    "backend": "backend",
    "query_id": "query id",
}


def data_source(expression_path: str | os.PathLike) -> str:
    """Who made a merged file's values, in words: ``emulator``, ``Synthesize Bio API`` or both."""
    found = file_label(expression_path).get("backend", [])
    found = {found} if isinstance(found, str) else set(found)
    words = {"emulator": "emulator", "synthesize": "Synthesize Bio API"}
    return " + ".join(words.get(b, b) for b in sorted(found)) or "unknown"


def emulator_warning(backend: str) -> str | None:
    """The banner an HTML page shows when (part of) its data comes from the emulator."""
    if backend == "emulator":
        return "Emulator data (synthetic, not a model): made by the bundled API emulator, not by GEM-1."
    if "emulator" in backend:
        return f"Partly emulator data (synthetic, not a model): backends {backend}."
    return None


def conditions_frame(conditions: Sequence[Any]) -> pd.DataFrame:
    """The conditions as the workflow runs them (``read_conditions``' output), one row each:
    defaults applied, the model's own mode where the table gives none, then every metadata
    key any row sets (in the API's key order)."""
    from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS
    from synthbio_pipeline.vocabulary.models import get_model, is_known_model
    from synthbio_pipeline.vocabulary.options import ALL_OPTIONS

    options = [key for key in ALL_OPTIONS if any(key in c.options for c in conditions)]
    references = [key for key in ("reference", "reference_sample") if any(getattr(c, key, None) for c in conditions)]
    keys = [key for key in METADATA_KEYS if any(key in c.metadata for c in conditions)]
    rows = []
    for c in conditions:
        mode = c.mode
        if mode is None and is_known_model(c.model_id):
            mode = get_model(c.model_id).default_mode
        rows.append(
            {
                "condition": c.name,
                "modality": c.modality,
                "model_id": c.model_id,
                "mode": mode,
                "num_samples": c.num_samples,
                **{key: getattr(c, key) for key in references},
                **{key: c.options.get(key) for key in options},
                **{key: c.metadata.get(key) for key in keys},
            }
        )
    columns = ["condition", "modality", "model_id", "mode", "num_samples", *references, *options, *keys]
    return pd.DataFrame(rows, columns=columns)


def write_conditions_page(
    table_path: str | os.PathLike,
    out: str | os.PathLike,
    defaults: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """An HTML page of the conditions table as the workflow runs it (:func:`conditions_frame`).

    ``provenance`` (:func:`~synthbio_pipeline.pipeline.provenance.read_provenance`) adds a
    note of the service and options that made the data."""
    from synthbio_pipeline.pipeline.conditions import read_conditions

    conditions = read_conditions(table_path, defaults=defaults)
    frame = conditions_frame(conditions)
    modalities = ", ".join(f"{m}: {n}" for m, n in frame["modality"].value_counts(sort=False).items())
    notes = [
        f"{table_path}: {len(frame):,} conditions ({modalities}), {int(frame['num_samples'].sum()):,} samples "
        "requested; config defaults applied; mode: the model's own where the table gives none."
    ]
    if defaults:
        notes.append("defaults: " + ", ".join(f"{key} = {value}" for key, value in defaults.items()))
    if provenance:
        options = ", ".join(f"{key} = {_plain(value)}" for key, value in provenance.get("options", {}).items())
        notes.append(
            f"Predicted by {', '.join(provenance.get('api_base_url', [])) or 'an unrecorded service'} "
            f"({' + '.join(provenance.get('data', []))}), {provenance.get('made', '')}; options: {options}."
        )
    write_html_table(frame, out, title="Conditions table", notes=notes)
    return frame


def _plain(value: Any) -> str:
    """A config value as the config file would show it: true, [a, b], {seed: 42}."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_plain(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    return str(value)


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1rem; color: #1f2937; }
h1 { font-size: 1.1rem; margin: 0 0 .5rem; }
p.note { margin: .2rem 0; color: #4b5563; font-size: .8rem; max-width: 60rem; }
p.emulator { background: #fef3c7; border-left: 4px solid #d97706; padding: .4rem .7rem; color: #78350f;
             font-weight: 600; font-size: .85rem; max-width: 60rem; }
table { border-collapse: separate; border-spacing: 0; margin-top: .7rem; font-size: .8rem; }
th, td { border-bottom: 1px solid #e5e7eb; padding: .25rem .55rem; text-align: left; white-space: nowrap; }
th { background: #f3f4f6; position: sticky; top: 0; z-index: 1; }
/* The first column (the condition) stays in view when a wide table scrolls sideways. */
th:first-child, td:first-child { position: sticky; left: 0; background: #ffffff; border-right: 1px solid #e5e7eb; }
th:first-child { background: #f3f4f6; z-index: 2; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
td.code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .75rem; }
td.missing { color: #9ca3af; }
tr:hover td { background: #f9fafb; }
"""


def write_html_table(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str,
    notes: Sequence[str] = (),
    emulator: str | None = None,
    code_columns: Sequence[str] = (),
) -> Path:
    """A self-contained HTML page (no scripts, no external resources) showing ``frame``.

    Numbers are right-aligned with thousands separators (no decimals from 100 on); missing
    values show as ``–``. ``emulator`` is a warning shown above the table; ``code_columns``
    are set in a monospace font (ids).
    """
    from html import escape

    def cell(value: Any, code: bool) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return '<td class="missing">–</td>'
        if isinstance(value, (bool, np.bool_)):
            return f"<td>{str(bool(value)).lower()}</td>"
        if isinstance(value, (int, np.integer)):
            return f'<td class="number">{int(value):,}</td>'
        if isinstance(value, (float, np.floating)):
            text = f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"
            return f'<td class="number">{text}</td>'
        return f'<td class="code">{escape(str(value))}</td>' if code else f"<td>{escape(str(value))}</td>"

    codes = [column in code_columns for column in frame.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
        for column in frame.columns
    ]
    head = "".join(
        f'<th class="number">{escape(str(column))}</th>' if number else f"<th>{escape(str(column))}</th>"
        for column, number in zip(frame.columns, numeric)
    )
    body = "\n".join(
        "<tr>" + "".join(cell(value, code) for value, code in zip(row, codes)) + "</tr>"
        for row in frame.itertuples(index=False, name=None)
    )
    paragraphs = [f'<p class="emulator">{escape(emulator)}</p>'] if emulator else []
    paragraphs += [f'<p class="note">{escape(note)}</p>' for note in notes]
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{_HTML_STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n"
        + "\n".join(paragraphs)
        + f"\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n</body>\n</html>\n"
    )
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return path


# --- figures -----------------------------------------------------------------------------


def new_figure(width: float, height: float):
    """A matplotlib figure of ``width`` × ``height`` inches, drawn without pyplot."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # matplotlib comes with the workflow extra only
        raise ImportError("the report needs matplotlib: pip install 'synthbio-pipeline[workflow]'") from exc
    # A bare Figure on an Agg canvas: no pyplot, so no global backend or figure state.
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` atomically in the format of ``path``'s suffix (SVG without one), reproducibly."""
    import matplotlib

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "svg"
    # Text as text in SVG; no date, so an unchanged input gives an identical file.
    metadata = {"Date": None} if fmt in ("svg", "pdf") else None
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "synthbio"}):
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=fmt, dpi=150, metadata=metadata)
    return path


def condition_styles(n: int) -> list[tuple[Any, str]]:
    """(colour, marker) per condition: ten distinct colours, each condition its own shape.

    tab20's pairs (dark and light of one hue) cannot be told apart in a scatter; ten colours
    times circle, square, triangle... keep 20 conditions (and more) distinguishable.
    """
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    # Neighbours differ in colour and shape, so overlapping clusters stay apart; the
    # (colour, shape) pairs repeat only after 100 conditions.
    markers = "os^Dv<>ph*"
    return [(palette[i % 10], markers[(i + i // 10) % 10]) for i in range(n)]


def _slanted(labels: Sequence[str]) -> bool:
    """Whether x labels must be slanted to stay apart (many, or long)."""
    return len(labels) > 4 or (len(labels) > 1 and max(len(label) for label in labels) * len(labels) > 45)


def _strip_plot(data: ReportData, values: np.ndarray, path, *, title: str, ylabel: str) -> Path:
    n = len(data.conditions)
    longest = max((len(c) for c in data.conditions), default=0)
    # Slanted labels take height: grow the figure so the plot area keeps its size.
    named = n <= MAX_NAMED_CONDITIONS
    figure = new_figure(
        max(6.0, 0.38 * min(n, MAX_NAMED_CONDITIONS) + 2.5),
        4.2 + (0.055 * longest if named and _slanted(data.conditions) else 0.0),
    )
    axes = figure.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: reproducible figures
    conditions = np.asarray(data.sample_conditions)
    for i, ((colour, marker), condition) in enumerate(zip(condition_styles(n), data.conditions)):
        y = values[conditions == condition]
        x = i + rng.uniform(-0.18, 0.18, len(y))
        axes.scatter(x, y, s=18, color=colour, marker=marker, alpha=0.8, linewidths=0, zorder=3)
        axes.hlines(np.median(y), i - 0.3, i + 0.3, color="black", linewidth=1.5, zorder=2)
    return _finish_per_condition(
        axes,
        data,
        values,
        path,
        labels=data.conditions,
        xlabel="condition (black bar: median)",
        unnamed_xlabel=f"{n:,} conditions, in table order (black bar: median; names in the summary table)",
        title=title,
        ylabel=ylabel,
    )


def _finish_per_condition(
    axes, data: ReportData, values: np.ndarray, path, *, labels, xlabel, unnamed_xlabel, title, ylabel
) -> Path:
    """The shared axes of a per-condition plot (one column per condition, y from zero), then save.

    Conditions are named on the x axis (``labels``, slanted when needed) up to
    MAX_NAMED_CONDITIONS; beyond that the axis says only how many there are."""
    n = len(data.conditions)
    if n <= MAX_NAMED_CONDITIONS:
        slanted = _slanted(data.conditions)
        axes.set_xticks(
            range(n),
            labels,
            rotation=45 if slanted else 0,
            ha="right" if slanted else "center",
            rotation_mode="anchor",
        )
        axes.set_xlabel(xlabel)
    else:
        axes.set_xticks([])
        axes.set_xlabel(unnamed_xlabel)
    axes.set_xlim(-0.6, n - 0.4)
    # From zero: a small spread must look small (a few % of 20,000 detected genes is noise).
    axes.set_ylim(0, max(float(np.max(values, initial=0)), 1.0) * 1.08)
    axes.set_ylabel(ylabel)
    from matplotlib.ticker import MaxNLocator

    # Whole-number ticks: the formatter shows no decimals, so 832.5 would read as 832.
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_formatter(_thousands())
    axes.grid(axis="y", alpha=0.3)
    axes.set_title(data.title(title), loc="left")
    return save_figure(axes.figure, path)


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def plot_library_sizes(data: ReportData, path: str | os.PathLike) -> Path:
    """Total counts per sample, one column of points per condition, with the median;
    for single cells, the distribution of counts per cell of each condition."""
    if data.library_sizes is None:
        raise ReportError("library sizes need counts; this expression file holds log1p-CPM (as_counts: false)")
    if data.single_cell:
        return _distribution_plot(
            data,
            data.library_sizes,
            path,
            title=f"Counts per cell ({len(data.samples):,} cells)",
            ylabel="counts per cell (total UMIs)",
        )
    return _strip_plot(
        data,
        data.library_sizes,
        path,
        title=f"Library size per sample ({len(data.samples):,} samples)",
        ylabel="library size (total counts)",
    )


def plot_detected_genes(data: ReportData, path: str | os.PathLike) -> Path:
    """Genes with a count above 0 per sample, one column of points per condition;
    for single cells, the distribution of genes per cell of each condition."""
    if data.single_cell:
        return _distribution_plot(
            data,
            data.detected_genes,
            path,
            title=f"Genes per cell (count > 0, of {data.n_genes:,} genes)",
            ylabel="genes detected per cell",
        )
    return _strip_plot(
        data,
        data.detected_genes,
        path,
        title=f"Detected genes per sample (count > 0, of {data.n_genes:,} genes)",
        ylabel="detected genes",
    )


#: Up to this many cells of a condition are drawn as points over its violin.
MAX_POINTS_PER_CONDITION = 300


def _distribution_plot(data: ReportData, values: np.ndarray, path, *, title: str, ylabel: str) -> Path:
    """Single-cell QC: per condition, a violin of the cells' values, its quartiles and median,
    and the cells themselves as points (up to MAX_POINTS_PER_CONDITION), y from zero."""
    n = len(data.conditions)
    named = n <= MAX_NAMED_CONDITIONS
    longest = max((len(c) for c in data.conditions), default=0)
    figure = new_figure(
        max(6.0, 0.45 * min(n, MAX_NAMED_CONDITIONS) + 2.5),
        4.4 + (0.045 * (longest + 11) if named and _slanted(data.conditions) else 0.0),
    )
    axes = figure.add_subplot()
    rng = np.random.default_rng(0)
    conditions = np.asarray(data.sample_conditions)
    for i, ((colour, marker), condition) in enumerate(zip(condition_styles(n), data.conditions)):
        y = values[conditions == condition].astype(float)
        if len(y) >= 3 and np.ptp(y) > 0:
            parts = axes.violinplot(y, positions=[i], widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor(colour)
                body.set_edgecolor(colour)
                body.set_alpha(0.3)
        q1, median, q3 = np.percentile(y, [25, 50, 75])
        axes.vlines(i, q1, q3, color="black", linewidth=3, zorder=3)
        axes.hlines(median, i - 0.25, i + 0.25, color="black", linewidth=1.5, zorder=4)
        shown = y if len(y) <= MAX_POINTS_PER_CONDITION else rng.choice(y, MAX_POINTS_PER_CONDITION, replace=False)
        x = i + rng.uniform(-0.15, 0.15, len(shown))
        axes.scatter(x, shown, s=8, color=colour, marker=marker, alpha=0.6, linewidths=0, zorder=2)
    return _finish_per_condition(
        axes,
        data,
        values,
        path,
        labels=[f"{c} ({int((conditions == c).sum()):,} cells)" if n <= 8 else c for c in data.conditions],
        xlabel="condition (violin: distribution over cells; bar: quartiles; line: median)",
        unnamed_xlabel=f"{n:,} conditions, in table order (names in the summary table)",
        title=title,
        ylabel=ylabel,
    )


def _nothing_to_compare(data: ReportData, path, *, title: str, reason: str) -> Path:
    """A small figure that says why there is no plot, instead of a plot that says nothing."""
    figure = new_figure(6.5, 2.4)
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.text(0.0, 0.55, reason, ha="left", va="center", wrap=True, fontsize="medium", color="#374151")
    axes.set_title(data.title(title), loc="left")
    return save_figure(figure, path)


def _nothing_to_compare_reason(data: ReportData, what: str) -> str | None:
    """Why ``what`` (a PCA, a heat map) would show nothing here, or ``None`` if it would show something."""
    n, samples, unit = len(data.conditions), len(data.samples), data.unit
    if n < 2:
        names = data.conditions[0] if data.conditions else "none"
        return (
            f"Nothing to compare: one condition ({names}, {samples:,} {unit}s).\n"
            f"{what} compares conditions; add a condition to the table to see one."
        )
    return None


def plot_pca(data: ReportData, path: str | os.PathLike) -> Path:
    """The samples on the first two principal components of log1p-CPM, coloured by condition.

    With one condition (or fewer than three samples) there is nothing to compare: the figure
    says so instead. Both axes have the same scale, so that a component explaining little
    variance does not look as long as one explaining much.
    """
    genes = len(data.pca_gene_ids)
    title = f"PCA of log1p-CPM ({genes:,} most variable genes, {len(data.samples):,} {data.unit}s)"
    reason = _nothing_to_compare_reason(data, "A PCA")
    if reason is None and len(data.samples) < 3:
        reason = f"Nothing to compare: {len(data.samples)} {data.unit}s; a PCA needs three or more."
    if reason is not None:
        return _nothing_to_compare(data, path, title=title, reason=reason)
    n = len(data.conditions)
    named = n <= MAX_NAMED_CONDITIONS
    columns = math.ceil(n / 22) if named else 0
    figure = new_figure(6.5 + 1.9 * columns, max(5.0, min(0.21 * n / max(columns, 1) + 1.5, 9.0)) if named else 5.5)
    axes = figure.add_subplot()
    conditions = np.asarray(data.sample_conditions)
    for (colour, marker), condition in zip(condition_styles(n), data.conditions):
        points = data.pca[conditions == condition]
        axes.scatter(
            points[:, 0],
            points[:, 1],
            s=28,
            color=colour,
            marker=marker,
            alpha=0.85,
            linewidths=0.3,
            edgecolors="white",
            label=condition,
        )
    pc1, pc2 = data.explained_variance * 100
    axes.set_xlabel(f"PC1 ({pc1:.1f}% of variance)")
    axes.set_ylabel(f"PC2 ({pc2:.1f}% of variance)")
    axes.set_aspect("equal", adjustable="datalim")
    axes.grid(alpha=0.3)
    if named:
        axes.legend(
            title="condition",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncols=columns,
            fontsize="small",
            frameon=False,
            markerscale=1.2,
            handletextpad=0.3,
            borderaxespad=0,
        )
    else:
        axes.text(
            1.0,
            -0.12,
            f"coloured by condition ({n:,}; no legend)",
            transform=axes.transAxes,
            ha="right",
            fontsize="small",
        )
    axes.set_title(data.title(title), loc="left")
    return save_figure(figure, path)


def plot_condition_correlation(data: ReportData, path: str | os.PathLike) -> Path:
    """Heat map of the Pearson correlation of mean log1p-CPM between conditions (with one
    condition there is nothing to compare, and the figure says so)."""
    title = "Correlation of mean log1p-CPM between conditions"
    reason = _nothing_to_compare_reason(data, "A correlation heat map")
    if reason is not None:
        return _nothing_to_compare(data, path, title=title, reason=reason)
    n = len(data.conditions)
    named = n <= MAX_NAMED_CONDITIONS
    side = max(5.5, 0.32 * n + 3.5) if named else 8.0
    figure = new_figure(side + 1.0, side)
    axes = figure.add_subplot()
    diagonal = np.eye(n, dtype=bool)
    off_diagonal = data.correlation[~diagonal & np.isfinite(data.correlation)]
    # Condition means usually correlate above 0.9: colours span the off-diagonal range, and
    # the diagonal (always 1) is grey so it does not share the top colour.
    low, high = (float(off_diagonal.min()), float(off_diagonal.max())) if off_diagonal.size else (0.0, 1.0)
    if high - low < 1e-3:
        low, high = min(low, high - 1e-3), high
    from matplotlib import colormaps

    colours = colormaps["viridis"].with_extremes(bad="lightgrey")
    image = axes.imshow(np.ma.masked_array(data.correlation, diagonal), cmap=colours, vmin=low, vmax=high)
    if named:
        axes.set_xticks(
            range(n),
            data.conditions,
            rotation=45 if n > 3 else 0,
            ha="right" if n > 3 else "center",
            rotation_mode="anchor",
            fontsize="small" if n > 15 else None,
        )
        axes.set_yticks(range(n), data.conditions, fontsize="small" if n > 15 else None)
        axes.set_xlabel("condition")
        axes.set_ylabel("condition")
    else:
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_xlabel(f"{n:,} conditions, in table order")
        axes.set_ylabel(f"{n:,} conditions, in table order")
    if n <= 12:
        middle = (low + high) / 2
        for i in range(n):
            for j in range(n):
                value = data.correlation[i, j]
                axes.text(
                    j,
                    i,
                    f"{value:.3f}",
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="black" if value > middle or i == j else "white",
                )
    figure.colorbar(image, ax=axes, label="Pearson r of condition means (diagonal: 1, grey)", shrink=0.8)
    axes.set_title(data.title(title), loc="left")
    return save_figure(figure, path)


# --- everything at once ------------------------------------------------------------------


def write_report(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    *,
    library_sizes: str | os.PathLike | None = None,
    detected_genes: str | os.PathLike | None = None,
    pca: str | os.PathLike | None = None,
    correlation: str | os.PathLike | None = None,
    summary: str | os.PathLike | None = None,
    pca_genes: int = DEFAULT_PCA_GENES,
    runs: dict[str, dict[str, Any]] | None = None,
) -> ReportData:
    """Compute once and write each output given a path (a Snakemake rule's named outputs).

    For a log1p-CPM file, ``library_sizes`` cannot be drawn and raises :class:`ReportError`.
    ``runs`` (:func:`read_run_summaries`) adds the predictions' timings to ``summary``.
    """
    data = compute_report(expression_path, metadata_path, pca_genes=pca_genes)
    for function, path in (
        (plot_library_sizes, library_sizes),
        (plot_detected_genes, detected_genes),
        (plot_pca, pca),
        (plot_condition_correlation, correlation),
        (functools.partial(write_condition_summary, runs=runs), summary),
    ):
        if path is not None:
            function(data, path)
    return data


def write_report_folder(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    image_format: str = "svg",
    pca_genes: int = DEFAULT_PCA_GENES,
) -> list[Path]:
    """Every figure (``library_sizes`` only for counts) and ``conditions.tsv`` in ``outdir``.

    ``synthbio-pipeline report`` runs this; returns the files written.
    """
    out = Path(outdir)
    data = compute_report(expression_path, metadata_path, pca_genes=pca_genes)
    drawn = [(plot_library_sizes, "library_sizes")] if data.library_sizes is not None else []
    drawn += [
        (plot_detected_genes, "detected_genes"),
        (plot_pca, "pca"),
        (plot_condition_correlation, "condition_correlation"),
    ]
    written = []
    for function, name in drawn:
        written.append(out / f"{name}.{image_format}")
        function(data, written[-1])
    written.append(out / "conditions.tsv")
    write_condition_summary(data, written[-1])
    return written
