"""Write the vocabulary's restatements from ``synthbio_pipeline.vocabulary``: the one place it is defined.

    python scripts/generate_vocabulary.py           # rewrite the generated sections
    python scripts/generate_vocabulary.py --check   # exit 1, naming them, if any is stale

The generated pieces sit between markers in hand-written files; everything outside the
markers is left as it is:

- YAML (the workflow's JSON schemas), at any indentation::

      # generated: NAME (python scripts/generate_vocabulary.py; do not edit)
      ...
      # end generated: NAME

- Markdown, a block (a table) or a span inside a line::

      <!-- generated: NAME (python scripts/generate_vocabulary.py; do not edit) -->
      ...
      <!-- end generated: NAME -->

The output depends on the vocabulary alone (ordered tables, no dates): running the script
twice changes nothing. ``tests/test_vocabulary.py`` fails when a generated section is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.pipeline.references import GENE_ORDER_MODELS
from synthbio_pipeline.vocabulary.families import (
    AUTOENCODE,
    FROM_REFERENCE,
    GEM2,
    GEM2_MODEL_IDS,
    GEM2_OPERATION_SPECS,
    OUTPUT_GROUPS,
    PREDICT_EXPRESSION,
    group_family,
    group_modality,
)
from synthbio_pipeline.vocabulary.gem2 import (
    GEM1_SHAPE_FIELDS,
    GEM2_FIELDS,
    GEM2_TABLE_KEYS,
    GENE_PERTURBATION,
    OPTION_FIELDS,
    PERTURBATION_COLUMNS,
    gem2_modes,
)
from synthbio_pipeline.vocabulary.metadata import GEM2_METADATA_KEYS, METADATA_GROUPS, METADATA_KEYS, MetadataKey
from synthbio_pipeline.vocabulary.models import (
    DEFAULT_MODALITY,
    MODALITIES,
    MODEL_ID_PATTERN,
    MODELS,
    MODES,
    SAMPLING_STRATEGIES,
    modalities_of_mode,
    model_for_modality,
)
from synthbio_pipeline.vocabulary.options import (
    ALL_OPTIONS,
    BOOLEAN,
    FALSE_WORDS,
    LIST,
    LIST_SEPARATOR,
    MODEL_OPTIONS,
    TRUE_WORDS,
    QueryOption,
)
from synthbio_pipeline.vocabulary.query import WIRE_MODE
from synthbio_pipeline.vocabulary.words import listed

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python scripts/generate_vocabulary.py"


# --- words ---------------------------------------------------------------------------------


def _or(words: Iterable[str]) -> str:
    return listed(words, "or")


def _and(words: Iterable[str]) -> str:
    return listed(words, "and")


def _quote(word: str) -> str:
    return f"'{word}'"


def _code(word: str) -> str:
    return f"`{word}`"


def _only_modes() -> list[tuple[str, tuple[str, ...]]]:
    """The modalities that accept fewer modes than there are, and the modes they accept."""
    found = []
    for modality in MODALITIES:
        modes = model_for_modality(modality).modes
        if set(modes) != set(SAMPLING_STRATEGIES):
            found.append((modality, modes))
    return found


def _modes_text(quote: Callable[[str], str]) -> str:
    """``'sample generation' or 'mean estimation' (single-cell: 'mean estimation' only)``."""
    text = _or(quote(mode) for mode in SAMPLING_STRATEGIES)
    only = [f"{modality}: {_or(quote(mode) for mode in modes)} only" for modality, modes in _only_modes()]
    return f"{text} ({'; '.join(only)})" if only else text


def _modalities_text(quote: Callable[[str], str]) -> str:
    """``'bulk' (model gem-1-bulk) or 'single-cell' (model gem-1-sc)``."""
    return _or(f"{quote(modality)} (model {quote(model_for_modality(modality).model_id)})" for modality in MODALITIES)


def _boolean_spellings(quote: Callable[[str], str]) -> str:
    """``'yes'/'no', '1'/'0'``: the table's other spellings of true and false."""
    return ", ".join(f"{quote(yes)}/{quote(no)}" for yes, no in list(zip(TRUE_WORDS, FALSE_WORDS, strict=True))[1:])


def _option_expected(option: QueryOption, quote: Callable[[str], str]) -> str:
    if option.type == BOOLEAN:
        return f"{quote(TRUE_WORDS[0])} or {quote(FALSE_WORDS[0])} (also {_boolean_spellings(quote)})"
    if option.type == LIST:
        words = _or(map(quote, option.choices))
        return f"one or more of {words}, separated by {quote(LIST_SEPARATOR)}"
    return option.expected()


