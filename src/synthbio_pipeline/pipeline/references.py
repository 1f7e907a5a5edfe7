"""Reference samples and users' own counts: checked, and aligned to the model's gene order.

A reference-conditioned row of the conditions table names a counts file (``reference``) and a
sample in it (``reference_sample``); an ``annotate:`` entry of the config names a counts file
whose samples get their metadata predicted. Both go to the service as counts vectors in the
model's gene order, so before anything is sent each file is checked (:func:`reference_problems`,
:func:`annotation_problems`) and refused, naming the file, the sample and what was found, when:

- the file is missing or unreadable, or the sample is not in it;
- its gene ids are not Ensembl gene ids (gene symbols such as ``TP53``, say);
- the values are not counts: negative, fractional (TPM, CPM, normalised data), missing, or the
  workflow's own log1p-CPM output;
- it was made for the other modality (the workflow's own files say which, in their label);
- it covers less than :data:`MIN_GENE_OVERLAP` of the model's genes.

Gene ids are matched without their version (``ENSG00000141510.17`` is ``ENSG00000141510``);
GENCODE's ``_PAR_Y`` copies of pseudoautosomal genes are left out. A model gene the file lacks
gets 0 (:func:`align`, which says how many).

**Gene order.** The service tells a client its gene order only in a result's ``gene_order``
(there is no endpoint; the reference-conditioning example query has counts of the right length
but no ids). The reference-conditioning and metadata-prediction models share their baseline
model's order, which is cached per service and model in
``resources/gene_order/{service}/{baseline model}.json`` (:func:`gene_order_path`). GEM-2 has
its own gene order, one per modality: every GEM-2 id of a modality (``gem-2`` included) shares
that of its baseline compatibility id, ``gem-2-bulk`` or ``gem-2-sc``
(:data:`GENE_ORDER_MODELS`: an output group's source), learned the same way from a one-sample
``predict-expression`` query.
:func:`learn_gene_order` fills the cache from, in order: a result of the baseline model that
this workflow already holds (its predictions, matched to the service by their tickets); else
one paid query of one sample (``mean estimation``), logged and counted as such. The config
option ``gene_order_files`` points at a file instead (:func:`read_gene_order` reads a JSON
list, the cache's JSON, a text file of one id a line, or an ``expression.parquet``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthbio_pipeline.client.http import redact_url, resolve_base_url
from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.formats.parquet import SCHEMA_KEY
from synthbio_pipeline.formats.references import CountsFile, CountsFileError, open_counts
from synthbio_pipeline.pipeline.conditions import Condition, TableProblem
from synthbio_pipeline.pipeline.runner import load_ticket, run_prediction
from synthbio_pipeline.vocabulary.families import (
    GEM2,
    GEM2_MODALITIES,
    GEM2_MODEL_IDS,
    PREDICT_METADATA,
    gem2_model,
    is_gem2,
    output_group,
)
from synthbio_pipeline.vocabulary.gem2 import example_gem2_query
from synthbio_pipeline.vocabulary.models import (
    MEAN_ESTIMATION,
    MODALITY_MODELS,
    PREDICT_METADATA_MODELS,
    get_model,
    is_known_model,
)
from synthbio_pipeline.vocabulary.query import get_valid_query, to_wire
from synthbio_pipeline.vocabulary.words import did_you_mean, quoted

logger = logging.getLogger(__name__)

#: A counts file must cover at least this share of the model's genes (a bulk RNA-seq
#: quantification against any recent Ensembl/GENCODE annotation covers far more).
MIN_GENE_OVERLAP = 0.5
#: An Ensembl gene id (any species), with an optional version and GENCODE's ``_PAR_Y`` suffix.
ENSEMBL_GENE_ID = re.compile(r"(ENS[A-Z]*G\d{11})(?:\.\d+)?(_PAR_Y)?")
#: Below this share of Ensembl ids among a file's gene ids, the file is refused (symbols, say).
MIN_ENSEMBL_SHARE = 0.5
GENE_ORDER_DIR = "resources/gene_order"
REFERENCES_VALUES = "aligned reference counts"


class ReferenceError(SynthbioError, ValueError):
    """A reference or annotation file the workflow refuses; the message names file and sample."""


# --- gene ids ----------------------------------------------------------------------------------


def unversioned(gene_id: str) -> str | None:
    """``ENSG00000141510.17`` -> ``ENSG00000141510``; None for a ``_PAR_Y`` copy or a non-Ensembl id."""
    match = ENSEMBL_GENE_ID.fullmatch(gene_id.strip())
    if match is None or match.group(2):
        return None
    return match.group(1)


def gene_id_problem(genes: Sequence[str]) -> str | None:
    """Why a file's gene ids cannot be matched to the model's (symbols, no ids), or None."""
    if not genes:
        return "it lists no genes"
    ensembl = sum(1 for gene in genes if ENSEMBL_GENE_ID.fullmatch(gene.strip()))
    if ensembl >= MIN_ENSEMBL_SHARE * len(genes):
        normal = [unversioned(gene) for gene in genes]
        seen: dict[str, str] = {}
        for gene, key in zip(genes, normal):
            if key is None:
                continue
            if key in seen:
                return (
                    f"gene {key} appears twice ({seen[key]!r} and {gene!r}; versions are ignored): "
                    "give each gene one row"
                )
            seen[key] = gene
        return None
    examples = quoted([gene for gene in genes if not ENSEMBL_GENE_ID.fullmatch(gene.strip())][:4])
    symbols = sum(1 for gene in genes[:1000] if re.fullmatch(r"[A-Za-z][A-Za-z0-9.-]{0,19}", gene.strip()))
    what = "gene symbols" if symbols >= 0.5 * min(len(genes), 1000) else "not Ensembl gene ids"
    return (
        f"its gene ids are {what} (found {examples}, ...; {ensembl:,} of {len(genes):,} are Ensembl ids): the "
        "models use Ensembl gene ids (ENSG00000141510): map the file's genes to Ensembl ids first"
    )


# --- values ------------------------------------------------------------------------------------


def values_problem(values: np.ndarray, genes: Sequence[str]) -> str | None:
    """Why a sample's values are not counts (negative, fractional, missing), or None."""
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        what = "missing" if np.isnan(values[i]) else "not finite"
        return f"{int((~finite).sum()):,} value(s) are {what} (first: gene {genes[i]})"
    negative = values < 0
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        return f"{int(negative.sum()):,} negative value(s) (first: gene {genes[i]} = {values[i]:g}); counts are >= 0"
    fractional = values != np.floor(values)
    if fractional.any():
        i = int(np.flatnonzero(fractional)[0])
        return (
            f"{int(fractional.sum()):,} fractional value(s) (first: gene {genes[i]} = {values[i]:g}): the models take "
            "raw counts (whole numbers), not TPM, CPM or normalised values"
        )
    return None


