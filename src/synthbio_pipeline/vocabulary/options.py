"""Query options: the query-level fields with a meaning of their own (``seed``, ``total_count``,
``deterministic_latents``), their types and what the server does without them.

``QUERY_OPTIONS`` are taken by every model; the conditions table and the config's
``defaults`` take each as a column / key. ``MODEL_OPTIONS`` are taken only by the models whose
row (:class:`~.models.ModelSpec`) names them in ``options``: reference conditioning's
``conditioning`` (which latent spaces come from the reference) and ``fixed_total_count``.
Any other query-level field is passed through to the server, which judges it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.errors import Problem
from synthbio_pipeline.vocabulary.values import INT64_MAX
from synthbio_pipeline.vocabulary.words import did_you_mean, quoted

INTEGER, BOOLEAN, LIST = "integer", "boolean", "array"
#: How a text cell (the conditions table) spells a boolean option.
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")
#: How a text cell separates the items of an ``array`` option (``biological;technical``).
LIST_SEPARATOR = ";"


@dataclass(frozen=True)
class QueryOption:
    name: str
    #: ``integer``, ``boolean`` or ``array`` (JSON types; an array holds distinct ``choices``).
    type: str
    #: What the option does, one sentence.
    meaning: str
    #: What the server does when the query leaves the option out.
    default: str
    #: The least value of an integer option, if it has one.
    minimum: int | None = None
    #: The field of the model table (``ModelSpec``) holding the server's default, if it is per model.
    model_default: str | None = None
    #: The words an ``array`` option's items are taken from.
    choices: tuple[str, ...] = ()
    #: The server's default as a value (an ``array`` option's as a tuple), where it is one.
    default_value: Any = None

    def wire_default(self) -> Any:
        """The server's default as it is written in a query (an ``array`` as a list)."""
        return list(self.default_value) if self.type == LIST else self.default_value

    def expected(self) -> str:
        """The allowed values in words: ``a whole number of at least 1``."""
        if self.type == BOOLEAN:
            return "true or false"
        if self.type == LIST:
            return f"a list of distinct values among {quoted(self.choices)}"
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
            if not isinstance(value, list):
                return f"must be {self.expected()}, not {value!r}"
            unknown = [item for item in value if not isinstance(item, str) or item not in self.choices]
            if unknown:
                hint = did_you_mean(unknown[0], self.choices) if isinstance(unknown[0], str) else ""
                return f"{unknown[0]!r} is not allowed; each item is one of {quoted(self.choices)}{hint}"
            if len(set(value)) < len(value):
                return f"lists a value twice: {value!r}"
            return None
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


#: The latent spaces a reference-conditioning query may take from its reference.
LATENT_SPACES = ("biological", "technical", "perturbation")

#: Options only some models take (a model row lists them in ``options``), in the docs' order.
MODEL_OPTIONS: dict[str, QueryOption] = {
    option.name: option
    for option in (
        QueryOption(
            "conditioning",
            LIST,
            meaning="the latent spaces taken from the reference sample (the rest is drawn afresh)",
            default='["biological", "technical"]',
            choices=LATENT_SPACES,
            default_value=("biological", "technical"),
        ),
        QueryOption(
            "fixed_total_count",
            BOOLEAN,
            meaning="true: total_count sets the library size; false: each output keeps its reference's",
            default="false",
            default_value=False,
        ),
    )
}


#: Every option a conditions table row (or the config's ``defaults``) may set, in the docs' order.
ALL_OPTIONS: dict[str, QueryOption] = {**QUERY_OPTIONS, **MODEL_OPTIONS}


def option_problems(
    options: Mapping[str, Any], path_prefix: str = "", table: Mapping[str, QueryOption] = QUERY_OPTIONS
) -> list[Problem]:
    """Type checks of the options of ``table`` present in ``options`` (other fields are not looked at)."""
    problems = []
    for name, option in table.items():
        message = option.problem(options.get(name))
        if message:
            problems.append(Problem(path_prefix + name, message))
    return problems


def is_int(value: Any) -> bool:
    """A whole number, and not a boolean (JSON ``true`` is not 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