def _only_for(option: QueryOption) -> str:
    """``; rows with a reference only`` for an option only some models take."""
    if option.name not in MODEL_OPTIONS:
        return ""
    kinds = {spec.kind for spec in MODELS if option.name in spec.options}
    if kinds == {"reference-conditioning"}:
        return "; rows with a reference only"
    return f"; {_or(sorted(kinds))} models only"


def _model_default(modality: str, option: QueryOption) -> object:
    """The value the server uses for ``option`` with a modality's model (``total_count``: 10,000,000 bulk)."""
    return getattr(model_for_modality(modality), option.model_default)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- regular expressions for text cells ----------------------------------------------------

_SPECIAL = re.compile(r"([\\.^$*+?{}\[\]|()])")


def _escape(word: str) -> str:
    """A word as a regular expression (only the characters that need it escaped: readable)."""
    return _SPECIAL.sub(r"\\\1", word)


def _cell(pattern: str) -> str:
    """A cell of the table holding a value that matches ``pattern``, spaces around allowed
    (the library strips them)."""
    return rf"^\s*(?:{pattern})\s*$"


def _words_pattern(words: Iterable[str]) -> str:
    return "|".join(_escape(word) for word in words)


def _option_cell_pattern(option: QueryOption) -> str:
    if option.type == BOOLEAN:
        pairs = zip(TRUE_WORDS, FALSE_WORDS, strict=True)
        return rf"^\s*(?i:{'|'.join(word for pair in pairs for word in pair)})\s*$"
    if option.type == LIST:
        word = f"(?:{_words_pattern(option.choices)})"
        return _cell(rf"{word}(?:\s*{_escape(LIST_SEPARATOR)}\s*{word})*")
    if option.minimum is None:
        return r"^\s*[+-]?[0-9]+\s*$"
    if option.minimum == 1:
        return r"^\s*[1-9][0-9]*\s*$"
    raise ValueError(f"{option.name}: no cell pattern for an integer of at least {option.minimum}; add one here")


def _key_cell_pattern(key: MetadataKey) -> str | None:
    if key.choices:
        return _cell(_words_pattern(key.choices))
    if key.pattern is not None:
        return _cell(key.pattern.pattern)
    return None  # free text, or a number (checked by the library)


# --- YAML ----------------------------------------------------------------------------------


def _yaml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _yaml_property(name: str, fields: list[tuple[str, object]]) -> list[str]:
    """``name:`` and its fields, two spaces in; a description as a folded block, wrapped."""
    lines = [f"{name}:"]
    for field, value in fields:
        if field == "description":
            lines.append("  description: >-")
            wrapped = textwrap.wrap(str(value), width=88, break_on_hyphens=False, break_long_words=False)
            lines += [f"    {line}" for line in wrapped]
        elif isinstance(value, (list, tuple)):
            lines.append(f"  {field}: [{', '.join(_yaml_string(item) for item in value)}]")
        elif isinstance(value, str):
            lines.append(f"  {field}: {_yaml_string(value) if field == 'pattern' else value}")
        else:
            lines.append(f"  {field}: {json.dumps(value)}")
    return lines