def label_problem(source: CountsFile, modality: str) -> str | None:
    """Why the workflow's own label rules the file out for ``modality`` (log1p-CPM; other modality)."""
    label = source.label or {}
    if label.get("values") == "log1p_cpm":
        return "it holds log1p-CPM values (a run with as_counts: false), not counts"
    found = label.get("modality")
    if found is None:
        models = [m for m in label.get("model_ids", [label.get("model_id")]) if m and is_known_model(m)]
        modalities = {get_model(m).modality for m in models}
        found = modalities.pop() if len(modalities) == 1 else None
    if found is not None and found != modality:
        return f"it holds {found} data (its synthbio label says so), but this is a {modality} row"
    return None


# --- alignment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """A sample's counts in the model's gene order, and how well the file covered it."""

    counts: np.ndarray
    #: Model genes the file has / the model's genes / file genes the model does not have.
    matched: int
    model_genes: int
    unused: int
    #: The file's sample it is (set by :func:`align_references`).
    sample: str | None = None

    @property
    def missing(self) -> int:
        """Model genes the file lacks (sent as 0)."""
        return self.model_genes - self.matched

    @property
    def overlap(self) -> float:
        return self.matched / self.model_genes if self.model_genes else 0.0

    @property
    def library_size(self) -> int:
        return int(self.counts.sum())

    def describe(self) -> str:
        return (
            f"{self.matched:,} of the model's {self.model_genes:,} genes ({self.overlap:.1%}); {self.missing:,} "
            f"missing ones set to 0; {self.unused:,} genes of the file not in the model; library size "
            f"{self.library_size:,}"
        )


