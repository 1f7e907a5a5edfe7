"""Counts vectors in query inputs: what a reference sample or a sample to annotate must look like.

A ``counts`` input (reference conditioning, metadata prediction) is one count per gene of the
model's gene order: a JSON list of non-negative whole numbers (whole-number floats such as
``10.0`` are accepted, as the vendor documents), or that list wrapped as ``{"counts": [...]}``.
Its length can only be checked by whoever knows the model's gene order: the service (and the
emulator) always, the client once a result has told it the ``gene_order``; so ``genes`` is
optional here.

The checks look at every value, so they are written for vectors of 44,590 genes times a
hundred inputs: one pass over the Python list for the types, the rest in numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synthbio_pipeline.errors import Problem

#: What a counts input is, in words (said when it is something else).
COUNTS_SHAPE = "a list of counts, one per gene of the model's gene order (or {'counts': [...]})"


def counts_values(value: Any) -> list | None:
    """The list of numbers of a counts input (a list, or ``{"counts": [...]}``), or ``None``."""
    if isinstance(value, Mapping) and isinstance(value.get("counts"), list):
        return value["counts"]
    return value if isinstance(value, list) else None


def counts_problems(value: Any, path: str = "counts", genes: int | None = None) -> list[Problem]:
    """Every reason to refuse a counts input, at most one per kind of fault, each naming the first
    offending position and how many there are; ``genes``: the model's gene count, if known."""
    values = counts_values(value)
    if values is None:
        return [Problem(path, f"must be {COUNTS_SHAPE}, not {_short(value)}")]
    if not values:
        return [Problem(path, f"is empty: it must be {COUNTS_SHAPE}")]
    problems = []
    if genes is not None and len(values) != genes:
        problems.append(
            Problem(
                path,
                f"has {len(values):,} counts but the model has {genes:,} genes: one count per gene, "
                "in the model's gene order (a result's gene_order)",
            )
        )
    types = set(map(type, values))
    if not types <= {int, float}:
        bad = [i for i, item in enumerate(values) if type(item) not in (int, float)]
        problems.append(
            Problem(
                path, f"{_position(bad, values)} is not a number; every count is a number {_many(bad, values, 'not')}"
            )
        )
        return problems
    import numpy as np  # here: the vocabulary is imported at the workflow's parse time, numpy is not needed there

    try:
        array = np.asarray(values, dtype=np.int64 if types == {int} else np.float64)
    except OverflowError:
        array = np.asarray(values, dtype=np.float64)
    if array.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            problems.append(
                Problem(path, f"{_position(bad, values)} is not a finite number {_many(bad, values, 'not')}")
            )
            return problems
    bad = np.flatnonzero(array < 0)
    if bad.size:
        problems.append(
            Problem(path, f"{_position(bad, values)} is negative; counts are never negative {_many(bad, values)}")
        )
    if array.dtype.kind == "f":
        bad = np.flatnonzero(array != np.floor(array))
        if bad.size:
            problems.append(
                Problem(
                    path,
                    f"{_position(bad, values)} is not a whole number; counts are whole numbers, "
                    f"10.0 is accepted but not 2.5 {_many(bad, values, 'not')}",
                )
            )
    if not problems and not array.any():
        problems.append(Problem(path, "is all zeros: a sample without a single count says nothing"))
    return problems


def _position(bad: Any, values: list) -> str:
    first = int(bad[0])
    return f"counts[{first}] = {_short(values[first])}"


def _many(bad: Any, values: list, negation: str = "") -> str:
    """``(3 of 44,590 values are)``, or ``(... are not)`` with ``negation``."""
    verb = "is" if len(bad) == 1 else "are"
    return f"({len(bad):,} of {len(values):,} values {verb}{' ' + negation if negation else ''})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["COUNTS_SHAPE", "counts_problems", "counts_values"]
