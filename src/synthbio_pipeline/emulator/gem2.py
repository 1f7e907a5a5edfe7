"""GEM-2 in the emulator: every operation, every compatibility id, releases (synthetic data).

The request is checked by the vocabulary's own GEM-2 checks
(:func:`~synthbio_pipeline.vocabulary.gem2.read_gem2_request`), then against the emulator's
releases (:data:`RELEASES`: which operations and modalities each supports, and whether it
takes molecules given by SMILES or ontology id). A refusal is a 422
``{"error": "Invalid GEM-2 request", "errors": [{"path", "message"}]}``.

The numbers follow GEM-1's generator (:mod:`.generate`), so the same plausibility rules hold:

- ``predict-expression``: each metadata value moves a fixed, seeded gene set (a molecule of
  ``bioactive_entity_perturbations``, by its SMILES, ontology id or name, moves its own);
  latents ``generated`` (the biological, technical and perturbation latents, concatenated);
- ``predict-expression-from-reference``: the reference's own profile, moved by the item's
  metadata; library size the reference's unless ``output_total`` says otherwise; latents
  ``z_ref`` (the reference encoded), ``z_target`` and ``z_displacement``;
- ``predict-metadata``: per field (tissue, sample type, library layout and selection), the
  value whose gene set the sample's profile follows best, with softmax probabilities: a
  sample generated for liver is predicted as liver; latents ``encoded``; no counts;
- ``autoencode``: the sample's profile, shrunk a little toward the model's (a lossy
  reconstruction), with ``model_release_id`` and ``vae_run_id``.

A release and an ensemble member each move a small gene set of their own, so a pinned release
gives other numbers than the default, and ensemble members differ slightly; an ``-ensemble``
id gives the same numbers as its single-model id. The release is echoed as the result's
``release`` and ``model_version``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from synthbio_pipeline.errors import Problem
from synthbio_pipeline.vocabulary.families import (
    AUTOENCODE,
    FROM_REFERENCE,
    GEM2,
    GEM2_MODEL_IDS,
    GEM2_OPERATION_BY_NAME,
    PREDICT_EXPRESSION,
    PREDICT_METADATA,
)
from synthbio_pipeline.vocabulary.gem2 import (
    EXAMPLE_METADATA,
    INVALID_GEM2_REQUEST,
    Gem2Request,
    example_gem2_query,
    read_gem2_request,
)
from synthbio_pipeline.vocabulary.metadata import GEM2_METADATA_KEYS, METADATA_KEYS
from synthbio_pipeline.vocabulary.models import MODALITIES, model_for_modality

from . import generate

NOTE = generate.NOTE

# --- releases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """A GEM-2 release the emulator serves."""

    release_id: str
    operations: tuple[str, ...]
    modalities: tuple[str, ...]
    #: Whether molecules may be given by SMILES or ontology id (else by ``entity`` name only).
    molecules: bool


RELEASES: tuple[Release, ...] = (
    Release(
        "gem-2-emulator-2",
        operations=tuple(GEM2_OPERATION_BY_NAME),
        modalities=MODALITIES,
        molecules=True,
    ),
    # An older release: expression and metadata prediction, bulk only, no molecule release.
    Release(
        "gem-2-emulator-1",
        operations=(PREDICT_EXPRESSION, PREDICT_METADATA),
        modalities=MODALITIES[:1],
        molecules=False,
    ),
)
RELEASE_BY_ID = {release.release_id: release for release in RELEASES}
#: The release a request without ``release`` runs on.
DEFAULT_RELEASE = RELEASES[0].release_id
#: The molecule keys that need a release with molecules enabled.
MOLECULE_KEYS = ("smiles", "entity_ontology_id")

#: The fields predict-metadata predicts, and the values it chooses among (where the vocabulary
#: has a closed list, that list; the tissue and the library selection are free text there).
CLASSIFIED: dict[str, tuple[str, ...]] = {
    "tissue": ("liver", "lung", "brain", "blood", "kidney", "heart", "skin", "colon", "breast", "muscle"),
    "sample_type": METADATA_KEYS["sample_type"].choices,
    "library_layout": METADATA_KEYS["library_layout"].choices,
    "library_selection": ("cDNA", "polyA", "RANDOM", "Oligo-dT"),
}
#: How sharply predict-metadata's probabilities follow the profile's fit (softmax temperature).
CLASSIFIER_SHARPNESS = 12.0
#: How much of a sample's deviation from the model's profile autoencode keeps.
RECONSTRUCTION_KEEP = 0.9
#: Latents are rounded to this many decimals (as GEM-1's).
LATENT_DECIMALS = 6

# --- the API's answers ---------------------------------------------------------------------


def listed_models() -> list[dict[str, Any]]:
    """``GET /api/models`` entries of the GEM-2 ids."""
    return [
        {
            "model_id": row.model_id,
            "family": GEM2,
            "modality": row.modality,
            "operation": row.operation,
            "ensemble": row.ensemble,
            **({"member": row.member} if row.member else {}),
        }
        for row in GEM2_MODEL_IDS.values()
    ]


def is_served(model_id: str) -> bool:
    return model_id in GEM2_MODEL_IDS


def example_query(model_id: str, genes: int) -> dict[str, Any]:
    """A valid example body; operations that read counts get a liver reference sample."""
    return example_gem2_query(model_id, reference_counts=reference_counts(model_id, genes).tolist())


@lru_cache(maxsize=16)
def reference_counts(model_id: str, genes: int) -> np.ndarray:
    """A reference sample for the examples: the example metadata's expected counts."""
    modality = GEM2_MODEL_IDS[model_id].modality or MODALITIES[0]
    total = model_for_modality(modality).default_total_count
    return generate.expected_counts(EXAMPLE_METADATA[modality], modality, total, genes)


