"""Metadata prediction for the emulator (``gem-1-{bulk,sc}_predict-metadata``): it recovers the
metadata that the emulator's own generator (:mod:`.generate`) used.

The generator moves a base profile by one fixed effect per metadata pair (which genes, by how
much: :func:`.generate.pair_effect`). Predicting reverses that: each candidate value of a field
is scored by how well its effect explains the sample's counts over the modality's base profile,
as a log-likelihood ratio against "no effect": for bulk, a Gaussian likelihood of the log counts
with each gene weighted by how much its count can be trusted (Poisson noise, the
negative-binomial dispersion, the latent noise); for single cells, whose counts are few and
mostly zeros, a multinomial likelihood of the counts. A second pass scores each field again with
the other fields' best effects taken out. The scores of a field's candidates, tempered, go
through a softmax: ``classifier_probs`` (field -> value -> probability, the value as text); the
top one is the predicted ``metadata`` value. The fields and values are the vocabulary's keys, so
a prediction compares directly with the metadata of the query that generated the sample.

Candidates of a field: its vocabulary choices (``sex``, ``sample_type``...), a few common
values (:data:`KNOWN_VALUES`), and every value the running emulator has seen in a query
(:class:`SeenValues`); so samples the emulator generated are predicted right (the round trip
reads high), and a sample predicted against another condition's request reads low. Like the
rest of the emulator, this is a plausible stand-in, not a model.

Each output also carries ``latents`` (the predicted values' latent means plus the sample's
deviation, projected on the generator's loadings: :func:`encode`) and a ``decoder_sample``:
the expected counts of the predicted condition, moved by those latents, at the sample's
library size.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from synthbio_pipeline.vocabulary.counts import counts_values
from synthbio_pipeline.vocabulary.metadata import METADATA_KEYS
from synthbio_pipeline.vocabulary.models import SINGLE_CELL, get_model

from . import generate
from .generate import LATENT_DIM, LATENT_GROUPS, GeneTables

#: Values predicted without having been seen, besides a key's closed list of choices: common
#: tissues, cell types, cell lines, diseases and perturbations, and the examples of the docs.
KNOWN_VALUES: dict[str, tuple[Any, ...]] = {
    "tissue_ontology_id": (
        "UBERON:0002371",  # bone marrow
        "UBERON:0001155",  # colon
        "UBERON:0002107",  # liver
        "UBERON:0000955",  # brain
        "UBERON:0002048",  # lung
        "UBERON:0000948",  # heart
        "UBERON:0002113",  # kidney
        "UBERON:0000178",  # blood
        "UBERON:0002097",  # skin of body
        "UBERON:0001264",  # pancreas
        "UBERON:0002367",  # prostate gland
        "UBERON:0000310",  # breast
        "UBERON:0000945",  # stomach
        "UBERON:0002106",  # spleen
    ),
    "cell_type_ontology_id": (
        "CL:0000786",  # plasma cell
        "CL:0000236",  # B cell
        "CL:0000084",  # T cell
        "CL:0000576",  # monocyte
        "CL:0000235",  # macrophage
        "CL:0000623",  # natural killer cell
        "CL:0000182",  # hepatocyte
        "CL:0000540",  # neuron
        "CL:0000057",  # fibroblast
        "CL:0000115",  # endothelial cell
        "CL:0000066",  # epithelial cell
    ),
    "cell_line_ontology_id": (
        "CVCL_0030",  # HeLa
        "CVCL_0023",  # A549
        "CVCL_0031",  # MCF-7
        "CVCL_0045",  # HEK293
        "CVCL_0027",  # Hep-G2
        "CVCL_0004",  # K-562
        "CVCL_0065",  # Jurkat
    ),
    "disease_ontology_id": (
        "MONDO:0005015",  # diabetes mellitus
        "MONDO:0005148",  # type 2 diabetes mellitus
        "MONDO:0007254",  # breast cancer
        "MONDO:0005061",  # lung adenocarcinoma
        "MONDO:0005575",  # colorectal cancer
        "MONDO:0004975",  # Alzheimer disease
    ),
    "perturbation_ontology_id": (
        "ENSG00000141510",  # TP53
        "ENSG00000146648",  # EGFR
        "ENSG00000133703",  # KRAS
        "ENSG00000136997",  # MYC
        "CHEBI:27899",  # cisplatin
        "CHEBI:28262",  # dimethyl sulfoxide
        "CHEMBL25",  # aspirin
    ),
    "perturbation_dose": ("10 um", "1 um", "100 nm"),
    "perturbation_time": ("6 hours", "24 hours", "48 hours", "72 hours"),
    "library_selection": ("cDNA", "polyA", "Oligo-dT", "RANDOM"),
    "platform": ("illumina",),
    "developmental_stage": ("adult", "embryonic"),
}

#: The latent noise's variance per gene (natural log), from the generator's latent scales.
_LATENT_VARIANCE = 0.25**2 + 0.12**2 + 0.15**2
#: Scores are log-likelihood ratios of a model that takes the genes as independent; they are
#: divided by this before the softmax, so that probabilities are confident, not all exactly 1.
_TEMPERATURE = 5.0
#: Samples scored at a time (bounds the memory of a large query).
_CHUNK = 32
#: Decimals of the probabilities in ``classifier_probs``.
_DECIMALS = 6


# --- candidates ------------------------------------------------------------------------------


class SeenValues:
    """The metadata values the emulator has seen in queries: candidates of metadata prediction.

    Thread-safe: the server's request threads add while a generation thread reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, Any]] = {}

    def add(self, metadata: Any) -> None:
        """Remember every value of a metadata mapping whose key the vocabulary knows."""
        if not isinstance(metadata, Mapping):
            return
        with self._lock:
            for key, value in metadata.items():
                if key in METADATA_KEYS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                    self._values.setdefault(key, {})[_value_key(value)] = value

    def snapshot(self) -> dict[str, list[Any]]:
        with self._lock:
            return {key: list(values.values()) for key, values in self._values.items()}


