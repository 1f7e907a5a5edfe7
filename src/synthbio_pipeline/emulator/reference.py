"""Reference conditioning for the emulator (``gem-1-{bulk,sc}_reference-conditioning``): the
reference sample's profile, moved by the requested perturbation.

Per input, the reference's counts give its log profile (shrunk a little towards the modality's
base profile, so that a gene without reads is rare rather than impossible). The perturbation
moves it the way the baseline generator (:mod:`.generate`) moves a profile for the same
metadata pairs (:func:`.generate.pair_effect`: a compound moves a fixed gene set seeded by its
id; dose, time and type have their own small effects), and in addition a gene perturbation
hits its target (the ``perturbation_ontology_id``, when it is an Ensembl id of the gene order):
a CRISPR, shRNA, siRNA or genetic perturbation makes it drop strongly, overexpression makes it
rise (:data:`~synthbio_pipeline.emulator.generate.TARGET_EFFECT`, as in the generator's
conditions). The samples then get the generator's noise: latent deviations through the
loadings, and negative-binomial counts under ``sample generation`` (rounded expectations
under ``mean estimation``).

``conditioning`` (default biological and technical) names the latent spaces taken from the
reference: their latents are the reference's (:func:`.annotate.encode`) with a little noise;
a space left out is drawn afresh, so the samples stray further from the reference. With
``perturbation`` in ``conditioning`` the reference's own perturbation state is kept and the
requested perturbation has no effect. Library size: each sample keeps its reference's total
count unless ``fixed_total_count`` is true (then ``total_count``, or the model's default).

The outputs' ``metadata`` is the input's perturbation metadata, as given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthbio_pipeline.vocabulary.counts import counts_values
from synthbio_pipeline.vocabulary.options import MODEL_OPTIONS

from . import annotate, generate
from .generate import DEFAULT_GENES, LATENT_DIM, LATENT_GROUPS, Plan, Sample

#: Weight of the base profile against the reference's counts: this share of its library size.
_PRIOR_SHARE = 0.01
#: Latent noise of a space taken from the reference, and of one drawn afresh (the generator's is 1).
_CONDITIONED_NOISE = 0.3
_FRESH_NOISE = 1.5


@dataclass(frozen=True)
class ReferencePlan(Plan):
    """A validated reference-conditioning query: the baseline plan plus each input's reference."""

    references: tuple[np.ndarray, ...] = ()
    conditioning: tuple[str, ...] = ()
    fixed_total_count: bool = False

    def samples(self, genes: int = DEFAULT_GENES) -> Iterator[Sample]:
        return reference_samples(self, genes)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "total_count": self.total_count if self.fixed_total_count else None,
            "library_sizes": [int(reference.sum()) for reference in self.references],
            "conditioning": list(self.conditioning),
            "fixed_total_count": self.fixed_total_count,
        }


def plan_query(model_id: str, body: Mapping[str, Any]) -> ReferencePlan:
    """Resolve a (validated) reference-conditioning wire query."""
    base = generate.plan_query(model_id, body)
    conditioning = body.get("conditioning")
    if conditioning is None:
        conditioning = MODEL_OPTIONS["conditioning"].default_value
    references = tuple(
        np.asarray(counts_values(item["counts"]), dtype=np.float64).astype(np.int64) for item in body["inputs"]
    )
    return ReferencePlan(
        **{field: getattr(base, field) for field in base.__dataclass_fields__},
        references=references,
        conditioning=tuple(conditioning),
        fixed_total_count=bool(body.get("fixed_total_count", MODEL_OPTIONS["fixed_total_count"].default_value)),
    )


def perturbation_effect(
    tables: generate.GeneTables, metadata: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """A perturbation's log-fold change per gene, its latent mean, and its target gene's index
    (``None`` when it has no target in the gene order)."""
    change = np.zeros(tables.n)
    latent = np.zeros(LATENT_DIM)
    for key, value in sorted(metadata.items()):
        genes, lfc = generate.pair_effect(tables.n, key, value)
        change[genes] += lfc
        latent += generate.pair_latent(key, value)
    targets = generate.targeted_genes(tables, metadata)
    for gene, lfc in targets:
        change[gene] += lfc
    return change, latent, targets[0][0] if targets else None


def reference_samples(plan: ReferencePlan, genes: int = DEFAULT_GENES) -> Iterator[Sample]:
    """Every sample of a reference-conditioning query, in input order, one at a time."""
    tables = generate.gene_tables(genes)
    base = generate.condition(tables, {}, plan.modality).log_profile
    base = np.exp(base - generate.logsumexp(base))
    dispersion_scale = generate.DISPERSION_SCALE.get(plan.modality, 1.0)
    perturbed = "perturbation" not in plan.conditioning
    for input_index, ((metadata, count), reference) in enumerate(zip(plan.inputs, plan.references)):
        library = int(reference.sum())
        prior = _PRIOR_SHARE * library
        log_reference = np.log(reference + prior * base) - np.log(library + prior)
        encoded = annotate.encode(tables, log_reference - np.log(base))[0]
        own = {group: encoded[i * LATENT_DIM : (i + 1) * LATENT_DIM] for i, group in enumerate(LATENT_GROUPS)}
        change, latent_mean, _ = perturbation_effect(tables, metadata if perturbed else {})
        log_profile = log_reference + change
        means = dict(own)
        if perturbed:
            means["perturbation"] = latent_mean  # p(z | perturbation metadata), not the reference's
        total = plan.total_count if plan.fixed_total_count else library
        for sample_index in range(count):
            rng = np.random.default_rng([plan.seed, input_index, sample_index])
            deviation = {group: np.zeros(LATENT_DIM) for group in LATENT_GROUPS}
            if not plan.deterministic_latents:
                for group in LATENT_GROUPS:
                    if group == "perturbation" and perturbed:
                        scale = 1.0  # p(z | perturbation metadata), as the generator draws it
                    else:
                        scale = _CONDITIONED_NOISE if group in plan.conditioning else _FRESH_NOISE
                    deviation[group] = scale * rng.standard_normal(LATENT_DIM)
            shift = np.concatenate([deviation[group] for group in LATENT_GROUPS]) @ tables.loadings
            profile = log_profile + shift
            mean = np.exp(profile - generate.logsumexp(profile)) * total
            counts = generate.sample_counts(tables, mean, plan.strategy, total, rng, dispersion_scale)
            latents = {group: means[group] + deviation[group] for group in LATENT_GROUPS}
            yield Sample(counts, metadata, latents)