def conditions_columns() -> list[str]:
    """The vocabulary's columns of the conditions table: each cell's pattern and its words."""
    modes = _modes_text(_quote)
    example = MODELS[0].model_id
    lines = _yaml_property(
        "modality",
        [
            ("type", "string"),
            ("pattern", _cell(_words_pattern(MODALITIES))),
            ("description", _or(map(_quote, MODALITIES))),
        ],
    )
    lines += _yaml_property(
        "mode", [("type", "string"), ("pattern", _cell(_words_pattern(SAMPLING_STRATEGIES))), ("description", modes)]
    )
    lines += _yaml_property(
        WIRE_MODE,
        [
            ("type", "string"),
            ("pattern", _cell(_words_pattern(SAMPLING_STRATEGIES))),
            ("description", f"the API's name for mode: {modes}"),
        ],
    )
    for column, meaning in (
        ("model", "any model id of the model table, GEM-2's included, such as "),
        ("model_id", "the synonym of model: "),
    ):
        lines += _yaml_property(
            column,
            [
                ("type", "string"),
                ("pattern", _cell(MODEL_ID_PATTERN.pattern)),
                ("description", f"{meaning}{example} or gem-2-bulk (overrides modality)"),
            ],
        )
    lines += _yaml_property(
        "operation",
        [
            ("type", "string"),
            ("pattern", _cell(_words_pattern(TABLE_OPERATIONS))),
            (
                "description",
                f"GEM-2 rows of model {GEM2} only: the operation ({PREDICT_EXPRESSION}, the default; "
                f"{FROM_REFERENCE} and {AUTOENCODE} with a reference)",
            ),
        ],
    )
    for column, (key, name) in PERTURBATION_COLUMNS.items():
        element = (
            GENE_PERTURBATION
            if column == "gene_perturbations"
            else next(k for k in GEM2_METADATA_KEYS[key].items.one_of if k.name == name)
        )
        fields = [("type", "string")]
        if column == "gene_perturbations":
            one = f"(?:{element.pattern.pattern})"
            fields.append(("pattern", _cell(f"{one}(?:\\s*;\\s*{one})*")))
        fields.append(
            (
                "description",
                f"GEM-2 rows only: one or more of {element.expected}, separated by ;, each sent as "
                f'{{"{name}": ...}} in the metadata\'s {key}',
            )
        )
        lines += _yaml_property(column, fields)
    for key in GEM2_TABLE_KEYS.values():
        if key.name in METADATA_KEYS:
            continue
        fields = [("type", "string")]
        pattern = _key_cell_pattern(key)
        if pattern is not None:
            fields.append(("pattern", pattern))
        fields.append(("description", f"GEM-2 metadata key ({key.group}): {key.describe()}"))
        lines += _yaml_property(key.name, fields)
    for option in ALL_OPTIONS.values():
        lines += _yaml_property(
            option.name,
            [
                ("type", "string"),
                ("pattern", _option_cell_pattern(option)),
                ("description", f"{_option_expected(option, str)}: {option.meaning}{_only_for(option)}"),
            ],
        )
    for key in METADATA_KEYS.values():
        fields: list[tuple[str, object]] = [("type", "string")]
        pattern = _key_cell_pattern(key)
        if pattern is not None:
            fields.append(("pattern", pattern))
        fields.append(("description", f"API metadata key ({key.group}): {key.describe()}"))
        lines += _yaml_property(key.name, fields)
    return lines


def config_defaults() -> list[str]:
    """``defaults:``' properties in config.schema.yaml: a default per option column."""
    lines = _yaml_property(
        "modality",
        [
            ("enum", MODALITIES),
            ("description", f"{_modalities_text(str)}; {DEFAULT_MODALITY} when not set."),
        ],
    )
    lines += _yaml_property(
        "mode",
        [
            ("enum", SAMPLING_STRATEGIES),
            ("description", f"How samples are drawn: {_modes_text(str)}; the model's own when not set."),
        ],
    )
    for option in ALL_OPTIONS.values():
        fields: list[tuple[str, object]] = [("type", option.type)]
        if option.minimum is not None:
            fields.append(("minimum", option.minimum))
        if option.type == LIST:
            fields += [("items", {"enum": list(option.choices)}), ("minItems", 1), ("uniqueItems", True)]
        default = _and(option.default_value) if option.type == LIST else option.default
        fields.append(("description", f"{_sentence(option.meaning)}{_only_for(option)}. When not set: {default}."))
        lines += _yaml_property(option.name, fields)
    return lines


def config_modalities() -> list[str]:
    return [f"enum: [{', '.join(_yaml_string(m) for m in MODALITIES)}]"]


def config_gene_order_files() -> list[str]:
    """``gene_order_files:``' properties: one per output group, the model whose order it gives."""
    lines = []
    for group in OUTPUT_GROUPS:
        model = GENE_ORDER_MODELS[group]
        family = "GEM-2" if group_family(group) == GEM2 else "GEM-1"
        description = (
            f"A file giving {model}'s gene order, which every {family} {group_modality(group)} model id "
            f"answers in: for the references and annotate files of the {group} output group."
        )
        lines += _yaml_property(group, [("type", "string"), ("minLength", 1), ("description", description)])
    return lines


# --- Markdown ------------------------------------------------------------------------------


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


#: The GEM-2 ids a conditions table row names most often (the others: README, GEM-2).
GEM2_TABLE_IDS = ("gem-2-bulk", "gem-2-sc", "gem-2-bulk_baseline", "gem-2-sc_baseline")
#: The GEM-2 operations a table row runs (pipeline.conditions.TABLE_GEM2_OPERATIONS).
TABLE_OPERATIONS = (PREDICT_EXPRESSION, FROM_REFERENCE, AUTOENCODE)