def candidates(seen: Mapping[str, Iterable[Any]] | None = None) -> dict[str, list[Any]]:
    """Every field the emulator predicts, with its candidate values (choices, known values, seen
    values; each once), in the vocabulary's key order. A field with no candidate is not predicted."""
    seen = seen or {}
    fields: dict[str, list[Any]] = {}
    for key, spec in METADATA_KEYS.items():
        values: dict[str, Any] = {}
        for value in (*spec.choices, *KNOWN_VALUES.get(key, ()), *seen.get(key, ())):
            values.setdefault(_value_key(value), value)
        if values:
            fields[key] = list(values.values())
    return fields


def _value_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def label(value: Any) -> str:
    """A value as a ``classifier_probs`` key (JSON object keys are text)."""
    return value if isinstance(value, str) else json.dumps(value)


# --- scoring ---------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What metadata prediction says about one sample."""

    metadata: dict[str, Any]
    probabilities: dict[str, dict[str, float]]
    latents: dict[str, np.ndarray]
    decoder_counts: np.ndarray


def predict(
    tables: GeneTables,
    counts: np.ndarray,
    modality: str,
    fields: Mapping[str, list[Any]],
) -> list[Prediction]:
    """Predict the metadata of each row of ``counts`` (samples × genes) among ``fields``' candidates."""
    predictions: list[Prediction] = []
    for start in range(0, counts.shape[0], _CHUNK):
        predictions += _predict_chunk(tables, counts[start : start + _CHUNK], modality, fields)
    return predictions


