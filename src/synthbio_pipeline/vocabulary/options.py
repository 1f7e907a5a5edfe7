"""Query options: the query-level fields with a meaning of their own (``seed``, ``total_count``,
``deterministic_latents``, and for reference conditioning ``conditioning`` and
``fixed_total_count``), their types, the kinds of model that take them and what the server
does without them.

Any other query-level field is passed through to the server, which judges it. The
conditions table and the config's ``defaults`` take every option here as a column / key.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.errors import Problem
from synthbio_pipeline.vocabulary.models import BASELINE, PREDICT_METADATA, REFERENCE_CONDITIONING
from synthbio_pipeline.vocabulary.words import quoted

INTEGER, BOOLEAN, LIST = "integer", "boolean", "array"
#: How a text cell (the conditions table) spells a boolean option.
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")
#: How a text cell separates the items of a list option (``biological;technical``).
LIST_SEPARATOR = ";"
#: The latent groups a reference-conditioned query may keep from its reference (``conditioning``).
CONDITIONING_GROUPS = ("biological", "technical", "perturbation")


@dataclass(frozen=True)
class QueryOption:
    name: str
    #: ``integer``, ``boolean`` or ``array`` (JSON types; an array of words from ``choices``).
    type: str
    #: What the option does, one sentence.
    meaning: str
    #: What the server does when the query leaves the option out.
    default: str
    #: The least value of an integer option, if it has one.
    minimum: int | None = None
    #: The field of the model table (``ModelSpec``) holding the server's default, if it is per model.
    model_default: str | None = None
    #: The kinds of model (``ModelSpec.kind``) whose queries take the option.
    kinds: tuple[str, ...] = (BASELINE, REFERENCE_CONDITIONING)
    #: The words a list option's items are chosen from.
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        """The allowed values in words: ``a whole number of at least 1``."""
        if self.type == BOOLEAN:
            return "true or false"
        if self.type == LIST:
            return f"a list of {quoted(self.choices)}, each at most once"
        if self.minimum is None:
            return "a whole number"
        return f"a whole number of at least {self.minimum}"

    def problem(self, value: Any) -> str | None:
        """Why a value does not fit the option, or ``None`` when it does (``None`` is "not set")."""
        if value is None:
            return None
        if self.type == BOOLEAN:
            return None if isinstance(value, bool) else f"must be {self.expected()}, not {value!r}"
        if self.type == LIST:
            ok = (
                isinstance(value, list)
                and value
                and all(isinstance(item, str) and item in self.choices for item in value)
                and len(set(value)) == len(value)
            )
            return None if ok else f"must be {self.expected()}, not {value!r}"
        if not is_int(value) or (self.minimum is not None and value < self.minimum):
            return f"must be {self.expected()}, not {value!r}"
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
            kinds=(BASELINE, REFERENCE_CONDITIONING, PREDICT_METADATA),
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
        QueryOption(
            "conditioning",
            LIST,
            meaning="the latent groups taken from the reference sample (the perturbation is applied on top of them)",
            default="biological and technical",
            kinds=(REFERENCE_CONDITIONING,),
            choices=CONDITIONING_GROUPS,
        ),
        QueryOption(
            "fixed_total_count",
            BOOLEAN,
            meaning="true gives each sample total_count as its library size, false keeps the reference's",
            default="false",
            kinds=(REFERENCE_CONDITIONING,),
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


def options_for(kind: str) -> dict[str, QueryOption]:
    """The options a kind of model takes (``reference-conditioning``: all of them)."""
    return {name: option for name, option in QUERY_OPTIONS.items() if kind in option.kinds}


def is_int(value: Any) -> bool:
    """A whole number, and not a boolean (JSON ``true`` is not 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