def readme_option_columns() -> list[str]:
    """config/README.md: the table's columns that override the config's defaults."""
    mode_words = []
    for mode, meaning in MODES.items():
        where = modalities_of_mode(mode)
        which = f"{where[0]} only" if len(where) == 1 else _and(where)
        mode_words.append(f"`{mode}` ({meaning}; {which})")
    own_modes = "; ".join(
        f"{modality}: `{model_for_modality(modality).default_mode}`"
        + (", its only mode" if len(model_for_modality(modality).modes) == 1 else "")
        for modality in MODALITIES
    )
    rows = [
        (
            "`modality`",
            f"{_modalities_text(_code)}. Each modality is merged into its own pair of files.",
            f"`defaults.modality`, else `{DEFAULT_MODALITY}`",
        ),
        ("`mode`", _or(mode_words) + ".", f"`defaults.mode`, else the model's own ({own_modes})"),
        (f"`{WIRE_MODE}`", "The API's name for `mode`; give one or the other, not both.", "see `mode`"),
        (
            "`model`",
            "A GEM-1 model id of the model table that generates samples (baseline or reference "
            f"conditioning), such as `{MODELS[0].model_id}`, or a GEM-2 id of "
            f"{_code(PREDICT_EXPRESSION)}: {', '.join(_code(i) for i in GEM2_TABLE_IDS)} "
            f"(also with `-ensemble`), or {_code(GEM2)} with the `operation` column; with a `reference`, "
            "`gem-2-{bulk,sc}_reference-conditioning` (an ensemble member too) or "
            "`gem-2-{bulk,sc}_autoencode`. Any other id is refused at this column (metadata "
            "prediction is an output: `outputs.predicted_metadata`, `annotate:`). The model names the "
            "row's modality: it overrides `defaults.modality`, and a `modality` cell must agree with it. "
            "A GEM-2 row takes GEM-2's metadata columns (below) and merges into "
            "`results/gem-2-{modality}/`, never into a GEM-1 matrix. `model_id` is its synonym.",
            "the modality's GEM-1 model",
        ),
        (
            "`operation`",
            f"The GEM-2 operation of a {_code(GEM2)} row: {_code(PREDICT_EXPRESSION)}, or, on a "
            f"row with a `reference`, {_code(FROM_REFERENCE)} or {_code(AUTOENCODE)} (`num_samples` 1). "
            "A GEM-2 compatibility id names its own operation: the cell may repeat it, not contradict it; "
            "a GEM-1 row takes none. `predict-metadata` runs from an `annotate:` entry, not the table.",
            f"{_code(PREDICT_EXPRESSION)}",
        ),
    ]
    for option in ALL_OPTIONS.values():
        default = _code(option.default) if option.type == BOOLEAN else option.default
        if option.type == LIST:
            default = _and(map(_code, option.default_value))
        if option.model_default:
            default += " (" + ", ".join(f"{_model_default(m, option):,} {m}" for m in MODALITIES) + ")"
        rows.append(
            (
                f"`{option.name}`",
                f"{_sentence(_option_expected(option, _code))}: {option.meaning}{_only_for(option)}.",
                f"`defaults.{option.name}`, else {default}",
            )
        )
    return _table(("column", "allowed values", "when empty"), rows)


def _key_value_markdown(key: MetadataKey) -> str:
    """A key's values for the docs: its choices, or its format with the examples in it as code."""
    if key.items is not None:
        if not key.items.one_of:
            return f"a list of {key.items.noun} objects (fields not documented by the vendor: the server judges them)"
        shapes = " or ".join(f'`{{"{alt.name}": ...}}` ({_examples_as_code(alt)})' for alt in key.items.one_of)
        text = f"a list of {key.items.noun}s, each exactly one of {shapes}"
    elif key.choices:
        text = ", ".join(_code(choice) for choice in key.choices)
    elif key.expected:
        text = _examples_as_code(key)
    else:
        text = "free text"
    return f"{text} ({key.note})" if key.note else text