def check(model_id: str, body: Any, genes: int) -> tuple[Gem2Request | None, list[Problem]]:
    """The vocabulary's checks, then the release's: ``(request, [])`` or ``(None, problems)``."""
    request, problems = read_gem2_request(model_id, body, n_genes=genes)
    if request is None:
        return None, problems
    release = RELEASE_BY_ID.get(request.release or DEFAULT_RELEASE)
    if release is None:
        known = ", ".join(repr(r.release_id) for r in RELEASES)
        return None, [Problem("release", f"unknown release {request.release!r}; this service has {known}")]
    problems = []
    if request.operation not in release.operations:
        problems.append(Problem("operation", f"release {release.release_id!r} does not support {request.operation!r}"))
    if request.modality not in release.modalities:
        where = "inputs.modality" if isinstance(body.get("inputs"), Mapping) else ""
        problems.append(Problem(where, f"release {release.release_id!r} does not support {request.modality}"))
    if not release.molecules:
        for item in request.items:
            for index, molecule in enumerate((item.metadata or {}).get("bioactive_entity_perturbations") or []):
                for key in MOLECULE_KEYS:
                    if key in molecule:
                        problems.append(
                            Problem(
                                f"{item.path}.metadata.bioactive_entity_perturbations[{index}].{key}",
                                f"release {release.release_id!r} has no molecule release: give the molecule by "
                                "'entity' (a supported name) or pin a release with molecules",
                            )
                        )
    return (None, problems) if problems else (request, [])


def invalid_body(problems: list[Problem]) -> dict[str, Any]:
    """The 422 body of a refused GEM-2 request."""
    return {
        "error": INVALID_GEM2_REQUEST,
        "errors": [{"path": problem.path, "message": problem.message} for problem in problems],
    }


# --- plans and outputs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A checked request with what it left to the server: seed and release."""

    request: Gem2Request
    seed: int
    seed_given: bool
    release: str

    @property
    def operation(self) -> str:
        return self.request.operation

    @property
    def modality(self) -> str:
        return self.request.modality

    @property
    def num_outputs(self) -> int:
        return self.request.num_outputs

    @property
    def request_type(self) -> str:
        """The Arrow stream's ``request_type``: the operation in snake case (``predict_metadata``)."""
        return self.operation.replace("-", "_")


def plan(request: Gem2Request) -> Plan:
    seed = request.seed
    return Plan(
        request=request,
        seed=int(seed) % 2**64 if seed is not None else secrets.randbits(63),
        seed_given=seed is not None,
        release=request.release or DEFAULT_RELEASE,
    )


@dataclass
class Output:
    """One GEM-2 output, before it is written as JSON or as an Arrow row."""

    counts: np.ndarray | None = None
    #: ``None``: the output has no metadata (written as ``null``).
    metadata: Mapping[str, Any] | None = None
    #: GEM-2's latents by name (``generated``; ``z_ref``...; ``encoded``).
    latents: dict[str, np.ndarray] | None = None
    predicted_metadata: dict[str, Any] | None = None
    classifier_probabilities: dict[str, dict[str, float]] | None = None
    provenance: dict[str, str] | None = None
    #: predict-metadata: the counts decoded from the encoding (the Arrow stream's decoder_sample).
    decoded: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: The latents of each expression operation's outputs, by name (JSON keys; Arrow ``<name>_latent``).