def align(genes: Sequence[str], values: np.ndarray, gene_order: Sequence[str]) -> Alignment:
    """``values`` (one per file gene, whole numbers) reordered to ``gene_order``; 0 where absent."""
    position = {}
    for i, gene in enumerate(gene_order):
        key = unversioned(gene) or gene
        position.setdefault(key, i)
    counts = np.zeros(len(gene_order), np.int64)
    matched = unused = 0
    for gene, value in zip(genes, values):
        key = unversioned(gene)
        i = position.get(key) if key is not None else None
        if i is None:
            unused += 1
            continue
        counts[i] = int(value)
        matched += 1
    return Alignment(counts, matched, len(gene_order), unused)


def overlap_problem(alignment: Alignment) -> str | None:
    if alignment.overlap < MIN_GENE_OVERLAP:
        return (
            f"it covers {alignment.matched:,} of the model's {alignment.model_genes:,} genes "
            f"({alignment.overlap:.1%}), less than the {MIN_GENE_OVERLAP:.0%} required: is it from another species "
            "or a targeted panel?"
        )
    if alignment.library_size == 0:
        return "its counts sum to 0 over the model's genes"
    return None


# --- checking files --------------------------------------------------------------------------


class CountsFiles:
    """Counts files opened once however many rows use them, with each file's own problem."""

    def __init__(self, base: str | os.PathLike | None = None):
        self.base = Path(base) if base is not None else None
        self._opened: dict[str, CountsFile | str] = {}

    def path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or self.base is None else self.base / path

    def open(self, name: str) -> CountsFile | str:
        """The opened file, or the reason it cannot be used."""
        if name not in self._opened:
            try:
                source = open_counts(self.path(name))
            except CountsFileError as error:
                self._opened[name] = str(error)
            else:
                problem = gene_id_problem(source.genes)
                self._opened[name] = f"{source.path}: {problem}" if problem else source
        return self._opened[name]


def sample_problem(source: CountsFile, sample: str | None) -> tuple[str | None, str | None]:
    """The sample a row means (its ``reference_sample``, or the file's only one) and the problem, if any."""
    if sample is None:
        if len(source.samples) == 1:
            return source.samples[0], None
        shown = quoted(source.samples[:5]) + (", ..." if len(source.samples) > 5 else "")
        return None, f"{source.path} has {len(source.samples):,} samples ({shown}): name one in 'reference_sample'"
    if sample not in source.samples:
        shown = quoted(source.samples[:5]) + (", ..." if len(source.samples) > 5 else "")
        hint = did_you_mean(sample, source.samples)
        return None, f"{source.path} has no sample {sample!r}{hint} (its {len(source.samples):,} samples: {shown})"
    return sample, None


def check_sample(
    source: CountsFile, sample: str, modality: str, gene_order: Sequence[str] | None
) -> tuple[Alignment | None, str | None]:
    """The sample's alignment (when ``gene_order`` is known) and the problem with it, if any."""
    problem = label_problem(source, modality)
    if problem:
        return None, f"{source.path}: {problem}"
    values = source.values([sample])[:, 0]
    problem = values_problem(values, source.genes)
    if problem:
        return None, f"{source.path}, sample {sample!r}: {problem}"
    if gene_order is None:
        return None, None
    alignment = align(source.genes, values, gene_order)
    problem = overlap_problem(alignment)
    if problem:
        return alignment, f"{source.path}, sample {sample!r}: {problem}"
    return alignment, None


