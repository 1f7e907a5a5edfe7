"""Metadata keys: what a condition *is*, in each model family's vocabulary.

A vocabulary is a table of :class:`MetadataKey` rows: the key, its group (biological,
perturbational, technical) and what its values may be (a closed list of choices, a format
given as a regular expression plus its description in words, a number, or free text).
``VOCABULARIES`` names each table; a model row (:mod:`.models`) says which one its inputs
speak. GEM-1's is ``METADATA_KEYS``; GEM-2's is ``GEM2_METADATA_KEYS`` (it names tissues, and
carries perturbations as lists of objects: a key whose value is such a list has ``items``, a
:class:`ListItems` row saying what one element is).

The values are checked for format only: values outside a model's vocabulary are refused by
the API itself.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthbio_pipeline.errors import Problem
from synthbio_pipeline.vocabulary.values import too_long
from synthbio_pipeline.vocabulary.words import did_you_mean, listed, quoted

BIOLOGICAL, PERTURBATIONAL, TECHNICAL = "biological", "perturbational", "technical"
#: The groups of metadata keys, in the order the docs list them.
METADATA_GROUPS = (BIOLOGICAL, PERTURBATIONAL, TECHNICAL)


@dataclass(frozen=True)
class MetadataKey:
    name: str
    group: str  # one of METADATA_GROUPS
    #: A regular expression the value must match in full, if the key has a format.
    pattern: re.Pattern[str] | None = None
    #: The closed set of values the protocol lists for this key, if it lists one.
    choices: tuple[str, ...] = ()
    #: The format in words, said to the user when the value is refused.
    expected: str = ""
    #: A number (the API takes it as a number or as text).
    numeric: bool = False
    #: More for the docs: what the value means, or the values commonly seen.
    note: str = ""
    #: The value is a list of JSON objects, each one of these (GEM-2's perturbation lists).
    items: ListItems | None = None

    def describe(self) -> str:
        """The allowed values in words (schema descriptions and docs)."""
        if self.items is not None:
            text = self.items.describe()
        elif self.choices:
            text = f"one of {quoted(self.choices)}"
        else:
            text = self.expected or "free text"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class ListItems:
    """What one element of a list-valued metadata key is: a JSON object.

    With ``one_of``, an element carries exactly one of those keys and nothing else, its value
    checked as that :class:`MetadataKey` says (a molecule is ``{"smiles": ...}``,
    ``{"entity_ontology_id": ...}`` or ``{"entity": ...}``). Without, any object is taken and
    the server judges its fields (the vendor documents none).
    """

    #: One element, in words: ``molecule``.
    noun: str
    one_of: tuple[MetadataKey, ...] = ()

    def describe(self) -> str:
        if not self.one_of:
            return f"a list of {self.noun} objects (their fields are not documented: the server judges them)"
        shapes = " or ".join(f'{{"{key.name}": {key.expected or "text"}}}' for key in self.one_of)
        return f"a list of {self.noun}s, each exactly one of {shapes}"


#: A number and a unit: ``10 um``, ``24 hours``.
NUMBER_AND_UNIT = re.compile(r"\s*\d+(\.\d+)?\s*[A-Za-zµ%][\w/%µ. -]*")

# The metadata keys of the GEM-1 models, by group, in the API documentation's order.
METADATA_KEYS: dict[str, MetadataKey] = {
    key.name: key
    for key in (
        MetadataKey("age_years", BIOLOGICAL, numeric=True, expected="a number of years, e.g. 65"),
        MetadataKey(
            "cell_line_ontology_id",
            BIOLOGICAL,
            re.compile(r"CVCL_[A-Z0-9]{4}"),
            expected="a Cellosaurus id like CVCL_0030",
        ),
        MetadataKey(
            "cell_type_ontology_id",
            BIOLOGICAL,
            re.compile(r"CL:\d{7}"),
            expected="a Cell Ontology id like CL:0000786",
        ),
        MetadataKey("developmental_stage", BIOLOGICAL),
        MetadataKey(
            "disease_ontology_id",
            BIOLOGICAL,
            re.compile(r"MONDO:\d{7}"),
            expected="a MONDO id like MONDO:0005015",
        ),
        MetadataKey("ethnicity", BIOLOGICAL),
        MetadataKey("genotype", BIOLOGICAL),
        MetadataKey("race", BIOLOGICAL),
        MetadataKey(
            "sample_type",
            BIOLOGICAL,
            choices=(
                "cell line",
                "organoid",
                "other",
                "primary cells",
                "primary tissue",
                "xenograft",
            ),
        ),
        MetadataKey("sex", BIOLOGICAL, choices=("male", "female")),
        MetadataKey(
            "tissue_ontology_id",
            BIOLOGICAL,
            re.compile(r"UBERON:\d{7}"),
            expected="an UBERON id like UBERON:0001155",
        ),
        MetadataKey(
            "perturbation_dose",
            PERTURBATIONAL,
            NUMBER_AND_UNIT,
            expected="a number and a unit, e.g. '10 um'",
        ),
        MetadataKey(
            "perturbation_ontology_id",
            PERTURBATIONAL,
            re.compile(r"ENSG\d{11}|CHEBI:\d+|CHEMBL\d+|\d+"),
            expected=(
                "an Ensembl gene id (ENSG00000156127), a ChEBI id (CHEBI:16681), "
                "a ChEMBL id (CHEMBL1234567) or an NCBI Taxonomy id (9606)"
            ),
        ),
        MetadataKey(
            "perturbation_time",
            PERTURBATIONAL,
            NUMBER_AND_UNIT,
            expected="a number and a unit, e.g. '24 hours'",
        ),
        MetadataKey(
            "perturbation_type",
            PERTURBATIONAL,
            choices=(
                "coculture",
                "compound",
                "control",
                "crispr",
                "genetic",
                "infection",
                "other",
                "overexpression",
                "peptide or biologic",
                "shrna",
                "sirna",
            ),
        ),
        MetadataKey(
            "study",
            TECHNICAL,
            re.compile(r"PRJ[EDN][A-Z]\d+"),
            expected="a BioProject id like PRJNA123456",
        ),
        MetadataKey("library_selection", TECHNICAL, note="ENA vocabulary, e.g. cDNA, polyA, Oligo-dT"),
        MetadataKey("library_layout", TECHNICAL, choices=("PAIRED", "SINGLE")),
        MetadataKey("platform", TECHNICAL, note="e.g. illumina"),
    )
}

#: Text with something other than spaces in it.
NOT_BLANK = re.compile(r"\s*\S.*", re.DOTALL)

# The metadata keys of GEM-2 (pysynthbio 4.2.4's README example and tests): the tissue by name,
# GEM-1's sample type, age and library keys, and perturbations as lists of objects.
GEM2_METADATA_KEYS: dict[str, MetadataKey] = {
    key.name: key
    for key in (
        MetadataKey(
            "tissue",
            BIOLOGICAL,
            NOT_BLANK,
            expected="a tissue name, e.g. 'liver'",
            note="a name, not an UBERON id",
        ),
        METADATA_KEYS["sample_type"],
        METADATA_KEYS["age_years"],
        MetadataKey(
            "bioactive_entity_perturbations",
            PERTURBATIONAL,
            items=ListItems(
                "molecule",
                one_of=(
                    MetadataKey(
                        "smiles",
                        PERTURBATIONAL,
                        re.compile(r"[A-Za-z0-9@+\-\[\]()=#$%:/\\.*]+"),
                        expected="a SMILES string such as 'CCO'",
                    ),
                    MetadataKey(
                        "entity_ontology_id",
                        PERTURBATIONAL,
                        NOT_BLANK,
                        expected="an ontology id such as 'CHEMBL3261331'",
                    ),
                    MetadataKey("entity", PERTURBATIONAL, NOT_BLANK, expected="a supported name such as 'ethanol'"),
                ),
            ),
            note="SMILES and ontology ids need a release with molecules enabled",
        ),
        MetadataKey("gene_perturbations", PERTURBATIONAL, items=ListItems("gene perturbation")),
        MetadataKey("infection_perturbations", PERTURBATIONAL, items=ListItems("infection perturbation")),
        METADATA_KEYS["library_selection"],
        METADATA_KEYS["library_layout"],
    )
}

#: Every metadata vocabulary, by the name a model row gives in ``vocabulary``.
VOCABULARIES: dict[str, dict[str, MetadataKey]] = {"gem-1": METADATA_KEYS, "gem-2": GEM2_METADATA_KEYS}


def metadata_problems(
    metadata: Mapping[str, Any], path: str = "metadata", keys: Mapping[str, MetadataKey] = METADATA_KEYS
) -> list[Problem]:
    """Unknown keys (with a "did you mean" hint) and values of the wrong format.

    ``keys`` are the keys allowed (default: GEM-1's); a ``None`` value means "not set".
    """
    problems = []
    for key, value in metadata.items():
        where = f"{path}.{key}"
        spec = keys.get(key)
        if spec is None:
            problems.append(Problem(where, unknown_key_message(key, keys)))
            continue
        if value is None:
            continue
        if spec.items is not None:
            problems += list_problems(spec, value, where)
            continue
        message = metadata_value_problem(spec, value)
        if message:
            problems.append(Problem(where, message))
    return problems


def metadata_value_problem(spec: MetadataKey, value: Any) -> str | None:
    """Why a value does not fit its key, or ``None`` when it does."""
    if spec.numeric:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            return f"must be {spec.expected}, not {value!r}"
        if isinstance(value, str) and too_long(value):
            return f"{too_long(value)} (must be {spec.expected})"
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return f"must be {spec.expected}, not {value!r}"
        if not math.isfinite(number):  # inf, nan, 1e999: JSON cannot carry them
            return f"must be a finite number ({spec.expected}), not {value!r}"
        return None if number >= 0 else f"must not be negative, not {value!r}"
    if not isinstance(value, str):
        return f"must be text, not {value!r}"
    if spec.choices and value not in spec.choices:
        hint = did_you_mean(value, spec.choices)
        return f"{value!r} is not allowed; one of {quoted(spec.choices)}{hint}"
    if spec.pattern is not None and not spec.pattern.fullmatch(value):
        return f"{value!r} is malformed: expected {spec.expected}"
    return None


def list_problems(spec: MetadataKey, value: Any, path: str) -> list[Problem]:
    """Problems of a list-valued key's value: a list of objects, each as ``spec.items`` says."""
    items = spec.items
    if not isinstance(value, list):
        return [Problem(path, f"must be a list of {items.noun} objects (may be empty), not {value!r}")]
    problems = []
    names = [key.name for key in items.one_of]
    for index, element in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(element, Mapping):
            problems.append(Problem(where, f"each {items.noun} is an object, not {element!r}"))
            continue
        if not items.one_of:
            continue
        given = [name for name in element if name in names]
        others = [name for name in element if name not in names]
        if len(given) != 1 or others:
            found = ", ".join(repr(name) for name in element) or "no key"
            one_of = listed([repr(name) for name in names], "or")
            problems.append(Problem(where, f"a {items.noun} has exactly one key, {one_of}; found {found}"))
            continue
        key = next(key for key in items.one_of if key.name == given[0])
        message = metadata_value_problem(key, element[key.name])
        if message:
            problems.append(Problem(f"{where}.{key.name}", message))
    return problems


def unknown_key_message(key: str, keys: Mapping[str, MetadataKey] = METADATA_KEYS) -> str:
    hint = did_you_mean(key, keys)
    return f"unknown metadata key{hint or '; see the valid keys in the API documentation'}"