LATENT_NAMES = {
    PREDICT_EXPRESSION: ("generated",),
    FROM_REFERENCE: ("z_ref", "z_target", "z_displacement"),
}


def latent_names(operation: str) -> tuple[str, ...]:
    """The latent names the outputs of ``operation`` carry (none for autoencode and predict-metadata's
    expression layout; predict-metadata's ``encoded`` rides in its ``latents`` struct)."""
    return LATENT_NAMES.get(operation, ())


def vae_run_id(release: str) -> str:
    """The VAE run behind a release (stable, derived from its id)."""
    return "vae-" + hashlib.sha256(release.encode("utf-8")).hexdigest()[:12]


def model_profile(tables: generate.GeneTables, plan: Plan) -> np.ndarray:
    """The modality's base log profile as this release (and ensemble member) sees it."""
    profile = generate.modality_profile(tables, plan.modality)
    genes, lfc = generate.pair_effect(tables.n, "release", plan.release)
    profile[genes] += lfc
    if plan.request.member:
        genes, lfc = generate.pair_effect(tables.n, "ensemble-member", plan.request.member)
        profile[genes] += lfc
    return profile


def log_profile_of(counts: np.ndarray) -> np.ndarray:
    """A sample's natural-log expression shares (a pseudocount keeps zeros finite)."""
    shares = np.asarray(counts, dtype=float) + 0.5
    return np.log(shares / shares.sum())


@lru_cache(maxsize=4)
def _loading_norms(n: int) -> np.ndarray:
    loadings = generate.gene_tables(n).loadings
    return np.einsum("ij,ij->i", loadings, loadings)


def deviation(counts: np.ndarray, base: np.ndarray) -> np.ndarray:
    """How a sample's counts differ from the expectation of the log profile ``base`` at its own
    library size (natural log; the pseudocount on both sides keeps genes with few counts near 0)."""
    counts = np.asarray(counts, dtype=float)
    expected = np.exp(base - generate.logsumexp(base)) * counts.sum()
    return np.log(counts + 0.5) - np.log(expected + 0.5)


def encode(tables: generate.GeneTables, deviation: np.ndarray) -> np.ndarray:
    """A sample's latent coordinates: its deviation projected on each loading."""
    return (tables.loadings @ deviation) / _loading_norms(tables.n)


def _latent(vector: np.ndarray) -> np.ndarray:
    return np.round(vector, LATENT_DECIMALS)


def generate_outputs(plan: Plan, genes: int = generate.DEFAULT_GENES) -> Iterator[Output]:
    """Every output of a plan, in item order, one at a time."""
    tables = generate.gene_tables(genes)
    base = model_profile(tables, plan)
    request = plan.request
    scale = generate.DISPERSION_SCALE.get(plan.modality, 1.0)
    default_total = model_for_modality(plan.modality).default_total_count
    for item_index, item in enumerate(request.items):
        if plan.operation in (PREDICT_EXPRESSION, FROM_REFERENCE):
            if plan.operation == PREDICT_EXPRESSION:
                start, total, z_ref = base, item.output_total or default_total, None
            else:
                reference = np.asarray(item.counts, dtype=float)
                start = log_profile_of(reference) + (base - generate.modality_profile(tables, plan.modality))
                total = item.output_total or int(reference.sum())
                z_ref = encode(tables, deviation(reference, base))
            cond = generate.condition(tables, item.metadata or {}, plan.modality, keys=GEM2_METADATA_KEYS, base=start)
            for sample_index in range(item.num_samples):
                rng = np.random.default_rng([plan.seed, item_index, sample_index])
                drawn = generate.draw_latents(cond, rng, False)
                mean = generate.sample_mean(tables, cond, drawn, total)
                counts = generate.sample_counts(tables, mean, request.sampling_strategy, total, rng, scale)
                flat = np.concatenate([drawn[group] for group in generate.LATENT_GROUPS])
                if z_ref is None:
                    latents = {"generated": _latent(flat)}
                else:
                    target = z_ref + flat
                    latents = {"z_ref": _latent(z_ref), "z_target": _latent(target), "z_displacement": _latent(flat)}
                yield Output(
                    counts=counts,
                    metadata=item.metadata,
                    latents=latents,
                )
        else:
            counts = np.asarray(item.counts, dtype=float)
            profile = log_profile_of(counts)
            moved = deviation(counts, base)
            total = int(counts.sum())
            if plan.operation == AUTOENCODE:
                yield Output(
                    counts=reconstruct(base, profile, item.output_total or total),
                    provenance={"model_release_id": plan.release, "vae_run_id": vae_run_id(plan.release)},
                )
            else:
                predicted, probabilities = classify(tables, moved)
                yield Output(
                    predicted_metadata=predicted,
                    classifier_probabilities=probabilities,
                    latents={"encoded": _latent(encode(tables, moved))},
                    decoded=reconstruct(base, profile, total),
                )