def _examples_as_code(key: MetadataKey) -> str:
    """``a Cellosaurus id like `CVCL_0030```: the words (or quoted phrases) of ``expected``
    that are valid values, as code."""

    quoting = "'" in key.expected  # with quoted examples, only those are values

    def example(match: re.Match[str]) -> str:
        if quoting and match["quoted"] is None:
            return match[0]
        word = match["quoted"] if match["quoted"] is not None else match["word"]
        valid = key.pattern.fullmatch(word) if key.pattern is not None else key.numeric and word.isdigit()
        return _code(word) if valid else match[0]

    return re.sub(r"'(?P<quoted>[^']*)'|(?P<word>[^\s(),']+)", example, key.expected)


def readme_metadata_keys() -> list[str]:
    """config/README.md: every metadata key, its group and its values."""
    keys = sorted(METADATA_KEYS.values(), key=lambda key: METADATA_GROUPS.index(key.group))  # stable: API order within
    return _table(
        ("metadata key", "group", "value"), ((_code(key.name), key.group, _key_value_markdown(key)) for key in keys)
    )


def readme_gem2_metadata_keys() -> list[str]:
    """config/README.md: GEM-2's metadata keys, their groups and values."""
    keys = sorted(GEM2_METADATA_KEYS.values(), key=lambda key: METADATA_GROUPS.index(key.group))
    return _table(
        ("GEM-2 metadata key", "group", "value"),
        ((_code(key.name), key.group, _key_value_markdown(key)) for key in keys),
    )


def readme_default_keys() -> list[str]:
    """config/README.md, the ``defaults`` row: the keys it takes."""
    return [", ".join(_code(name) for name in ("modality", "mode", *ALL_OPTIONS))]


def readme_query_words() -> list[str]:
    """README.md: the words of a user-facing query."""
    only = "; ".join(f"{modality} takes only {_or(map(_code, modes))}" for modality, modes in _only_modes())
    modes = " | ".join(map(_code, SAMPLING_STRATEGIES)) + (f"; {only}" if only else "")
    return [
        f"`modality` ({' | '.join(map(_code, MODALITIES))}) and `mode` ({modes}), plus optional "
        f"{_and(map(_code, ALL_OPTIONS))}"
    ]


def readme_models() -> list[str]:
    """README.md: the model table."""
    rows = (
        (
            _code(spec.model_id),
            spec.family,
            spec.modality,
            spec.kind,
            ", ".join(map(_code, spec.modes)) or "none",
            ", ".join(map(_code, spec.input_keys)),
            f"{spec.default_total_count:,}",
        )
        for spec in MODELS
    )
    return _table(("model id", "family", "modality", "kind", "modes", "input keys", "default total_count"), rows)


def readme_gem2_operations() -> list[str]:
    """README.md: GEM-2's operations, what their items carry and what they return."""
    results = {
        "gem-2-expression": "`counts`, `metadata`, `latents`",
        "gem-2-metadata-prediction": "`predicted_metadata`, `classifier_probabilities`, `latents.encoded`; no counts",
        "gem-2-autoencode": "`counts`, `model_release_id`, `vae_run_id`",
    }
    modes = "; ".join(f"{modality}: {', '.join(map(_code, gem2_modes(modality)))}" for modality in MODALITIES)
    rows = (
        (
            _code(spec.name),
            spec.meaning,
            ", ".join(map(_code, spec.item_keys))
            + (f" (optional {_and(map(_code, spec.optional_item_keys))})" if spec.optional_item_keys else ""),
            f"`num_samples` each; `sampling_strategy` ({modes})" if spec.draws_samples else "one per item",
            results[spec.result_kind],
        )
        for spec in GEM2_OPERATION_SPECS
    )
    return _table(("operation", "what it does", "item keys", "outputs", "each output has"), rows)


def readme_gem2_models() -> list[str]:
    """README.md: the GEM-2 model ids and what each runs."""
    groups: dict[tuple, list] = {}
    for row in GEM2_MODEL_IDS.values():
        groups.setdefault((row.operation, row.modality, row.member is not None), []).append(row)
    lines = []
    for (operation, modality, members), rows in groups.items():
        ids = [row.model_id for row in rows if not row.ensemble]
        ensembles = any(row.ensemble for row in rows)
        cell = ", ".join(map(_code, ids)) + (" (each also with `-ensemble`)" if ensembles else "")
        if members:
            cell += " (ensemble members)"
        lines.append(
            (
                cell,
                _code(operation) if operation else "the body's `operation`",
                modality or "the body's `inputs.modality`",
            )
        )
    fields = f"top-level {_and(map(_code, GEM2_FIELDS))}; `options`: {_and(map(_code, OPTION_FIELDS))}"
    gem1 = f"{_and(map(_code, (f for f in GEM1_SHAPE_FIELDS if f not in GEM2_FIELDS)))} at the top level"
    return [
        *_table(("model id", "operation", "modality"), lines),
        "",
        f"Bodies: {fields}. A compatibility id also takes GEM-1's shape (`inputs` a list of items, "
        f"{gem1}). `{GEM2}` needs `operation` and `inputs.modality`; a compatibility id may leave them out.",
    ]


