"""What a run would buy, counted before any request, and the guard that stops a run that buys too much.

Every row of the conditions table is one paid model query of ``num_samples`` samples. A query
whose ticket (``results/predictions/{group}/.tickets/{condition}.json``, see
:mod:`synthbio_pipeline.pipeline.runner`) matches it (same body, model and API) is already
bought: a rerun resumes or downloads it again, and it is not counted. The rest is what the
run would buy; :func:`budget_problem` compares it with ``max_samples`` (config; default
:data:`DEFAULT_MAX_SAMPLES`), a number for the whole run or a mapping per modality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from synthbio_pipeline.client.http import resolve_base_url
from synthbio_pipeline.pipeline.conditions import Condition
from synthbio_pipeline.pipeline.runner import body_sha256, load_ticket

#: Samples one run may buy unless ``max_samples`` says otherwise.
DEFAULT_MAX_SAMPLES = 10_000


@dataclass
class Purchase:
    """Queries and samples of one model: to buy, and already held by tickets."""

    model_id: str
    modality: str
    queries: int = 0
    samples: int = 0
    held_queries: int = 0
    held_samples: int = 0


def plan_purchases(
    conditions: Iterable[Condition],
    ticket_dir: Callable[[str], Path],
    base_url: str,
    *,
    allowed_http_hosts: Iterable[str] = (),
    reference_counts: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Purchase]:
    """Per model id, what the run would buy and what tickets already hold.

    ``allowed_http_hosts``: as :func:`~synthbio_pipeline.client.http.check_base_url`'s.
    ``reference_counts``: per reference row (condition name), the counts its query carries
    (:func:`~synthbio_pipeline.pipeline.references.aligned_reference_counts`): its ticket holds
    the body sent with them. A reference row without them is counted as to buy.

    ``ticket_dir(group)`` is the folder of that output group's tickets (a GEM-1 group is its modality).
    """
    plan: dict[str, Purchase] = {}
    for condition in conditions:
        entry = plan.setdefault(condition.model_id, Purchase(condition.model_id, condition.modality))
        # Tickets are kept per output group (GEM-1's are its modalities; gem-2-bulk, ...).
        ticket = load_ticket(Path(ticket_dir(condition.group)) / f"{condition.name}.json")
        counts = (reference_counts or {}).get(condition.name)
        body = condition.wire_body(list(counts) if counts is not None else None)
        url = resolve_base_url(base_url, condition.model_id, allowed_http_hosts=allowed_http_hosts)
        if ticket is not None and ticket.matches(body_sha256(body), condition.model_id, url):
            entry.held_queries += 1
            entry.held_samples += condition.num_samples
        else:
            entry.queries += 1
            entry.samples += condition.num_samples
    return plan


def with_purchases(plan: Mapping[str, Purchase], extra: Iterable[tuple[str, str, int, int]]) -> dict[str, Purchase]:
    """A copy of ``plan`` with more queries bought: ``(model id, modality, queries, samples)`` each
    (metadata prediction's, which the table's rows do not show)."""
    combined = {model: replace(entry) for model, entry in plan.items()}
    for model_id, modality, queries, samples in extra:
        entry = combined.setdefault(model_id, Purchase(model_id, modality))
        entry.queries += queries
        entry.samples += samples
    return combined


def describe(plan: Mapping[str, Purchase]) -> str:
    """The plan as a few lines: queries and samples per model, and what tickets hold."""
    lines = []
    for entry in plan.values():
        line = f"  {entry.model_id} ({entry.modality}): {entry.queries:,} queries, {entry.samples:,} samples to buy"
        if entry.held_queries:
            line += f"; {entry.held_queries:,} queries ({entry.held_samples:,} samples) already bought (tickets)"
        lines.append(line)
    total = sum(entry.samples for entry in plan.values())
    queries = sum(entry.queries for entry in plan.values())
    return "\n".join([f"This run would buy {queries:,} model queries, {total:,} samples:", *lines])


def budget_problem(plan: Mapping[str, Purchase], max_samples: int | Mapping[str, int] | None) -> str | None:
    """Why the run would buy more than ``max_samples`` allows (and how to raise it), or None.

    ``max_samples`` is a number for the whole run, or ``{modality: number}``; a modality it
    does not name gets :data:`DEFAULT_MAX_SAMPLES`.
    """
    if max_samples is None:
        max_samples = DEFAULT_MAX_SAMPLES
    if isinstance(max_samples, Mapping):
        by_modality: dict[str, int] = {}
        for entry in plan.values():
            by_modality[entry.modality] = by_modality.get(entry.modality, 0) + entry.samples
        over = [
            (modality, samples, int(max_samples.get(modality, DEFAULT_MAX_SAMPLES)))
            for modality, samples in by_modality.items()
            if samples > int(max_samples.get(modality, DEFAULT_MAX_SAMPLES))
        ]
        if not over:
            return None
        parts = [
            f"{samples:,} {modality} samples (max_samples.{modality} is {limit:,})" for modality, samples, limit in over
        ]
        needed = ", ".join(f"{modality}: {samples}" for modality, samples, _ in over)
        return (
            f"this run would buy {'; '.join(parts)}, more than allowed; nothing was sent. If you mean it, "
            f"raise the limit in the config (max_samples: {{{needed}}}), or run fewer conditions"
        )
    total = sum(entry.samples for entry in plan.values())
    if total <= int(max_samples):
        return None
    queries = sum(entry.queries for entry in plan.values())
    return (
        f"this run would buy {total:,} samples in {queries:,} model queries, more than max_samples "
        f"({int(max_samples):,}); nothing was sent. If you mean it, raise the limit: "
        f"--config max_samples={total} (or max_samples: {total} in the config file); or run fewer conditions"
    )