def _predict_chunk(
    tables: GeneTables, counts: np.ndarray, modality: str, fields: Mapping[str, list[Any]]
) -> list[Prediction]:
    # Arrays are gene-major (genes × samples), so a candidate's genes are whole rows, and float32.
    base = _base_profile(tables, modality)
    library = counts.sum(axis=1).astype(np.float64)
    expected = (np.exp(base)[:, None] * library[None, :]).astype(np.float32)
    dispersion = (tables.dispersion * generate.DISPERSION_SCALE.get(modality, 1.0)).astype(np.float32)
    weights = 1.0 / (1.0 / (expected + 0.5) + dispersion[:, None] + np.float32(_LATENT_VARIANCE))
    raw = np.log(counts.T.astype(np.float32) + 0.5)
    raw -= (np.log(library)[None, :] + base[:, None]).astype(np.float32)
    if modality == SINGLE_CELL:
        scores = _multinomial_scores(tables, counts, library, base, fields)
    else:
        scores = _log_scores(tables, raw, weights, base, fields)
    probabilities: dict[str, np.ndarray] = {}
    for key, values in scores.items():
        tempered = values / _TEMPERATURE
        tempered = np.exp(tempered - tempered.max(axis=1, keepdims=True))
        probabilities[key] = tempered / tempered.sum(axis=1, keepdims=True)
    metadata = [
        {key: values[int(probabilities[key][row].argmax())] for key, values in fields.items()}
        for row in range(counts.shape[0])
    ]
    conditions = [generate.condition(tables, row, modality) for row in metadata]
    profiles = np.stack([cond.log_profile for cond in conditions], axis=1)  # offsets do not matter below
    deviation = encode(tables, raw - (profiles - base[:, None]), weights)  # (samples × latent dims)
    decoded = profiles.T + deviation @ tables.loadings
    decoded = np.exp(decoded - decoded.max(axis=1, keepdims=True))
    decoded *= (library / decoded.sum(axis=1))[:, None]
    predictions = []
    for row, (values, cond) in enumerate(zip(metadata, conditions)):
        latents = {
            group: cond.latent_means[group] + deviation[row, i * LATENT_DIM : (i + 1) * LATENT_DIM]
            for i, group in enumerate(LATENT_GROUPS)
        }
        probs = {
            key: {label(value): round(float(p), _DECIMALS) for value, p in zip(fields[key], probabilities[key][row])}
            for key in fields
        }
        counts_row = generate.round_preserving_sum(decoded[row], int(library[row]))
        predictions.append(Prediction(values, probs, latents, counts_row))
    return predictions


def _log_scores(
    tables: GeneTables, raw: np.ndarray, weights: np.ndarray, base: np.ndarray, fields: Mapping[str, list[Any]]
) -> dict[str, np.ndarray]:
    """Bulk: each candidate's weighted Gaussian log-likelihood ratio on the log counts, in two passes."""
    trusted = base >= np.median(base)  # genes whose counts say most: their median is the offset
    residual = raw - np.median(raw[trusted], axis=0)
    penalties: dict[tuple[str, int], float] = {}
    # Pass 1: each field on its own.
    weighted = weights * residual
    best = {
        key: _scores(tables, weighted, weights, key, values, penalties).argmax(axis=1) for key, values in fields.items()
    }
    # Pass 2: each field again, with the other fields' chosen effects taken out.
    unexplained = raw.copy()
    for key, values in fields.items():
        _add_effects(tables, unexplained, key, values, best[key], sign=-1.0)
    unexplained -= np.median(unexplained[trusted], axis=0)
    scores = {}
    for key, values in fields.items():
        own = unexplained.copy()
        _add_effects(tables, own, key, values, best[key])
        own *= weights
        scores[key] = _scores(tables, own, weights, key, values, penalties)
    return scores


def _multinomial_scores(
    tables: GeneTables, counts: np.ndarray, library: np.ndarray, base: np.ndarray, fields: Mapping[str, list[Any]]
) -> dict[str, np.ndarray]:
    """Single cells: few reads, mostly zeros; each candidate's multinomial log-likelihood ratio
    (sum of counts × effect, minus the library size × the log of the profile's new total), in two
    passes: alone over the base profile, then over the profile of the other fields' best values."""
    observed = np.ascontiguousarray(counts.T, dtype=np.float32)
    evidence: dict[tuple[str, int], np.ndarray] = {}  # the counts term, the same in both passes

    def scores_of(key: str, values: list[Any], profile: np.ndarray) -> np.ndarray:
        scores = np.zeros((counts.shape[0], len(values)))
        for column, value in enumerate(values):
            genes, lfc = generate.pair_effect(tables.n, key, value)
            if genes.size:
                if (key, column) not in evidence:
                    evidence[key, column] = lfc.astype(np.float32) @ observed[genes]
                scores[:, column] = evidence[key, column] - library * np.log1p(np.expm1(lfc) @ profile[genes])
        return scores

    start = np.exp(base)
    best = {key: scores_of(key, values, start).argmax(axis=1) for key, values in fields.items()}
    fitted = np.repeat(base[:, None], counts.shape[0], axis=1)
    for key, values in fields.items():
        _add_effects(tables, fitted, key, values, best[key])
    scores = {}
    for key, values in fields.items():
        others = fitted.copy()
        _add_effects(tables, others, key, values, best[key], sign=-1.0)
        others = np.exp(others - others.max(axis=0))
        scores[key] = scores_of(key, values, others / others.sum(axis=0))
    return scores