def reference_problems(
    conditions: Iterable[Condition],
    table: str | os.PathLike,
    gene_orders: Mapping[str, Sequence[str] | None] | None = None,
    base: str | os.PathLike | None = None,
    files: CountsFiles | None = None,
) -> list[TableProblem]:
    """Every problem with the reference rows' files, as problems of the table's rows.

    ``gene_orders`` (output group -> gene order, or None when not known yet; a GEM-1 group is
    its modality, ``bulk``, a GEM-2 group ``gem-2-bulk``) enables the overlap
    check; ``base`` is the folder relative reference paths start from (the working directory).
    """
    files = files or CountsFiles(base)
    gene_orders = gene_orders or {}
    problems = []
    for condition in conditions:
        if not condition.is_reference:
            continue

        def bad(column: str, message: str, condition: Condition = condition) -> None:
            problems.append(TableProblem(str(table), condition.row, column, message, condition.name))

        source = files.open(condition.reference)
        if isinstance(source, str):
            bad("reference", source)
            continue
        sample, problem = sample_problem(source, condition.reference_sample)
        if problem:
            bad("reference_sample", problem)
            continue
        _, problem = check_sample(source, sample, condition.modality, gene_orders.get(condition.group))
        if problem:
            bad("reference", problem)
    return problems


# --- annotate: users' own counts -------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """An ``annotate:`` entry of the config: a counts file whose samples get metadata predicted."""

    name: str
    path: str
    modality: str
    index: int
    #: The metadata-prediction model (the config's ``model``; default: the modality's GEM-1 one).
    model_id: str = ""

    def __post_init__(self):
        if not self.model_id:
            object.__setattr__(self, "model_id", PREDICT_METADATA_MODELS[self.modality])

    @property
    def group(self) -> str:
        """The output group whose gene order its counts are aligned to (``bulk``, ``gem-2-bulk``)."""
        return output_group(self.model_id, self.modality)


def annotation_models(modality: str) -> list[str]:
    """The metadata-prediction models an ``annotate:`` entry of ``modality`` may name: GEM-1's,
    then GEM-2's (``gem-2``, and its predict-metadata ids of the modality, ensembles included)."""
    gem2 = [
        row.model_id
        for row in GEM2_MODEL_IDS.values()
        if row.operation == PREDICT_METADATA and row.modality == modality
    ]
    return [PREDICT_METADATA_MODELS[modality], GEM2, *gem2]


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def read_annotations(entries: Sequence[Mapping[str, Any]] | None) -> list[Annotation]:
    """The config's ``annotate`` list (shape checked by the schema); names must be unique ids."""
    found, problems, seen = [], [], set()
    for index, entry in enumerate(entries or []):
        name = str(entry.get("name", ""))
        if not NAME_PATTERN.fullmatch(name):
            problems.append(f"annotate[{index}]: name {name!r} is not an id (letters, digits, '_', '.', '-')")
        elif name in seen:
            problems.append(f"annotate[{index}]: name {name!r} is used twice")
        seen.add(name)
        modality = str(entry["modality"])
        model_id = str(entry.get("model") or PREDICT_METADATA_MODELS[modality])
        allowed = annotation_models(modality)
        if model_id not in allowed:
            # A model of a family we know: a metadata predictor of that family and the modality,
            # not merely the nearest spelling (gem-1-bulk is nearest to gem-2-bulk_metadata).
            if is_known_model(model_id) or gem2_model(model_id) is not None:
                same_family = [m for m in allowed if m != GEM2 and is_gem2(m) == is_gem2(model_id)]
                hint = did_you_mean(model_id, same_family) or f"; did you mean {same_family[0]!r}?"
            else:
                hint = did_you_mean(model_id, allowed)
            problems.append(
                f"annotate[{index}] ({name!r}): model {model_id!r} does not predict {modality} metadata"
                f"{hint or f'; one of {quoted(allowed)}'}"
            )
        found.append(Annotation(name, str(entry["path"]), modality, index, model_id))
    if problems:
        raise ReferenceError("the config's annotate list has problems; nothing was sent:\n- " + "\n- ".join(problems))
    return found