# --- the sections, and the files they live in ----------------------------------------------


@dataclass(frozen=True)
class Section:
    path: str
    name: str
    render: Callable[[], list[str]]
    #: ``block`` (whole lines between the markers) or ``inline`` (a span inside a line).
    kind: str = "block"


SECTIONS = (
    Section("workflow/schemas/conditions.schema.yaml", "conditions-columns", conditions_columns),
    Section("workflow/schemas/config.schema.yaml", "config-defaults", config_defaults),
    Section("workflow/schemas/config.schema.yaml", "config-modalities", config_modalities),
    Section("workflow/schemas/config.schema.yaml", "config-gene-order-files", config_gene_order_files),
    Section("config/README.md", "default-keys", readme_default_keys, "inline"),
    Section("config/README.md", "option-columns", readme_option_columns),
    Section("config/README.md", "metadata-keys", readme_metadata_keys),
    Section("config/README.md", "gem2-metadata-keys", readme_gem2_metadata_keys),
    Section("README.md", "query-words", readme_query_words, "inline"),
    Section("README.md", "models", readme_models),
    Section("README.md", "gem2-models", readme_gem2_models),
    Section("README.md", "gem2-operations", readme_gem2_operations),
)

_YAML_MARKERS = re.compile(
    r"^(?P<indent>[ ]*)# generated: (?P<name>[\w-]+)[^\n]*\n(?P<body>.*?)^(?P=indent)# end generated: (?P=name)[ ]*$",
    re.MULTILINE | re.DOTALL,
)
_MARKDOWN_MARKERS = re.compile(
    r"<!-- generated: (?P<name>[\w-]+)[^>]*-->(?P<body>.*?)<!-- end generated: (?P=name) -->", re.DOTALL
)
_ANY_MARKER = re.compile(r"(?:#|<!--) (?:end )?generated: (?P<name>[\w-]+)")


class StaleMarkers(Exception):
    """A file's markers do not match the sections this script writes."""


def render_file(path: str, text: str) -> str:
    """``text`` (the file at ``path``, relative to the repository) with its sections regenerated."""
    sections = {section.name: section for section in SECTIONS if section.path == path}
    found = sorted(set(_ANY_MARKER.findall(text)))
    if found != sorted(sections):
        raise StaleMarkers(f"{path}: markers for {found or 'nothing'}; this script writes {sorted(sections)}")
    yaml = path.endswith((".yaml", ".yml"))
    markers = _YAML_MARKERS if yaml else _MARKDOWN_MARKERS

    def replace(match: re.Match[str]) -> str:
        section = sections[match["name"]]
        lines = section.render()
        if yaml:
            body = "".join(f"{match['indent']}{line}\n" for line in lines)
        else:
            body = "\n" + "\n".join(lines) + "\n" if section.kind == "block" else "".join(lines)
        start, end = match.start("body") - match.start(), match.end("body") - match.start()
        return match[0][:start] + body + match[0][end:]

    result, count = markers.subn(replace, text)
    if count != len(sections):
        raise StaleMarkers(f"{path}: {count} well-formed marker pair(s) for {len(sections)} section(s)")
    return result


def generated_files(root: Path | None = None) -> dict[str, tuple[str, str]]:
    """``{path: (text on disk, text it should have)}`` for every file holding a section
    (under ``root``, default: this repository)."""
    root = root or ROOT
    files = {}
    for path in dict.fromkeys(section.path for section in SECTIONS):
        text = (root / path).read_text(encoding="utf-8")
        files[path] = (text, render_file(path, text))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    files = generated_files()
    stale = [path for path, (old, new) in files.items() if old != new]
    if args.check:
        for path in stale:
            print(f"stale: {path} (run {COMMAND})", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        with atomic_path(ROOT / path) as temporary:
            temporary.write_text(files[path][1], encoding="utf-8")
        print(f"wrote {path}")
    if not stale:
        print("every generated section is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