def _base_profile(tables: GeneTables, modality: str) -> np.ndarray:
    """The modality's normalised log profile before any metadata."""
    base = generate.condition(tables, {}, modality).log_profile
    return base - generate.logsumexp(base)


def _scores(
    tables: GeneTables,
    weighted: np.ndarray,
    weights: np.ndarray,
    key: str,
    values: list[Any],
    penalties: dict[tuple[str, int], np.ndarray],
) -> np.ndarray:
    """(samples × candidates) log-likelihood ratios of each candidate's effect against none,
    from the weighted residuals (weights × residuals, genes × samples): for an effect e on genes
    S, sum over S of w·r·e − w·e²/2 (``penalties`` keeps the second term, which does not change)."""
    scores = np.zeros((weighted.shape[1], len(values)))
    for column, value in enumerate(values):
        genes, lfc = generate.pair_effect(tables.n, key, value)
        if genes.size:
            lfc = lfc.astype(np.float32)
            if (key, column) not in penalties:
                penalties[key, column] = (lfc * lfc / 2.0) @ weights[genes]
            scores[:, column] = lfc @ weighted[genes] - penalties[key, column]
    return scores


def _add_effects(
    tables: GeneTables, target: np.ndarray, key: str, values: list[Any], chosen: np.ndarray, sign: float = 1.0
) -> None:
    """Add (or with ``sign=-1`` take out) each sample's chosen value's effect: ``target`` is genes × samples."""
    for row, column in enumerate(chosen):
        genes, lfc = generate.pair_effect(tables.n, key, values[int(column)])
        target[genes, row] += sign * lfc


def encode(tables: GeneTables, residual: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The latent deviations that best explain log-expression residuals (genes × samples):
    (samples × groups·LATENT_DIM), in ``LATENT_GROUPS`` order.

    A weighted least-squares projection on each loading row on its own (the rows are nearly
    orthogonal), after each sample's weighted mean is removed.
    """
    residual = residual.reshape(tables.n, -1)
    weights = np.ones_like(residual) if weights is None else weights.reshape(tables.n, -1)
    centered = residual - (weights * residual).sum(axis=0) / weights.sum(axis=0)
    numerator = tables.loadings @ (weights * centered)
    denominator = _squared_loadings(tables.n) @ weights
    return (numerator / denominator).T


@lru_cache(maxsize=4)
def _squared_loadings(n: int) -> np.ndarray:
    loadings = generate.gene_tables(n).loadings
    return loadings * loadings


# --- the result document ---------------------------------------------------------------------


def counts_matrix(inputs: Iterable[Mapping[str, Any]], genes: int) -> np.ndarray:
    """The (validated) ``counts`` of query inputs as an int64 matrix, one row per input."""
    rows = [counts_values(item["counts"]) for item in inputs]
    return np.array(rows, dtype=np.float64).reshape(len(rows), genes).astype(np.int64)


def write_result(
    path: str | Path,
    model_id: str,
    body: Mapping[str, Any],
    *,
    genes: int = generate.DEFAULT_GENES,
    seen: Mapping[str, Iterable[Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Write the metadata-prediction result of a (validated) wire query to ``path``."""
    spec = get_model(model_id)
    tables = generate.gene_tables(genes)
    fields = candidates(seen)
    counts = counts_matrix(body["inputs"], genes)
    info = {
        "model_id": model_id,
        "seed": body.get("seed"),
        "genes": tables.n,
        "fields": {key: len(values) for key, values in fields.items()},
        **(extra or {}),
    }

    def outputs() -> Iterator[bytes]:  # write_document asks ``cancelled`` before writing each
        for start in range(0, counts.shape[0], _CHUNK):
            for prediction in predict(tables, counts[start : start + _CHUNK], spec.modality, fields):
                yield output_bytes(prediction)

    return generate.write_document(path, tables, info, outputs(), cancelled)


def output_bytes(prediction: Prediction) -> bytes:
    """One metadata-prediction output: ``metadata``, ``classifier_probs``, ``latents``, ``decoder_sample``."""
    return b"".join(
        (
            b'{"metadata":',
            generate.json_bytes(prediction.metadata),
            b',"classifier_probs":',
            generate.json_bytes(prediction.probabilities),
            b',"latents":',
            generate.latents_bytes(prediction.latents),
            b',"decoder_sample":{"counts":[',
            generate.encode_ints(prediction.decoder_counts),
            b"]}}",
        )
    )