def annotation_problems(
    annotations: Iterable[Annotation],
    gene_orders: Mapping[str, Sequence[str] | None] | None = None,
    base: str | os.PathLike | None = None,
    files: CountsFiles | None = None,
    first: int | None = None,
) -> list[str]:
    """Every problem with the ``annotate`` files: each sample's values checked, and the overlap.

    ``first`` limits the samples looked at per file (the query-writing job checks them all).
    """
    files = files or CountsFiles(base)
    gene_orders = gene_orders or {}
    problems = []
    for entry in annotations:
        where = f"config annotate[{entry.index}] ({entry.name!r})"
        source = files.open(entry.path)
        if isinstance(source, str):
            problems.append(f"{where}: {source}")
            continue
        if not source.samples:
            problems.append(f"{where}: {source.path} has no samples")
            continue
        problem = label_problem(source, entry.modality)
        if problem:
            problems.append(f"{where}: {source.path}: {problem}")
            continue
        gene_order = gene_orders.get(entry.group)
        for sample, values in iter_samples(source, limit=first):
            problem = values_problem(values, source.genes)
            if problem is None and gene_order is not None:
                problem = overlap_problem(align(source.genes, values, gene_order))
            if problem:
                problems.append(f"{where}: {source.path}, sample {sample!r}: {problem}")
                break
    return problems


def iter_samples(source: CountsFile, chunk: int = 256, limit: int | None = None) -> Iterable[tuple[str, np.ndarray]]:
    """Every sample's values (the first ``limit`` ones), reading ``chunk`` samples at a time."""
    samples = source.samples if limit is None else source.samples[:limit]
    for start in range(0, len(samples), chunk):
        names = samples[start : start + chunk]
        block = source.values(names)
        for j, name in enumerate(names):
            yield name, block[:, j]


def raise_if_problems(table_problems: Sequence[TableProblem], other: Sequence[str] = ()) -> None:
    if table_problems or other:
        lines = [f"{len(table_problems) + len(other)} problem(s) with reference or annotate files; nothing was sent:"]
        lines += [f"- {problem}" for problem in [*map(str, table_problems), *other]]
        raise ReferenceError("\n".join(lines))


# --- the aligned references (results/{modality}/references.parquet) ----------------------------


#: The folders a workflow run writes: a file it reads must not lie in them.
WORKFLOW_OUTPUT_ROOTS = ("results", "resources")


def own_output_problem(paths: Iterable[str], roots: Iterable[str] = WORKFLOW_OUTPUT_ROOTS) -> str | None:
    """Why reference or annotate ``paths`` that lie in the workflow's own output folders
    (``roots``, relative to the working directory) cannot be read, or None: the run that reads
    them would rewrite them (and change them under the rows that use them)."""
    folders = [os.path.abspath(root) for root in roots]
    own = sorted(
        {
            path
            for path in paths
            if any(os.path.commonpath([os.path.abspath(path), folder]) == folder for folder in folders)
        }
    )
    if not own:
        return None
    return (
        f"{', '.join(own)}: a reference or annotate file inside this workflow's results/ (or resources/) "
        "would be rewritten by the run that reads it; copy it out first (for example to references/) "
        "and name the copy"
    )


def aligned_reference_counts(
    conditions: Iterable[Condition],
    gene_orders: Mapping[str, Sequence[str]],
    *,
    base: str | os.PathLike | None = None,
    files: CountsFiles | None = None,
) -> dict[str, list[int]]:
    """The counts each reference row's query carries (condition -> counts), for the rows whose
    output group's gene order is known: what their tickets were bought with, so that the budget
    can tell a query already bought. Raises :class:`ReferenceError` as :func:`align_references`."""
    files = files or CountsFiles(base)
    conditions = list(conditions)
    quiet = logging.getLogger(f"{__name__}.budget")  # the write_queries job logs its own
    counts: dict[str, list[int]] = {}
    for group, order in gene_orders.items():
        rows = [c for c in conditions if c.is_reference and c.group == group]
        if rows:
            aligned = align_references(rows, order, files=files, log=quiet)
            counts |= {name: alignment.counts.tolist() for name, alignment in aligned.items()}
    return counts


