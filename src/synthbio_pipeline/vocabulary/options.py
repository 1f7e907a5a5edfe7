"""Query options: the query-level fields with a meaning of their own (``seed``, ``total_count``,
``deterministic_latents``), their types and what the server does without them.

Any other query-level field is passed through to the server, which judges it. The
conditions table and the config's ``defaults`` take every option here as a column / key.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.errors import Problem
from synthbio_pipeline.vocabulary.values import INT64_MAX

INTEGER, BOOLEAN = "integer", "boolean"
#: How a text cell (the conditions table) spells a boolean option.
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


@dataclass(frozen=True)
class QueryOption:
    name: str
    #: ``integer`` or ``boolean`` (JSON types).
    type: str
    #: What the option does, one sentence.
    meaning: str
    #: What the server does when the query leaves the option out.
    default: str
    #: The least value of an integer option, if it has one.
    minimum: int | None = None
    #: The field of the model table (``ModelSpec``) holding the server's default, if it is per model.
    model_default: str | None = None

    def expected(self) -> str:
        """The allowed values in words: ``a whole number of at least 1``."""
        if self.type == BOOLEAN:
            return "true or false"
        if self.minimum is None:
            return "a whole number"
        return f"a whole number of at least {self.minimum}"

    def problem(self, value: Any) -> str | None:
        """Why a value does not fit the option, or ``None`` when it does (``None`` is "not set")."""
        if value is None:
            return None
        if self.type == BOOLEAN:
            return None if isinstance(value, bool) else f"must be {self.expected()}, not {value!r}"
        if not is_int(value) or (self.minimum is not None and value < self.minimum):
            return f"must be {self.expected()}, not {value!r}"
        if abs(value) > INT64_MAX:
            return f"is too large: at most {INT64_MAX:,} (64 bits)"
        return None


#: The query options, in the order the docs and the outputs' metadata columns list them.
QUERY_OPTIONS: dict[str, QueryOption] = {
    option.name: option
    for option in (
        QueryOption(
            "seed",
            INTEGER,
            meaning="random seed of the sampling; with it, results are reproducible",
            default="a random seed",
        ),
        QueryOption(
            "total_count",
            INTEGER,
            meaning="library size of each generated sample (turns predicted log-CPM into counts)",
            default="the model's own",
            minimum=1,
            model_default="default_total_count",
        ),
        QueryOption(
            "deterministic_latents",
            BOOLEAN,
            meaning="use the latent means instead of sampling them",
            default="false",
        ),
    )
}


def option_problems(options: Mapping[str, Any], path_prefix: str = "") -> list[Problem]:
    """Type checks of the query options present in ``options`` (other fields are not looked at)."""
    problems = []
    for name, option in QUERY_OPTIONS.items():
        message = option.problem(options.get(name))
        if message:
            problems.append(Problem(path_prefix + name, message))
    return problems


def is_int(value: Any) -> bool:
    """A whole number, and not a boolean (JSON ``true`` is not 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