def reconstruct(base: np.ndarray, profile: np.ndarray, total: int) -> np.ndarray:
    """A lossy reconstruction: the deviation from ``base`` shrunk a little, as counts summing to ``total``."""
    recon = base + RECONSTRUCTION_KEEP * (profile - base)
    expected = np.exp(recon - generate.logsumexp(recon)) * total
    return generate.round_preserving_sum(expected, total)


def classify(tables: generate.GeneTables, moved: np.ndarray) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Per classified field, the value whose gene set the sample's deviation follows best."""
    predicted, probabilities = {}, {}
    for name, values in CLASSIFIED.items():
        scores = np.array([_fit(tables.n, name, value, moved) for value in values])
        weights = np.exp(CLASSIFIER_SHARPNESS * (scores - scores.max()))
        weights /= weights.sum()
        predicted[name] = values[int(np.argmax(weights))]
        probabilities[name] = {value: round(float(weight), 4) for value, weight in zip(values, weights)}
    return predicted, probabilities


def _fit(n: int, key: str, value: str, moved: np.ndarray) -> float:
    """The correlation of a sample's deviation with one value's fold changes, on its genes."""
    genes, lfc = generate.pair_effect(n, key, value)
    observed = moved[genes]
    if observed.std() == 0 or lfc.std() == 0:
        return 0.0
    return float(np.corrcoef(observed, lfc)[0, 1])


# --- the result document -------------------------------------------------------------------


def write_result(
    path: str | os.PathLike,
    plan: Plan,
    *,
    genes: int = generate.DEFAULT_GENES,
    extra: Mapping[str, Any] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Write the result JSON of a GEM-2 plan to ``path`` (via a temporary file), output by output."""
    path = Path(path)
    tables = generate.gene_tables(genes)
    request = plan.request
    info = {
        "note": NOTE,
        "model_id": request.model_id,
        "operation": plan.operation,
        "modality": plan.modality,
        "release": plan.release,
        "ensemble": request.ensemble,
        "member": request.member,
        "sampling_strategy": request.sampling_strategy,
        "seed": plan.seed,
        "seed_given": plan.seed_given,
        "genes": tables.n,
        **(extra or {}),
    }
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb", buffering=1 << 20) as out:
            out.write(b'{"gene_order":' + tables.gene_order_json)
            out.write(b',"model_version":' + _json(plan.release) + b',"release":' + _json(plan.release))
            out.write(b',"emulator":' + _json(info) + b',"outputs":[')
            for index, output in enumerate(generate_outputs(plan, genes)):
                if cancelled():
                    partial.unlink(missing_ok=True)
                    return path
                out.write(b"\n" if index == 0 else b",\n")
                _write_output(out, output)
            out.write(b"\n]}\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _write_output(out, output: Output) -> None:
    parts = []
    if output.counts is not None:
        parts.append(b'"counts":[' + generate.encode_ints(output.counts) + b"]")
        parts.append(b'"metadata":' + _json(None if output.metadata is None else dict(output.metadata)))
    if output.predicted_metadata is not None:
        parts.append(b'"predicted_metadata":' + _json(output.predicted_metadata))
        parts.append(b'"classifier_probabilities":' + _json(output.classifier_probabilities))
    if output.latents is not None:
        parts.append(b'"latents":' + _json({name: vector.tolist() for name, vector in output.latents.items()}))
    for key, value in (output.provenance or {}).items():
        parts.append(_json(key) + b":" + _json(value))
    out.write(b"{" + b",".join(parts) + b"}")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


__all__ = [
    "CLASSIFIED",
    "DEFAULT_RELEASE",
    "LATENT_NAMES",
    "RELEASES",
    "Output",
    "Plan",
    "Release",
    "check",
    "example_query",
    "generate_outputs",
    "invalid_body",
    "is_served",
    "latent_names",
    "listed_models",
    "plan",
    "write_result",
]