def align_references(
    conditions: Sequence[Condition],
    gene_order: Sequence[str],
    *,
    base: str | os.PathLike | None = None,
    files: CountsFiles | None = None,
    log: logging.Logger = logger,
) -> dict[str, Alignment]:
    """Every reference row's sample, checked and aligned to ``gene_order`` (condition -> alignment).

    Raises :class:`ReferenceError` listing every problem. Each alignment is logged (genes
    matched, missing ones set to 0, the file's genes the model lacks, library size).
    """
    files = files or CountsFiles(base)
    alignments: dict[str, Alignment] = {}
    problems = []
    for condition in conditions:
        source = files.open(condition.reference)
        if isinstance(source, str):
            problems.append(f"condition {condition.name!r}: {source}")
            continue
        sample, problem = sample_problem(source, condition.reference_sample)
        if problem is None:
            alignment, problem = check_sample(source, sample, condition.modality, gene_order)
        if problem:
            problems.append(f"condition {condition.name!r}: {problem}")
            continue
        alignments[condition.name] = alignment = dataclasses.replace(alignment, sample=sample)
        log.info("%s: reference %s, sample %r: %s", condition.name, condition.reference, sample, alignment.describe())
    if problems:
        raise ReferenceError(f"{len(problems)} reference problem(s); nothing was sent:\n- " + "\n- ".join(problems))
    return alignments


def write_references(
    conditions: Sequence[Condition],
    gene_order: Sequence[str],
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    log: logging.Logger = logger,
) -> dict[str, Alignment]:
    """``results/{modality}/references.parquet``: ``gene_id`` (the model's gene order) and one
    int64 column per reference-conditioned condition, its reference sample aligned."""
    alignments = align_references(conditions, gene_order, base=base, log=log)
    modality = conditions[0].modality if conditions else None
    columns = {"gene_id": pa.array(list(gene_order), pa.string())}
    columns.update({name: pa.array(a.counts, pa.int64()) for name, a in alignments.items()})
    label = {"values": REFERENCES_VALUES, "modality": modality, "orientation": "genes x references"}
    table = pa.table(columns).replace_schema_metadata({b"synthbio": json.dumps(label).encode()})
    with atomic_path(out) as temporary:
        pq.write_table(table, temporary, compression="zstd")
    return alignments


# --- gene order -------------------------------------------------------------------------------


def service_key(base_url: str) -> str:
    """A folder name for a service: its host, and port when it has one (``127.0.0.1_8123``)."""
    parts = urlsplit(base_url)
    key = parts.hostname or "unknown"
    if parts.port:
        key += f"_{parts.port}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


#: Per output group, the model whose gene order its samples (and references) are in: GEM-1's
#: baseline model of the modality, or GEM-2's baseline compatibility id (``gem-2-bulk``).
GENE_ORDER_MODELS = {
    **MODALITY_MODELS,
    **{output_group(f"gem-2-{word}", modality): f"gem-2-{word}" for word, modality in GEM2_MODALITIES.items()},
}


def gene_order_model(model_id: str, modality: str | None = None) -> str:
    """The model whose gene order ``model_id`` answers in (``modality``: for ``gem-2``, which
    names none): a GEM-1 id's modality's baseline model, a GEM-2 id's ``gem-2-{bulk,sc}``."""
    if is_gem2(model_id):
        row = gem2_model(model_id)
        modality = (row.modality if row is not None else None) or modality
        if modality is None:
            raise ValueError(f"{model_id} names no modality: give the modality to find its gene order")
        return GENE_ORDER_MODELS[output_group(model_id, modality)]
    return MODALITY_MODELS[get_model(model_id).modality] if is_known_model(model_id) else model_id


