"""Report figures of the reference and metadata-prediction families (issue 13), per output
group: GEM-1's (``bulk``, ``single-cell``) and GEM-2's (``gem-2-bulk``, ``gem-2-single-cell``).

**Round trip.** Does a condition's generated data look like what it asked for? Metadata
prediction (the group's family's: ``gem-1-*_predict-metadata`` or ``gem-2-*_predict-metadata``)
reads each generated sample and answers, per field, a top value and a probability per value.
Per condition and requested field::

    rt = compute_round_trip("results/bulk/metadata.parquet",
                            "results/bulk/predicted_metadata.parquet",
                            "results/bulk/classifier_probs.parquet")
    write_round_trip_table(rt, "round_trip.tsv"); write_round_trip_table(rt, "round_trip.html")
    plot_round_trip(rt, "round_trip.svg")

gives the samples, the share whose top prediction equals the request, and the mean
probability given to the requested value. Values are compared as text, case-sensitively
(ontology ids are case-sensitive; a name never equals an id), after trimming spaces and
writing numbers one way (``65.0`` is ``65``). Only the fields both sides have are compared: a
GEM-2 request names the tissue (``tissue: liver``), so it meets a prediction of ``tissue`` and
never one of ``tissue_ontology_id``; a requested field the predictor does not predict is listed
as not predicted. GEM-2's perturbation lists (``bioactive_entity_perturbations`` and the other
:data:`~synthbio_pipeline.vocabulary.metadata.GEM2_METADATA_KEYS` with ``items``) are not
compared: a prediction names one value per field, a list is a set of objects (the round trip
lists them as requested but not compared, with that reason).

**MA plots.** For each reference-conditioned condition, the generated samples' mean CPM
against the reference's CPM (the aligned counts of ``references.parquet``)::

    ref = compute_reference_comparison("results/bulk/expression.parquet",
                                       "results/bulk/metadata.parquet",
                                       "results/bulk/references.parquet")
    plot_ma(ref, "ma_plots.svg"); write_top_changed_genes(ref, "top_changed_genes.tsv")

``log2fc = log2((generated mean CPM + p) / (reference CPM + p))`` and ``mean log2 CPM =
(log2(generated mean CPM + p) + log2(reference CPM + p)) / 2``, where the pseudo-count ``p``
is 1 CPM, or one count of the reference's library in CPM when that is more (a single-cell
reference of 5,000 counts: 200 CPM): a change smaller than one read of the reference is not
a change. The perturbed gene is marked when the perturbation is a gene: GEM-1's Ensembl
``perturbation_ontology_id`` with a ``perturbation_type`` among :data:`GENE_PERTURBATIONS`, or the
one gene of a GEM-2 ``gene_perturbations`` list (its Ensembl id; with several genes none is
marked and the notes say so).

Both read their inputs in bounded memory: the expression file one row group (gene block) and
at most ``SAMPLE_CHUNK`` samples at a time, the class probabilities in record batches.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.formats.parquet import COUNTS, GENE_ID, LOG_CPM, SAMPLE_ID, SCHEMA_KEY
from synthbio_pipeline.pipeline.report import (
    MAX_NAMED_CONDITIONS,
    ReportError,
    backend_name,
    emulator_warning,
    file_label,
    new_figure,
    save_figure,
    titled,
    write_delimited,
    write_html_table,
)
from synthbio_pipeline.vocabulary.families import is_gem2
from synthbio_pipeline.vocabulary.metadata import GEM2_METADATA_KEYS, METADATA_KEYS, PERTURBATIONAL, MetadataKey

__all__ = [
    "GENE_PERTURBATIONS",
    "MAX_MA_PANELS",
    "ReferenceComparison",
    "RoundTrip",
    "canonical_value",
    "compute_reference_comparison",
    "compute_round_trip",
    "describe_perturbation",
    "list_value",
    "listed_requests",
    "perturbed_gene",
    "plot_ma",
    "plot_round_trip",
    "requested_values",
    "write_reference_report",
    "write_round_trip",
    "write_round_trip_table",
    "write_top_changed_genes",
]

#: Perturbation types whose ``perturbation_ontology_id`` names a gene the perturbation acts on.
GENE_PERTURBATIONS = frozenset({"crispr", "shrna", "sirna", "genetic", "overexpression"})
#: MA panels drawn at most; the table lists every condition's top genes.
MAX_MA_PANELS = 24
#: Top changed genes listed per condition (by absolute log2 fold change).
DEFAULT_TOP_GENES = 20
#: Samples read at once from a row group (bounds memory whatever the number of samples).
SAMPLE_CHUNK = 1024
#: Rows of classifier_probs.parquet read at once.
PROBABILITY_BATCH = 65536
#: Round-trip cells annotated with their value up to this many conditions.
MAX_ANNOTATED_CONDITIONS = 30
REFERENCE, REFERENCE_SAMPLE = "reference", "reference_sample"
MODEL_ID = "model_id"
#: The order the round trip lists fields in: GEM-1's keys, then GEM-2's own (``tissue``, its lists).
FIELD_ORDER = tuple(dict.fromkeys([*METADATA_KEYS, *GEM2_METADATA_KEYS]))
#: Why a list-valued request (GEM-2's perturbation lists) is not compared.
LIST_REASON = "a list of objects (GEM-2's perturbation lists): a prediction names one value per field"

# Okabe-Ito colours (distinguishable with every common colour-vision deficiency).
_BLUE, _VERMILLION, _GREY = "#0072B2", "#D55E00", "#8c8c8c"
_ENSEMBL = re.compile(r"(ENSG\d+)(\.\d+)?")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


# --- shared ------------------------------------------------------------------------------


def canonical_value(value: Any) -> str | None:
    """A metadata value as compared: text without surrounding spaces, numbers written one
    way (``65``, ``65.0`` and ``6.5e1`` are ``65``); ``None`` for a missing value. A list or
    mapping (GEM-2's perturbation lists) is its JSON text, keys sorted."""
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value, sort_keys=True, default=str)
    if value is None or pd.isna(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _number(float(value))
    text = str(value).strip()
    if not text:
        return None
    return _number(float(text)) if _NUMBER.fullmatch(text) else text


def list_value(value: Any, *, text: bool = False) -> list | None:
    """``value`` as a list when it is one (a GEM-2 perturbation list), else ``None``. With
    ``text``, a JSON list written as text (as ``metadata.parquet`` holds GEM-2's lists) too."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if text and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, list) else None
    return None


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _canonical_series(values: pd.Series) -> pd.Series:
    """:func:`canonical_value` of a column, vectorised for the common all-text case."""
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    numeric = text.str.fullmatch(_NUMBER.pattern).fillna(False).astype(bool)
    if numeric.any():
        text = text.copy()
        text[numeric] = [canonical_value(v) for v in text[numeric]]
    return text.astype(object).where(text.notna(), None)


def _read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    try:
        metadata = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ReportError(f"{path} cannot be read as a metadata file: {exc}") from exc
    for column in (SAMPLE_ID, "condition"):
        if column not in metadata:
            raise ReportError(f"{path} has no {column!r} column; is it a merged metadata file?")
    if metadata[SAMPLE_ID].duplicated().any():
        raise ReportError(
            f"{path} lists sample {metadata[SAMPLE_ID][metadata[SAMPLE_ID].duplicated()].iloc[0]!r} twice"
        )
    return metadata


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --- round trip --------------------------------------------------------------------------


@dataclass
class RoundTrip:
    """The round-trip comparison of one modality.

    ``table`` has one row per condition and requested field that metadata prediction
    predicts: ``condition``, ``field``, ``requested``, ``samples`` (the condition's generated
    samples), ``predicted`` (of them, with a top prediction for the field), ``top_match_share``
    (of those, the share whose top prediction is the requested value), ``scored`` (samples with
    class probabilities for the field), ``mean_probability`` (the mean, over those, of the
    probability given to the requested value; 0 for a sample whose probabilities leave it
    out), ``most_predicted`` (the commonest top prediction), ``requested_seen`` (whether the
    predictor gave the requested value a probability in any sample of the file; false for a
    value it never outputs, such as a name where it answers ids).

    ``not_predicted``: per requested field the predictor does not predict, the conditions that
    requested it; ``lists``: the same for list values (GEM-2's perturbation lists), not compared
    (:data:`LIST_REASON`).
    """

    table: pd.DataFrame
    conditions: list[str]
    fields: list[str]
    backend: str
    samples: int
    not_predicted: dict[str, list[str]] = field(default_factory=dict)
    predicted_fields: list[str] = field(default_factory=list)
    lists: dict[str, list[str]] = field(default_factory=dict)


def requested_values(
    metadata: pd.DataFrame, requests: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, str]]:
    """Per condition (in the file's order), the metadata it asked for: ``{field: value}``.

    With ``requests`` (the conditions table's metadata per condition, as the workflow has
    it), those. Otherwise read from the metadata file: the metadata-key columns of the
    condition's vocabulary (GEM-2's when its ``model_id`` is a GEM-2 id, else GEM-1's) that
    hold one value in all of its samples; for a reference-conditioned row (a ``reference``
    set) only the perturbation keys, as the rest is inferred from the reference. List values
    (GEM-2's perturbation lists) are left out: :func:`listed_requests` names them.
    """
    return _requests(metadata, requests)[0]


def listed_requests(
    metadata: pd.DataFrame, requests: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, list[str]]:
    """``{field: [conditions]}``: the non-empty list values requested (GEM-2's perturbation
    lists), which the round trip does not compare (:data:`LIST_REASON`); read as
    :func:`requested_values` reads."""
    return _requests(metadata, requests)[1]


def _vocabulary(group: pd.DataFrame) -> Mapping[str, MetadataKey]:
    """The metadata vocabulary of a condition's rows: GEM-2's when its model is GEM-2's."""
    if MODEL_ID in group:
        models = {str(m) for m in group[MODEL_ID].dropna()}
        if models and all(is_gem2(m) for m in models):
            return GEM2_METADATA_KEYS
    return METADATA_KEYS


def _requests(metadata: pd.DataFrame, requests: Mapping[str, Mapping[str, Any]] | None):
    conditions = list(dict.fromkeys(str(c) for c in metadata["condition"]))
    asked: dict[str, dict[str, str]] = {}
    lists: dict[str, list[str]] = {}
    if requests is not None:
        for c in conditions:
            asked[c] = {}
            for key, raw in (requests.get(c) or {}).items():
                elements = list_value(raw)
                if elements is not None:
                    if elements:
                        lists.setdefault(str(key), []).append(c)
                    continue
                value = canonical_value(raw)
                if value is not None:
                    asked[c][str(key)] = value
        return asked, lists
    for condition, group in metadata.groupby(metadata["condition"].astype(str), sort=False):
        referenced = REFERENCE in group and group[REFERENCE].notna().any()
        mine = {}
        for key, spec in _vocabulary(group).items():
            if key not in group or (referenced and spec.group != PERTURBATIONAL):
                continue
            if spec.items is not None:
                values = {canonical_value(list_value(v, text=True)) for v in group[key]}
                if len(values) == 1 and values.pop() not in (None, "[]"):
                    lists.setdefault(key, []).append(condition)
                continue
            values = {canonical_value(v) for v in group[key]}
            if len(values) == 1 and None not in values:
                mine[key] = values.pop()
        asked[condition] = mine
    order = {c: i for i, c in enumerate(conditions)}
    return {c: asked[c] for c in conditions}, {k: sorted(v, key=order.__getitem__) for k, v in lists.items()}


def compute_round_trip(
    metadata_path: str | os.PathLike,
    predicted_path: str | os.PathLike,
    probabilities_path: str | os.PathLike,
    *,
    requests: Mapping[str, Mapping[str, Any]] | None = None,
) -> RoundTrip:
    """The round trip of one modality (see :class:`RoundTrip`); ``requests`` as in
    :func:`requested_values`. Streams ``probabilities_path`` in record batches."""
    metadata = _read_metadata(metadata_path)
    asked, lists = _requests(metadata, requests)
    sample_condition = dict(zip(metadata[SAMPLE_ID].astype(str), metadata["condition"].astype(str)))

    try:
        predicted = pd.read_parquet(predicted_path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ReportError(f"{predicted_path} cannot be read as predicted metadata: {exc}") from exc
    if SAMPLE_ID not in predicted:
        raise ReportError(f"{predicted_path} has no {SAMPLE_ID!r} column")
    predicted[SAMPLE_ID] = predicted[SAMPLE_ID].astype(str)
    unknown = sorted(set(predicted[SAMPLE_ID]) - set(sample_condition))
    if unknown:
        raise ReportError(
            f"{predicted_path} predicts {len(unknown)} samples that {metadata_path} does not list "
            f"(first: {unknown[0]!r}): the files are not of the same run"
        )
    if predicted[SAMPLE_ID].duplicated().any():
        raise ReportError(
            f"{predicted_path} lists sample {predicted[SAMPLE_ID][predicted[SAMPLE_ID].duplicated()].iloc[0]!r} twice"
        )
    top_fields = [str(c) for c in predicted.columns if c != SAMPLE_ID]
    top = predicted.set_index(SAMPLE_ID)
    top = pd.DataFrame({f: _canonical_series(top[f]) for f in top_fields}, index=top.index)

    # The requested (sample, field, value) triples, for the probability look-up.
    wanted = pd.DataFrame(
        [
            (sample, key, value)
            for sample, condition in sample_condition.items()
            for key, value in asked.get(condition, {}).items()
        ],
        columns=[SAMPLE_ID, "field", "value"],
    )
    scored_pairs, matched, seen, prob_fields = _scan_probabilities(probabilities_path, wanted)

    fields_predicted = list(dict.fromkeys([*top_fields, *prob_fields]))
    requested_fields = list(dict.fromkeys(k for request in asked.values() for k in request))
    fields = [f for f in requested_fields if f in set(fields_predicted)]
    ordered = [k for k in FIELD_ORDER if k in fields] + [f for f in fields if f not in FIELD_ORDER]
    not_predicted: dict[str, list[str]] = {}
    for condition, request in asked.items():
        for key in request:
            if key not in fields:
                not_predicted.setdefault(key, []).append(condition)

    probability = {(s, f): p for s, f, p in matched.itertuples(index=False, name=None)}
    scored = set(scored_pairs.itertuples(index=False, name=None))
    samples_of: dict[str, list[str]] = {}
    for sample, condition in sample_condition.items():
        samples_of.setdefault(condition, []).append(sample)

    rows = []
    for condition, request in asked.items():
        samples = samples_of.get(condition, [])
        mine = top.reindex(samples)
        for key in ordered:
            if key not in request:
                continue
            value = request[key]
            tops = [t for t in mine[key] if t is not None and not pd.isna(t)] if key in mine else []
            probabilities = [probability.get((s, key), 0.0) for s in samples if (s, key) in scored]
            common = pd.Series(tops, dtype=object).value_counts() if tops else None
            rows.append(
                {
                    "condition": condition,
                    "field": key,
                    "requested": value,
                    "samples": len(samples),
                    "predicted": len(tops),
                    "top_match_share": sum(t == value for t in tops) / len(tops) if tops else np.nan,
                    "scored": len(probabilities),
                    "mean_probability": float(np.mean(probabilities)) if probabilities else np.nan,
                    "most_predicted": common.index[0] if common is not None else None,
                    "requested_seen": (key, value) in seen,
                }
            )
    columns = [
        "condition",
        "field",
        "requested",
        "samples",
        "predicted",
        "top_match_share",
        "scored",
        "mean_probability",
        "most_predicted",
        "requested_seen",
    ]
    table = pd.DataFrame(rows, columns=columns)
    for column in ("samples", "predicted", "scored"):
        table[column] = table[column].astype("int64")
    table["requested_seen"] = table["requested_seen"].astype(bool)
    return RoundTrip(
        table=table,
        conditions=[c for c in asked if c in set(table["condition"])],
        fields=ordered,
        backend=backend_name(file_label(metadata_path), metadata),
        samples=len(sample_condition),
        not_predicted=not_predicted,
        predicted_fields=fields_predicted,
        lists=lists,
    )


def _scan_probabilities(path, wanted: pd.DataFrame):
    """One pass over the class probabilities, a record batch at a time.

    Returns the (sample, field) pairs scored, the probability of each requested (sample,
    field, value), the (field, value) pairs the predictor outputs at all, and the fields.
    """
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path} cannot be read as class probabilities: {exc}") from exc
    columns = [SAMPLE_ID, "field", "value", "probability"]
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ReportError(f"{path} lacks the columns {missing}: it should be long form {columns}")
    pairs, matches, values = [], [], []
    row = 0
    for batch in parquet.iter_batches(batch_size=PROBABILITY_BATCH, columns=columns):
        frame = batch.to_pandas()
        frame[SAMPLE_ID] = frame[SAMPLE_ID].astype(str)
        frame["field"] = frame["field"].astype(str)
        frame["value"] = _canonical_series(frame["value"])
        p = pd.to_numeric(frame["probability"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(p) | (p < -1e-6) | (p > 1 + 1e-6)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            found = frame["probability"].iloc[i]
            found = repr(found) if isinstance(found, str) else str(found)
            raise ReportError(
                f"{path} row {row + i + 1}: probability {found} for sample "
                f"{frame[SAMPLE_ID].iloc[i]!r}, field {frame['field'].iloc[i]!r} is not a number from 0 to 1"
            )
        frame["probability"] = p
        pairs.append(frame[[SAMPLE_ID, "field"]].drop_duplicates())
        values.append(frame[["field", "value"]].drop_duplicates())
        if len(wanted):
            matches.append(frame.merge(wanted, on=[SAMPLE_ID, "field", "value"]))
        row += len(frame)
    empty = pd.DataFrame(columns=[SAMPLE_ID, "field", "value", "probability"])
    pairs_frame = pd.concat(pairs).drop_duplicates() if pairs else empty[[SAMPLE_ID, "field"]]
    values_frame = pd.concat(values).drop_duplicates() if values else empty[["field", "value"]]
    matched = pd.concat(matches) if matches else empty
    twice = matched.duplicated([SAMPLE_ID, "field", "value"])
    if twice.any():
        first = matched[twice].iloc[0]
        raise ReportError(
            f"{path} gives sample {first[SAMPLE_ID]!r}, field {first['field']!r}, value {first['value']!r} "
            "more than one probability"
        )
    seen = set(values_frame.itertuples(index=False, name=None))
    fields = list(dict.fromkeys(values_frame["field"]))
    return pairs_frame, matched[[SAMPLE_ID, "field", "probability"]], seen, fields


_ROUND_TRIP_HEADERS = {
    "condition": "condition",
    "field": "field",
    "requested": "requested",
    "samples": "samples",
    "top_match_share": "top prediction = request",
    "mean_probability": "mean probability of request",
    "most_predicted": "most predicted",
    "predicted": "with a prediction",
    "requested_seen": "request among predictor's values",
}


def write_round_trip_table(rt: RoundTrip, path: str | os.PathLike) -> pd.DataFrame:
    """The round-trip table as TSV (``.tsv``), an HTML page (``.html``) or CSV."""
    table = rt.table
    if Path(path).suffix.lower() not in (".html", ".htm"):
        write_delimited(table, path, float_format="%.6g")
        return table
    shown = table.rename(columns=_ROUND_TRIP_HEADERS)[list(_ROUND_TRIP_HEADERS.values())]
    notes = [
        f"{len(rt.conditions):,} conditions, {rt.samples:,} samples, fields: {', '.join(rt.fields) or 'none'}. "
        "Per condition and requested field: the share of its samples whose top predicted value is the "
        "requested one, and the mean probability the predictor gave the requested value.",
        "Values are compared as text, case-sensitively, after trimming spaces (65.0 = 65): an ontology id "
        "never equals a name.",
    ]
    unseen = table[~table["requested_seen"]]
    if len(unseen):
        notes.append(
            f"{len(unseen):,} requests name a value the predictor never outputs for its field "
            "(request among predictor's values: false): their probability is 0 by construction."
        )
    for key, conditions in rt.not_predicted.items():
        notes.append(
            f"{key}: requested by {len(conditions):,} conditions, not predicted by metadata prediction; not compared."
        )
    for key, conditions in rt.lists.items():
        notes.append(f"{key}: requested by {len(conditions):,} conditions as {LIST_REASON}; not compared.")
    write_html_table(
        shown,
        path,
        title=f"Round trip: requested vs predicted metadata ({len(rt.conditions):,} conditions)",
        notes=notes,
        emulator=emulator_warning(rt.backend),
        code_columns=["requested", "most predicted"],
    )
    return table


def _round_trip_matrices(rt: RoundTrip) -> tuple[np.ndarray, np.ndarray]:
    """conditions x fields of the share and of the mean probability; NaN = not requested."""
    index = {c: i for i, c in enumerate(rt.conditions)}
    columns = {f: j for j, f in enumerate(rt.fields)}
    share = np.full((len(rt.conditions), len(rt.fields)), np.nan)
    probability = share.copy()
    for row in rt.table.itertuples(index=False):
        share[index[row.condition], columns[row.field]] = row.top_match_share
        probability[index[row.condition], columns[row.field]] = row.mean_probability
    return share, probability


def _overall(rt: RoundTrip, column: str, weight: str) -> np.ndarray:
    """Per field, the sample-weighted mean over the conditions that requested it."""
    out = np.full(len(rt.fields), np.nan)
    for j, key in enumerate(rt.fields):
        rows = rt.table[(rt.table["field"] == key) & rt.table[column].notna() & (rt.table[weight] > 0)]
        if len(rows):
            out[j] = float(np.average(rows[column], weights=rows[weight]))
    return out


def plot_round_trip(rt: RoundTrip, path: str | os.PathLike) -> Path:
    """Heat maps, condition x field, of the share of samples whose top prediction is the
    request and of the mean probability of the request; a top row for all conditions.

    Colours: cividis (readable with colour-vision deficiencies and in grey scale), 0 to 1;
    grey cells: not requested. Beyond ``MAX_NAMED_CONDITIONS`` conditions the rows are not
    named (the table names them); values are written in the cells up to
    ``MAX_ANNOTATED_CONDITIONS`` conditions.
    """
    from matplotlib import colormaps

    n, k = len(rt.conditions), len(rt.fields)
    if n == 0 or k == 0:
        figure = new_figure(7.0, 2.6)
        axes = figure.add_subplot()
        axes.set_axis_off()
        reason = (
            "no condition requested a field that metadata prediction predicts"
            f" (predicted: {', '.join(rt.predicted_fields) or 'none'};"
            f" requested, not predicted: {', '.join(rt.not_predicted) or 'none'}"
            + (f"; lists, not compared: {', '.join(rt.lists)}" if rt.lists else "")
            + ")"
        )
        axes.text(0.0, 0.6, "Nothing to compare:\n" + _wrap(reason, 80), va="top", fontsize="medium")
        axes.set_title(titled("Round trip: requested vs predicted metadata", rt.backend), loc="left")
        return save_figure(figure, path)

    named = n <= MAX_NAMED_CONDITIONS
    annotate = n <= MAX_ANNOTATED_CONDITIONS and k <= 14
    longest = max(len(_short(c)) for c in rt.conditions) if named else 0
    cell = 0.55 if annotate else 0.32
    width = 2 * (k * cell + 0.4) + (0.075 * longest if named else 0.6) + 1.6
    rows_height = (0.26 * n if named else 6.0) + 0.5
    longest_field = max(len(f) for f in rt.fields)
    figure = new_figure(max(7.0, width), rows_height + 0.07 * longest_field + 2.6)
    # The top row ("all conditions", only for several) is one condition row high, at least a readable strip.
    several = n > 1
    ratios = [max(0.35, min(0.6, rows_height / n)), max(rows_height, 0.8)] if several else [1.0]
    grid = figure.add_gridspec(len(ratios), 2, height_ratios=ratios)
    colours = colormaps["cividis"].with_extremes(bad="#e5e7eb")
    share, probability = _round_trip_matrices(rt)
    overall = [_overall(rt, "top_match_share", "predicted"), _overall(rt, "mean_probability", "scored")]
    image = None
    for column, (matrix, total, heading) in enumerate(
        (
            (share, overall[0], "share of samples whose top\nprediction is the request"),
            (probability, overall[1], "mean probability given to\nthe requested value"),
        )
    ):
        top_axes = figure.add_subplot(grid[0, column]) if several else None
        axes = figure.add_subplot(grid[-1, column], sharex=top_axes)
        image = axes.imshow(
            np.ma.masked_invalid(matrix), cmap=colours, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
        )
        (top_axes or axes).set_title(heading, loc="left", fontsize="medium")
        if top_axes is not None:
            top_axes.imshow(np.ma.masked_invalid(total[None, :]), cmap=colours, vmin=0, vmax=1, aspect="auto")
            top_axes.set_yticks([0], ["all conditions"] if column == 0 else [""])
            top_axes.tick_params(axis="x", labelbottom=False, bottom=False)
            for j, value in enumerate(total):
                if np.isfinite(value):
                    top_axes.text(j, 0, f"{value:.0%}", ha="center", va="center", fontsize="small", color=_ink(value))
        if annotate:
            for i in range(n):
                for j in range(k):
                    value = matrix[i, j]
                    if np.isfinite(value):
                        axes.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize="x-small", color=_ink(value))
        axes.set_xticks(range(k), rt.fields, rotation=45, ha="right", rotation_mode="anchor", fontsize="small")
        if named:
            axes.set_yticks(
                range(n),
                [_short(c) for c in rt.conditions] if column == 0 else [""] * n,
                fontsize="small" if n > 20 else None,
            )
        else:
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(f"{n:,} conditions, in table order (names in round_trip.tsv)")
    figure.colorbar(image, ax=figure.axes, label="0 to 1 (grey: not requested or not predicted)", shrink=0.6)
    figure.suptitle(
        titled(
            f"Round trip: requested vs predicted metadata ({_count(n, 'condition')}, {_count(rt.samples, 'sample')})",
            rt.backend,
        ),
        x=0.01,
        ha="left",
    )
    return save_figure(figure, path)


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _ink(value: float) -> str:
    """Text colour on a cividis cell: white on the dark (low) end, black on the light end."""
    return "white" if value < 0.55 else "black"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def write_round_trip(
    metadata_path: str | os.PathLike,
    predicted_path: str | os.PathLike,
    probabilities_path: str | os.PathLike,
    *,
    table: str | os.PathLike | None = None,
    html: str | os.PathLike | None = None,
    figure: str | os.PathLike | None = None,
    requests: Mapping[str, Mapping[str, Any]] | None = None,
) -> RoundTrip:
    """Compute once and write each output given a path (rule report_round_trip)."""
    rt = compute_round_trip(metadata_path, predicted_path, probabilities_path, requests=requests)
    if table is not None:
        write_round_trip_table(rt, table)
    if html is not None:
        write_round_trip_table(rt, html)
    if figure is not None:
        plot_round_trip(rt, figure)
    return rt


# --- reference conditioning: MA plots ----------------------------------------------------


def perturbed_gene(ontology_id: Any, perturbation_type: Any) -> str | None:
    """The Ensembl gene a perturbation acts on (version dropped), or ``None`` when it is not
    a gene perturbation (a compound, a control, no type)."""
    kind = canonical_value(perturbation_type)
    identifier = canonical_value(ontology_id)
    if kind is None or identifier is None or kind.lower() not in GENE_PERTURBATIONS:
        return None
    match = _ENSEMBL.fullmatch(identifier)
    return match.group(1) if match else None


def describe_perturbation(row: Mapping[str, Any]) -> tuple[str, list[str]]:
    """A condition's perturbation in words, and the Ensembl genes it acts on (versions dropped).

    GEM-1: ``perturbation_type``, ``perturbation_ontology_id``, dose and time, the gene by
    :func:`perturbed_gene`. GEM-2: its perturbation lists (a list, or its JSON text as
    ``metadata.parquet`` holds it), each element's fields (``smiles CCO``), the genes those of
    ``gene_perturbations`` whose value is an Ensembl gene id. ``"no perturbation"`` for none.
    """
    words = [canonical_value(row.get(k)) for k in ("perturbation_type", "perturbation_ontology_id")]
    words += [canonical_value(row.get(k)) for k in ("perturbation_dose", "perturbation_time")]
    gene = perturbed_gene(row.get("perturbation_ontology_id"), row.get("perturbation_type"))
    genes = [gene] if gene else []
    for key, spec in GEM2_METADATA_KEYS.items():
        elements = list_value(row.get(key), text=True) if spec.items is not None else None
        for element in elements or []:
            if isinstance(element, Mapping):
                values = list(element.values())
                words += [f"{k} {canonical_value(v)}" for k, v in element.items()]
            else:
                values = [element]
                words.append(canonical_value(element))
            if key == "gene_perturbations":
                for value in values:
                    match = _ENSEMBL.fullmatch(str(value).strip())
                    if match and match.group(1) not in genes:
                        genes.append(match.group(1))
    return " ".join(w for w in words if w) or "no perturbation", genes


@dataclass
class ReferenceComparison:
    """Generated mean vs reference, per reference-conditioned condition (table order).

    ``panels`` holds (mean log2 CPM, log2fc) over all genes for the first ``max_panels``
    conditions; ``top`` the top changed genes of every condition (plus the perturbed gene
    with its rank when it is not among them); ``perturbed[c]`` the marked gene, or ``None``.
    """

    conditions: list[str]
    samples: dict[str, int]
    references: dict[str, str]
    perturbation: dict[str, str]
    perturbed: dict[str, str | None]
    perturbed_point: dict[str, tuple[float, float] | None]
    pseudo_cpm: dict[str, float]
    panels: dict[str, tuple[np.ndarray, np.ndarray]]
    top: pd.DataFrame
    n_genes: int
    backend: str
    top_n: int
    values: str = COUNTS
    notes: list[str] = field(default_factory=list)


class _RowReader:
    """Rows of a Parquet file in blocks of any size, a record batch at a time."""

    def __init__(self, parquet: pq.ParquetFile, columns: list[str]):
        self._batches = parquet.iter_batches(batch_size=4096, columns=columns)
        self._pending: list[pa.RecordBatch] = []
        self._available = 0

    def take(self, n: int) -> pa.Table:
        while self._available < n:
            batch = next(self._batches, None)
            if batch is None:
                break
            self._pending.append(batch)
            self._available += batch.num_rows
        table = pa.Table.from_batches(self._pending) if self._pending else None
        if table is None or table.num_rows < n:
            raise ReportError("fewer rows than asked for")
        head, rest = table.slice(0, n), table.slice(n)
        self._pending = rest.to_batches()
        self._available = rest.num_rows
        return head


def _gene_blocks(expression: pq.ParquetFile, samples: list[str], references: pq.ParquetFile, columns: list[str], where):
    """Per row group of the expression file: gene ids, then the generated samples' values
    in chunks of ``SAMPLE_CHUNK`` samples (a generator), and the references' counts.
    ``where`` names the references file in errors."""
    reader = _RowReader(references, [GENE_ID, *columns])
    start = 0
    for group in range(expression.metadata.num_row_groups):
        ids = expression.read_row_group(group, columns=[GENE_ID]).column(0).to_pylist()
        try:
            ref = reader.take(len(ids))
        except ReportError:
            raise ReportError(f"{where} has fewer genes than the expression file") from None
        ref_ids = ref.column(0).to_pylist()
        if ref_ids != ids:
            at = next(i for i, (a, b) in enumerate(zip(ids, ref_ids)) if a != b)
            raise ReportError(
                f"{where}: gene {start + at + 1} is {ref_ids[at]!r}, the expression file's "
                f"{ids[at]!r}: references must be aligned to the model's gene order"
            )
        ref_counts = (
            np.stack([np.asarray(ref.column(c).to_numpy(zero_copy_only=False), dtype=np.float64) for c in columns])
            if columns
            else np.zeros((0, len(ids)))
        )

        def chunks(group=group) -> Iterator[tuple[int, np.ndarray]]:
            for first in range(0, len(samples), SAMPLE_CHUNK):
                names = samples[first : first + SAMPLE_CHUNK]
                table = expression.read_row_group(group, columns=names)
                yield first, np.stack([np.asarray(c.to_numpy(zero_copy_only=False), np.float64) for c in table.columns])

        yield start, ids, chunks, ref_counts
        start += len(ids)
    try:
        reader.take(1)
    except ReportError:
        return
    raise ReportError(f"{where} has more genes than the expression file")


def compute_reference_comparison(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    references_path: str | os.PathLike,
    *,
    top_n: int = DEFAULT_TOP_GENES,
    max_panels: int = MAX_MA_PANELS,
) -> ReferenceComparison:
    """Generated mean CPM vs the reference's CPM of every reference-conditioned condition.

    Two passes over the expression file, a row group and ``SAMPLE_CHUNK`` samples at a
    time: library sizes (and the perturbed genes' counts), then per block the condition
    means, fold changes, the running top genes and the panels' points.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, not {top_n}")
    try:
        expression = pq.ParquetFile(expression_path)
        references = pq.ParquetFile(references_path)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"cannot read the expression or references file: {exc}") from exc
    names = expression.schema_arrow.names
    if names[:1] != [GENE_ID]:
        raise ReportError(f"{expression_path} has no leading {GENE_ID!r} column; is it a merged expression file?")
    label = json.loads((expression.schema_arrow.metadata or {}).get(SCHEMA_KEY, b"{}"))
    values = label.get("values", COUNTS)
    if values not in (COUNTS, LOG_CPM):
        raise ReportError(f"{expression_path} holds values of unknown kind {values!r}")
    metadata = _read_metadata(metadata_path)
    if list(metadata[SAMPLE_ID].astype(str)) != names[1:]:
        raise ReportError(f"{metadata_path} does not list the samples of {expression_path} in the same order")
    if REFERENCE not in metadata:
        raise ReportError(f"{metadata_path} has no {REFERENCE!r} column: no condition is reference-conditioned")
    referenced = metadata[metadata[REFERENCE].notna()]
    conditions = list(dict.fromkeys(referenced["condition"].astype(str)))
    if not conditions:
        raise ReportError(f"{metadata_path}: no sample has a reference")
    ref_names = references.schema_arrow.names
    if ref_names[:1] != [GENE_ID]:
        raise ReportError(f"{references_path} has no leading {GENE_ID!r} column")
    lacking = [c for c in conditions if c not in ref_names]
    if lacking:
        raise ReportError(
            f"{references_path} has no column for the reference-conditioned conditions {lacking[:5]}"
            + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        )

    samples = [str(s) for s in referenced[SAMPLE_ID]]
    index = {c: i for i, c in enumerate(conditions)}
    sample_condition = np.array([index[str(c)] for c in referenced["condition"]])
    first_rows = referenced.groupby(referenced["condition"].astype(str), sort=False).first()
    perturbed, perturbation, references_named = {}, {}, {}
    notes = []
    for c in conditions:
        row = first_rows.loc[c]
        perturbation[c], acted_on = describe_perturbation(row)
        perturbed[c] = acted_on[0] if len(acted_on) == 1 else None
        if len(acted_on) > 1:
            named = ", ".join(acted_on[:3]) + (", …" if len(acted_on) > 3 else "")
            notes.append(f"{c}: {len(acted_on)} perturbed genes ({named}): none marked")
        reference = canonical_value(row.get(REFERENCE)) or "?"
        sample = canonical_value(row.get(REFERENCE_SAMPLE))
        references_named[c] = f"{Path(reference).name}:{sample}" if sample else Path(reference).name
    targets = {gene for gene in perturbed.values() if gene}

    # Pass 1: library sizes; the perturbed genes' values (their rank needs their fold change first).
    library = np.zeros(len(samples))
    ref_library = np.zeros(len(conditions))
    target_values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n_genes = 0
    for _, ids, chunks, ref_counts in _gene_blocks(expression, samples, references, conditions, references_path):
        ref_library += ref_counts.sum(axis=1)
        bare = [_ENSEMBL.sub(r"\1", g) for g in ids]
        hits = {g: i for i, g in enumerate(bare) if g in targets}
        target_samples = {g: np.zeros(len(samples)) for g in hits}
        for first, block in chunks():
            if values == COUNTS:
                library[first : first + len(block)] += block.sum(axis=1)
            for g, i in hits.items():
                target_samples[g][first : first + len(block)] = block[:, i]
        for g, i in hits.items():
            target_values.setdefault(g, (target_samples[g], ref_counts[:, i]))
        n_genes += len(ids)
    if values == COUNTS:
        usable = library > 0
        if (~usable).any():
            notes.append(f"{int((~usable).sum()):,} generated samples with no counts left out of the means")
    else:
        usable = np.ones(len(samples), bool)
    membership = np.zeros((len(conditions), len(samples)))
    membership[sample_condition[usable], np.flatnonzero(usable)] = 1.0
    counted = membership.sum(axis=1)
    membership /= np.where(counted > 0, counted, 1.0)[:, None]
    with np.errstate(divide="ignore"):
        pseudo = np.maximum(1.0, np.where(ref_library > 0, 1e6 / ref_library, 1.0))
    safe_library = np.where(library > 0, library, 1.0)
    safe_ref = np.where(ref_library > 0, ref_library, 1.0)

    def to_cpm(block: np.ndarray, first: int) -> np.ndarray:
        if values == LOG_CPM:
            return np.expm1(block)
        return block / safe_library[first : first + len(block), None] * 1e6

    def fold(gen: np.ndarray, ref: np.ndarray, p: np.ndarray):
        lg, lr = np.log2(gen + p), np.log2(ref + p)
        return lg - lr, (lg + lr) / 2

    target_fold: dict[str, tuple[float, float, float, float]] = {}
    for c, gene in perturbed.items():
        if gene in target_values:
            sample_values, ref_values = target_values[gene]
            i = index[c]
            cpm = to_cpm(sample_values[:, None], 0)[:, 0]
            gen = float(membership[i] @ cpm)
            ref = float(ref_values[i] / safe_ref[i] * 1e6)
            m, a = fold(np.array(gen), np.array(ref), pseudo[i])
            target_fold[c] = (float(m), float(a), gen, ref)
        elif gene:
            notes.append(f"{c}: perturbed gene {gene} is not among the model's genes")

    # Pass 2: means, fold changes, running top genes, panel points, the targets' ranks.
    shown = conditions[:max_panels]
    panel_parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in shown}
    k = top_n
    top_abs = np.full((len(conditions), 0), -np.inf)
    top_pos = np.zeros((len(conditions), 0), np.int64)
    top_vals = np.zeros((len(conditions), 0, 4))  # log2fc, mean log2 CPM, generated CPM, reference CPM
    top_ids = np.zeros((len(conditions), 0), object)
    above = np.zeros(len(conditions), np.int64)  # genes changed more than the perturbed gene
    target_abs = np.array([abs(target_fold[c][0]) if c in target_fold else np.inf for c in conditions])
    for start, ids, chunks, ref_counts in _gene_blocks(expression, samples, references, conditions, references_path):
        means = np.zeros((len(conditions), len(ids)))
        for first, block in chunks():
            means += membership[:, first : first + len(block)] @ to_cpm(block, first)
        ref_cpm = ref_counts / safe_ref[:, None] * 1e6
        m, a = fold(means, ref_cpm, pseudo[:, None])
        # A margin: the target's own fold change was summed in another order in pass 1.
        above += (np.abs(m) > target_abs[:, None] + 1e-9).sum(axis=1)
        for c in shown:
            i = index[c]
            panel_parts[c].append((a[i].astype(np.float32), m[i].astype(np.float32)))
        width = min(k, len(ids))
        best = (
            np.argpartition(-np.abs(m), width - 1, axis=1)[:, :width] if width else np.zeros((len(conditions), 0), int)
        )
        rows = np.arange(len(conditions))[:, None]
        top_abs = np.concatenate([top_abs, np.abs(m)[rows, best]], axis=1)
        top_pos = np.concatenate([top_pos, start + best], axis=1)
        stacked = np.stack([m, a, means, ref_cpm], axis=2)
        top_vals = np.concatenate([top_vals, stacked[rows, best]], axis=1)
        top_ids = np.concatenate([top_ids, np.array(ids, object)[best]], axis=1)
        # Largest change first; equal changes in gene order.
        order = np.lexsort((top_pos, -top_abs), axis=1)[:, :k] if top_abs.shape[1] else top_pos
        top_abs, top_pos = np.take_along_axis(top_abs, order, 1), np.take_along_axis(top_pos, order, 1)
        top_vals = np.take_along_axis(top_vals, order[:, :, None], 1)
        top_ids = np.take_along_axis(top_ids, order, 1)

    rows = []
    for c in conditions:
        i = index[c]
        listed = set()
        for rank in range(top_ids.shape[1]):
            gene = top_ids[i, rank]
            listed.add(_ENSEMBL.sub(r"\1", str(gene)))
            m, a, gen, ref = top_vals[i, rank]
            rows.append((c, rank + 1, gene, m, a, gen, ref, _ENSEMBL.sub(r"\1", str(gene)) == perturbed[c]))
        gene = perturbed[c]
        if gene and gene not in listed and c in target_fold:
            m, a, gen, ref = target_fold[c]
            rows.append((c, int(above[i]) + 1, gene, m, a, gen, ref, True))
    top = pd.DataFrame(
        rows,
        columns=[
            "condition",
            "rank",
            GENE_ID,
            "log2fc",
            "mean_log2_cpm",
            "generated_cpm",
            "reference_cpm",
            "perturbed",
        ],
    )
    top["rank"] = top["rank"].astype("int64")
    top["perturbed"] = top["perturbed"].astype(bool)
    panels = {
        c: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        for c, parts in panel_parts.items()
        if parts
    }
    return ReferenceComparison(
        conditions=conditions,
        samples={c: int(counted[index[c]]) for c in conditions},
        references=references_named,
        perturbation=perturbation,
        perturbed=perturbed,
        perturbed_point={c: (target_fold[c][1], target_fold[c][0]) if c in target_fold else None for c in conditions},
        pseudo_cpm={c: float(pseudo[index[c]]) for c in conditions},
        panels=panels,
        top=top,
        n_genes=n_genes,
        backend=backend_name(file_label(expression_path), metadata),
        top_n=top_n,
        values=values,
        notes=notes,
    )


def plot_ma(ref: ReferenceComparison, path: str | os.PathLike, *, table_name: str = "top_changed_genes.tsv") -> Path:
    """Small multiples, one MA plot per reference-conditioned condition (the first
    ``max_panels``; the title says how many are left out and where the table is).

    Grey: every gene expressed in the reference or the generated samples (drawn as an image
    inside the SVG, so the file stays small); blue: the condition's top changed genes;
    vermillion, labelled: the perturbed gene.
    """
    shown = [c for c in ref.conditions if c in ref.panels]
    n = len(shown)
    columns = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    rows = math.ceil(n / columns)
    figure = new_figure(max(6.0, 3.4 * columns + 0.6), 2.9 * rows + 1.3)
    axes_grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    limit = 1.0
    for c in shown:
        a, m = ref.panels[c]
        floor = math.log2(ref.pseudo_cpm[c])
        keep = a > floor + 1e-6
        if keep.any():
            limit = max(limit, float(np.abs(m[keep]).max()))
    limit = min(limit * 1.15, 16.0)
    x_low = min(math.log2(ref.pseudo_cpm[c]) for c in shown) if shown else 0.0
    x_high = max((float(ref.panels[c][0].max()) for c in shown if len(ref.panels[c][0])), default=1.0)
    for number, axes in enumerate(axes_grid.flat):
        if number >= n:
            axes.set_axis_off()
            continue
        c = shown[number]
        a, m = ref.panels[c]
        floor = math.log2(ref.pseudo_cpm[c])
        keep = a > floor + 1e-6  # a gene at 0 in both: no information
        axes.scatter(
            a[keep], np.clip(m[keep], -limit, limit), s=2, color=_GREY, alpha=0.35, linewidths=0, rasterized=True
        )
        mine = ref.top[(ref.top["condition"] == c) & ~ref.top["perturbed"]]
        axes.scatter(mine["mean_log2_cpm"], np.clip(mine["log2fc"], -limit, limit), s=9, color=_BLUE, linewidths=0)
        axes.axhline(0, color="black", linewidth=0.6)
        point = ref.perturbed_point.get(c)
        if point is not None:
            x, y = point
            axes.scatter(
                [x], [np.clip(y, -limit, limit)], s=40, color=_VERMILLION, edgecolors="black", linewidths=0.6, zorder=4
            )
            # Inside the panel: towards its middle, above a point that went down, below one that went up.
            right = x > (x_low + x_high) / 2
            axes.annotate(
                f"{ref.perturbed[c]} (target)\n"
                + (f"log2fc {y:+.2f}" if x > floor + 1e-6 else "0 in reference and generated"),
                (x, np.clip(y, -limit, limit)),
                xytext=(-7 if right else 7, 5 if y < 0 else -5),
                textcoords="offset points",
                fontsize="x-small",
                color=_VERMILLION,
                ha="right" if right else "left",
                va="bottom" if y < 0 else "top",
            )
        axes.set_title(
            f"{_short(c, 30)}\n{_short(ref.perturbation[c], 38)} · n={ref.samples[c]}",
            loc="left",
            fontsize="small",
        )
        axes.grid(alpha=0.25)
    for number, axes in enumerate(axes_grid.flat[:n]):
        if number + columns >= n:  # nothing drawn below: this panel carries the x axis
            axes.xaxis.set_tick_params(labelbottom=True)
            axes.set_xlabel("mean log2 CPM")
    for axes in axes_grid[:, 0]:
        axes.set_ylabel("log2 FC vs reference")
    left_out = len(ref.conditions) - n
    heading = f"MA plots: generated mean vs reference ({_count(len(ref.conditions), 'reference-conditioned condition')}"
    heading += f"; first {n:,} shown, {left_out:,} left out: all in {table_name})" if left_out else ")"
    note = (
        f"blue: top {ref.top_n} changed genes; vermillion: the perturbed gene; pseudo-count 1 CPM "
        "or one reference count, whichever is more"
    )
    # About 13 characters per inch at this size: wrap to the figure's width.
    characters = int(figure.get_figwidth() * 13)
    lines = [_wrap(line, characters) for line in (heading, note)]
    figure.suptitle(titled("\n".join(lines), ref.backend), x=0.01, ha="left", fontsize="medium")
    return save_figure(figure, path)


def write_top_changed_genes(ref: ReferenceComparison, path: str | os.PathLike) -> pd.DataFrame:
    """The top changed genes per condition as TSV (``.tsv``), HTML (``.html``) or CSV."""
    table = ref.top
    if Path(path).suffix.lower() not in (".html", ".htm"):
        write_delimited(table, path, float_format="%.6g")
        return table
    shown = table.rename(
        columns={
            GENE_ID: "gene id",
            "log2fc": "log2 FC",
            "mean_log2_cpm": "mean log2 CPM",
            "generated_cpm": "generated CPM",
            "reference_cpm": "reference CPM",
            "perturbed": "perturbed gene",
        }
    )
    references = pd.Series(ref.references).rename("reference")
    shown.insert(1, "reference", shown["condition"].map(references))
    notes = [
        f"{len(ref.conditions):,} reference-conditioned conditions, {ref.n_genes:,} genes; per condition the "
        f"{ref.top_n} genes with the largest |log2 FC| of the generated samples' mean CPM over the reference's "
        "CPM, and the perturbed gene (with its rank) when it is not among them.",
        "log2 FC = log2((generated + p) / (reference + p)), mean log2 CPM = the mean of the two logs; "
        "p = 1 CPM, or one count of the reference's library in CPM when that is more.",
        *ref.notes,
    ]
    if ref.values == LOG_CPM:
        notes.append("The expression file holds log1p-CPM (as_counts: false): CPM = expm1 of its values.")
    write_html_table(
        shown,
        path,
        title=f"Top changed genes vs the reference ({len(ref.conditions):,} conditions)",
        notes=notes,
        emulator=emulator_warning(ref.backend),
        code_columns=["gene id", "reference"],
    )
    return table


def write_reference_report(
    expression_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    references_path: str | os.PathLike,
    *,
    figure: str | os.PathLike | None = None,
    table: str | os.PathLike | None = None,
    html: str | os.PathLike | None = None,
    top_n: int = DEFAULT_TOP_GENES,
    max_panels: int = MAX_MA_PANELS,
) -> ReferenceComparison:
    """Compute once and write each output given a path (rule report_reference)."""
    ref = compute_reference_comparison(
        expression_path, metadata_path, references_path, top_n=top_n, max_panels=max_panels
    )
    if figure is not None:
        plot_ma(ref, figure, table_name=Path(table).name if table is not None else "top_changed_genes.tsv")
    if table is not None:
        write_top_changed_genes(ref, table)
    if html is not None:
        write_top_changed_genes(ref, html)
    return ref