def gene_order_path(base_url: str, model_id: str, root: str = GENE_ORDER_DIR, *, modality: str | None = None) -> str:
    """Where the gene order of ``model_id``'s family (:func:`gene_order_model`) is cached."""
    return f"{root}/{service_key(base_url)}/{gene_order_model(model_id, modality)}.json"


def read_gene_order(path: str | os.PathLike, *, model_id: str | None = None) -> list[str]:
    """A gene order from the cache's JSON, a JSON list, a text file (one id a line) or a Parquet ``gene_id``.

    ``model_id``: the model whose order is wanted. A file that says which model it comes from (the
    cache's ``model_id``, an expression file's synthbio label) must name one that answers in the
    same order (:func:`gene_order_model`): GEM-1's and GEM-2's differ, and counts sent in the other
    family's order would be paid for and then refused. A plain list says nothing and is taken.
    """
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)  # opened once: the ids and the label
            genes = parquet.read(columns=["gene_id"]).column(0).to_pylist()
            label = json.loads((parquet.schema_arrow.metadata or {}).get(SCHEMA_KEY, b"{}"))
            sources = [m for m in [label.get("model_id"), *label.get("model_ids", [])] if isinstance(m, str)]
            modality = label.get("modality")
        elif path.suffix == ".json":
            document = json.loads(path.read_text())
            genes = document.get("genes") if isinstance(document, dict) else document
            source = document.get("model_id") if isinstance(document, dict) else None
            sources, modality = ([source] if isinstance(source, str) else []), None
        else:
            genes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            sources, modality = [], None
    except (OSError, ValueError, KeyError, AttributeError, pa.ArrowException) as error:
        raise ReferenceError(f"{path}: cannot read a gene order from it ({error})") from error
    if not isinstance(genes, list) or not genes or not all(isinstance(gene, str) for gene in genes):
        raise ReferenceError(f"{path}: not a gene order (a non-empty list of gene ids)")
    problem = gene_id_problem(genes)
    if problem:
        raise ReferenceError(f"{path}: {problem}")
    if model_id is not None:
        wanted = gene_order_model(model_id)
        found = sorted({_order_model_or_none(source, modality) for source in sources} - {wanted, None})
        if found:
            raise ReferenceError(
                f"{path}: it holds the gene order of {', '.join(found)} (the file says so), not of {wanted}; "
                "GEM-1 and GEM-2 order their genes differently"
            )
    return genes


def read_configured_gene_order(setting: str, path: str | os.PathLike, model_id: str) -> list[str]:
    """:func:`read_gene_order` of a file the config names; ``setting`` (``gene_order_files.bulk``)
    leads its message, so the user knows which line of the config to change."""
    try:
        return read_gene_order(path, model_id=model_id)
    except ReferenceError as error:
        raise ReferenceError(f"{setting}: {error} (config/README.md, 'Reference conditioning')") from None


def _order_model_or_none(model_id: str, modality: str | None) -> str | None:
    """:func:`gene_order_model`, or None for an id of no model we know (its order cannot be told)."""
    if not (is_known_model(model_id) or is_gem2(model_id)):
        return None
    try:
        return gene_order_model(model_id, modality)
    except (ValueError, KeyError):
        return None


def write_gene_order(
    path: str | os.PathLike, genes: Sequence[str], *, model_id: str, base_url: str, source: str
) -> None:
    document = {
        "model_id": model_id,
        "service": redact_url(base_url),
        "source": source,
        "genes": list(genes),
    }
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(document, indent=0) + "\n")


def known_gene_order(predictions: str | os.PathLike, model_id: str, base_url: str) -> tuple[list[str], str] | None:
    """A gene order from this workflow's own results of ``model_id`` from this service, if it holds one.

    A batch's parts list each sample's ``query_id``; the tickets say which service answered
    which query. The first batch with a sample from a matching ticket gives its ``gene_id``.
    """
    folder = Path(predictions)
    url = resolve_base_url(base_url, model_id)
    ids = set()
    for path in sorted(folder.glob(".tickets/*.json")):
        ticket = load_ticket(path)
        if ticket is not None and ticket.model_id == model_id and ticket.base_url == url:
            ids.add(ticket.query_id)
    if not ids:
        return None
    for metadata in sorted(folder.glob("*/metadata.parquet")):
        expression = metadata.with_name("expression.parquet")
        try:
            table = pq.read_table(metadata, columns=["query_id", "model_id"])
            if not ids.intersection(table.column("query_id").to_pylist()) or not expression.exists():
                continue
            genes = pq.read_table(expression, columns=["gene_id"]).column(0).to_pylist()
        except (OSError, KeyError, pa.ArrowException):
            continue
        if genes:
            return genes, f"the result of an earlier query of this workflow ({expression})"
    return None


def learn_gene_order(
    out: str | os.PathLike,
    *,
    model_id: str,
    base_url: str,
    predictions: str | os.PathLike | None = None,
    log: logging.Logger = logger,
    **options: Any,
) -> str:
    """Write the gene order of ``model_id`` (a baseline model) from ``base_url`` to ``out``; say where from.

    From this workflow's own results when it holds one (``predictions``: the modality's
    ``results/predictions/{modality}`` folder), else from one paid query of one sample
    (``options``: :func:`~synthbio_pipeline.pipeline.runner.run_prediction`'s; its ticket is
    kept next to ``out`` so that a rerun resumes that query rather than buying another).
    """
    known = known_gene_order(predictions, model_id, base_url) if predictions is not None else None
    if known is not None:
        genes, source = known
        log.info("%s: gene order (%d genes) from %s; nothing bought", model_id, len(genes), source)
    else:
        body = _one_sample_body(model_id)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "%s: the gene order is not known yet (no cached copy, no result of this model here): buying one sample "
            "of %s (mean estimation) to learn it",
            model_id,
            model_id,
        )
        with tempfile.TemporaryDirectory(prefix=".gene-order-", dir=out.parent) as scratch:
            query_path = Path(scratch) / "query.json"
            query_path.write_text(json.dumps(body))
            summary = run_prediction(
                query_path,
                model_id=model_id,
                condition="gene_order",
                expression_out=Path(scratch) / "expression.parquet",
                metadata_out=Path(scratch) / "metadata.parquet",
                base_url=base_url,
                ticket_path=out.with_name(f".{out.stem}.ticket.json"),
                log=log,
                **options,
            )
            genes = pq.read_table(Path(scratch) / "expression.parquet", columns=["gene_id"]).column(0).to_pylist()
        source = f"a one-sample query of {model_id} (model query {summary['query_id']})"
    write_gene_order(out, genes, model_id=model_id, base_url=base_url, source=source)
    return source


def _one_sample_body(model_id: str) -> dict[str, Any]:
    """The wire body of one ``mean estimation`` sample of a baseline model (GEM-1's or GEM-2's)."""
    if is_gem2(model_id):
        body = example_gem2_query(model_id)
        for item in body["inputs"]["items"]:
            item["num_samples"] = 1
        body["options"] = {"seed": 0, "sampling_strategy": MEAN_ESTIMATION}
        return body
    spec = get_model(model_id)
    example = get_valid_query(spec.modality)
    query = {
        "model_id": model_id,
        "modality": spec.modality,
        "mode": MEAN_ESTIMATION,
        "seed": 0,
        "inputs": [{"metadata": example["inputs"][0]["metadata"], "num_samples": 1}],
    }
    return to_wire(query)[1]


__all__ = [
    "GENE_ORDER_MODELS",
    "WORKFLOW_OUTPUT_ROOTS",
    "MIN_GENE_OVERLAP",
    "Alignment",
    "Annotation",
    "CountsFiles",
    "ReferenceError",
    "align",
    "aligned_reference_counts",
    "annotation_models",
    "annotation_problems",
    "gene_order_model",
    "gene_order_path",
    "learn_gene_order",
    "own_output_problem",
    "read_annotations",
    "read_configured_gene_order",
    "read_gene_order",
    "reference_problems",
    "write_references",
]
