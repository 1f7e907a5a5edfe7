"""The one vocabulary: its generated restatements are current and agree with it, and the
emulator refuses exactly what the client refuses."""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import requests
import yaml
from conftest import EMULATOR_TOKEN

from synthbio_pipeline.client.http import SynthesizeClient
from synthbio_pipeline.errors import Problem, ValidationError
from synthbio_pipeline.pipeline.conditions import KNOWN_COLUMNS, OPTION_COLUMNS, REFERENCE_COLUMNS, REQUIRED_COLUMNS
from synthbio_pipeline.vocabulary.families import OUTPUT_GROUPS
from synthbio_pipeline.vocabulary.metadata import (
    METADATA_GROUPS,
    METADATA_KEYS,
    PERTURBATIONAL,
    VOCABULARIES,
    metadata_value_problem,
)
from synthbio_pipeline.vocabulary.models import (
    MODALITIES,
    MODALITY_MODELS,
    MODELS,
    MODES,
    SAMPLING_STRATEGIES,
    get_model,
)
from synthbio_pipeline.vocabulary.options import (
    ALL_OPTIONS,
    BOOLEAN,
    FALSE_WORDS,
    LIST,
    MODEL_OPTIONS,
    QUERY_OPTIONS,
    TRUE_WORDS,
)
from synthbio_pipeline.vocabulary.query import example_wire_query, metadata_keys_of, query_problems, wire_problems

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_vocabulary", ROOT / "scripts/generate_vocabulary.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_vocabulary", module)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


def schema(name: str) -> dict:
    return yaml.safe_load((ROOT / "workflow/schemas" / name).read_text(encoding="utf-8"))


# --- the generated files ---------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted({section.path for section in GENERATOR.SECTIONS}))
def test_generated_sections_are_current(path):
    on_disk, expected = GENERATOR.generated_files(ROOT)[path]
    assert on_disk == expected, f"{path} is stale: run python scripts/generate_vocabulary.py"


def test_generation_is_deterministic_and_idempotent():
    first = {path: new for path, (_, new) in GENERATOR.generated_files(ROOT).items()}
    for path, text in first.items():
        assert GENERATOR.render_file(path, text) == text
    assert {path: new for path, (_, new) in GENERATOR.generated_files(ROOT).items()} == first


def test_check_mode_finds_a_stale_section_and_names_it(tmp_path, monkeypatch, capsys):
    for path in {section.path for section in GENERATOR.SECTIONS}:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((ROOT / path).read_text(encoding="utf-8"), encoding="utf-8")
    readme = tmp_path / "config/README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("| `sex` | biological |", "| `sex` | technical |"))
    monkeypatch.setattr(GENERATOR, "ROOT", tmp_path)
    assert GENERATOR.main(["--check"]) == 1
    assert "stale: config/README.md" in capsys.readouterr().err
    assert GENERATOR.main([]) == 0  # rewrites it
    assert GENERATOR.main(["--check"]) == 0
    assert readme.read_text(encoding="utf-8") == (ROOT / "config/README.md").read_text(encoding="utf-8")


def test_hand_written_text_outside_the_markers_is_kept():
    text = (ROOT / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8")
    edited = text.replace("Seconds between two status requests", "Seconds between two polls")
    assert GENERATOR.render_file("workflow/schemas/config.schema.yaml", edited) == edited


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace("# end generated: config-defaults", ""),
        lambda text: text.replace("# generated: config-modalities", "# generated: config-modality"),
    ],
    ids=["end marker missing", "unknown section"],
)
def test_broken_markers_are_refused(change):
    text = (ROOT / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8")
    with pytest.raises(GENERATOR.StaleMarkers):
        GENERATOR.render_file("workflow/schemas/config.schema.yaml", change(text))


# --- the schemas agree with the Python vocabulary ----------------------------------------------


def test_config_schema_enums_are_the_vocabulary():
    properties = schema("config.schema.yaml")["properties"]
    defaults = properties["defaults"]["properties"]
    assert list(defaults) == ["modality", "mode", *ALL_OPTIONS]
    assert defaults["modality"]["enum"] == list(MODALITIES)
    assert defaults["mode"]["enum"] == list(SAMPLING_STRATEGIES)
    for name, option in ALL_OPTIONS.items():
        assert defaults[name]["type"] == option.type
        assert defaults[name].get("minimum") == option.minimum
        if option.type == LIST:
            assert defaults[name]["items"]["enum"] == list(option.choices) and defaults[name]["uniqueItems"]
    assert properties["outputs"]["properties"]["h5ad"]["items"]["enum"] == list(MODALITIES)
    # gene_order_files: one key per output group (GEM-1's and GEM-2's), nothing else.
    gene_orders = properties["gene_order_files"]
    assert list(gene_orders["properties"]) == list(OUTPUT_GROUPS) and gene_orders["additionalProperties"] is False


def test_conditions_schema_columns_are_the_vocabulary():
    properties = schema("conditions.schema.yaml")["properties"]
    assert set(properties) == set(KNOWN_COLUMNS)  # the table's columns, GEM-2's included
    gem1 = [*REQUIRED_COLUMNS, *OPTION_COLUMNS, *METADATA_KEYS, *REFERENCE_COLUMNS]
    assert [name for name in properties if name in gem1] == gem1
    for key in METADATA_KEYS.values():
        assert properties[key.name]["description"] == f"API metadata key ({key.group}): {key.describe()}"


def cell_accepted(pattern: str | None, cell: str) -> bool:
    return pattern is None or re.search(pattern, cell) is not None  # jsonschema's `pattern`


def probes(key) -> list[str]:
    """Values to try on a key: its choices and examples, and near misses of them."""
    words = list(key.choices) + re.findall(r"[^\s(),']+|'[^']*'", key.expected)
    words = [word.strip("'") for word in words]
    found = set(words)
    for word in words:
        found |= {word.upper(), word.lower(), word + "x", "x" + word, word[:-1], word.replace(":", "_")}
    return sorted(found | {"", "lots", "10", "10 um", "CL:123", "UBERON:00011550"})


@pytest.mark.parametrize("key", list(METADATA_KEYS.values()), ids=lambda key: key.name)
def test_each_metadata_cell_pattern_accepts_what_the_library_accepts(key):
    """The schema refuses a cell exactly when the library refuses its value (spaces around allowed)."""
    pattern = schema("conditions.schema.yaml")["properties"][key.name].get("pattern")
    if key.numeric or not (key.choices or key.pattern):
        assert pattern is None  # numbers and free text are the library's to check
        return
    for value in probes(key):
        if not value.strip():
            continue
        library = value.strip() == value and metadata_value_problem(key, value) is None
        assert cell_accepted(pattern, value) == library, (key.name, value)
        assert cell_accepted(pattern, f"  {value}\t") == library, (key.name, value)


def test_model_and_option_cell_patterns_follow_the_vocabulary():
    properties = schema("conditions.schema.yaml")["properties"]
    for column in ("mode", "sampling_strategy"):
        for mode in SAMPLING_STRATEGIES:
            assert cell_accepted(properties[column]["pattern"], f" {mode} ")
        assert not cell_accepted(properties[column]["pattern"], "estimation")
    for modality in MODALITIES:
        assert cell_accepted(properties["modality"]["pattern"], modality)
    assert not cell_accepted(properties["modality"]["pattern"], "spatial")
    for model in MODELS:
        assert cell_accepted(properties["model_id"]["pattern"], model.model_id)
    for name, option in ALL_OPTIONS.items():
        pattern = properties[name]["pattern"]
        if option.type == BOOLEAN:
            assert all(cell_accepted(pattern, word.upper()) for word in TRUE_WORDS + FALSE_WORDS)
            assert not cell_accepted(pattern, "maybe")
        elif option.type == LIST:
            assert cell_accepted(pattern, " ; ".join(option.choices)) and cell_accepted(pattern, option.choices[0])
            assert not cell_accepted(pattern, "") and not cell_accepted(pattern, f"{option.choices[0]};")
            assert not cell_accepted(pattern, f"{option.choices[0]},{option.choices[1]}")
        else:
            assert cell_accepted(pattern, "12") and not cell_accepted(pattern, "1.5")
            assert cell_accepted(pattern, "0") == (option.minimum is None or option.minimum <= 0)


# --- the docs agree with it ------------------------------------------------------------------


def markdown_table(text: str, header: str) -> list[list[str]]:
    lines = text[text.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_config_readme_lists_every_key_and_option_column():
    text = (ROOT / "config/README.md").read_text(encoding="utf-8")
    keys = markdown_table(text, "| metadata key | group | value |")
    assert [(row[0], row[1]) for row in keys] == [(f"`{k.name}`", k.group) for k in METADATA_KEYS.values()]
    assert [row[1] for row in keys] == sorted((row[1] for row in keys), key=METADATA_GROUPS.index)
    columns = markdown_table(text, "| column | allowed values | when empty |")
    # `model` (model_id is its synonym) and GEM-2's `operation` stand where model_id stands.
    named = [c for column in OPTION_COLUMNS for c in (("model", "operation") if column == "model_id" else (column,))]
    assert [row[0] for row in columns] == [f"`{column}`" for column in named]


def test_readme_lists_every_model():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = markdown_table(text, "| model id | family |")
    assert [row[0] for row in rows] == [f"`{spec.model_id}`" for spec in MODELS]


def test_the_docs_list_every_gem2_id_operation_and_metadata_key():
    from synthbio_pipeline.vocabulary.families import GEM2_MODEL_IDS, GEM2_OPERATION_SPECS
    from synthbio_pipeline.vocabulary.metadata import GEM2_METADATA_KEYS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ids = " ".join(row[0] for row in markdown_table(readme, "| model id | operation | modality |"))
    named = set(re.findall(r"`([^`]+)`", ids))
    assert {model_id.removesuffix("-ensemble") for model_id in GEM2_MODEL_IDS} == named - {"-ensemble"}
    operations = markdown_table(readme, "| operation | what it does |")
    assert [row[0] for row in operations] == [f"`{spec.name}`" for spec in GEM2_OPERATION_SPECS]
    keys = markdown_table((ROOT / "config/README.md").read_text(encoding="utf-8"), "| GEM-2 metadata key |")
    assert sorted(row[0] for row in keys) == sorted(f"`{name}`" for name in GEM2_METADATA_KEYS)


# --- the table itself --------------------------------------------------------------------------


def test_the_model_table_is_consistent():
    assert len({spec.model_id for spec in MODELS}) == len(MODELS)
    for modality, model_id in MODALITY_MODELS.items():
        assert get_model(model_id).modality == modality and get_model(model_id).kind == "baseline"
    for spec in MODELS:
        assert set(spec.modes) <= set(MODES)
        assert set(spec.metadata_groups) <= set(METADATA_GROUPS)
        assert spec.vocabulary is None or spec.vocabulary in VOCABULARIES
        assert ("metadata" in spec.input_keys) == bool(spec.metadata_groups)
        assert set(spec.options) <= set(MODEL_OPTIONS)
        assert not set(spec.options) & set(QUERY_OPTIONS)
    assert metadata_keys_of(get_model("gem-1-bulk")) == METADATA_KEYS
    perturbational = {name for name, key in METADATA_KEYS.items() if key.group == PERTURBATIONAL}
    for spec in MODELS:
        if spec.kind == "reference-conditioning":
            assert spec.takes_counts and set(metadata_keys_of(spec)) == perturbational
            assert spec.options == ("conditioning", "fixed_total_count")
        if spec.kind == "predict-metadata":
            assert spec.input_keys == ("counts",) and not spec.options


def test_model_options_check_their_values():
    conditioning, fixed = MODEL_OPTIONS["conditioning"], MODEL_OPTIONS["fixed_total_count"]
    assert conditioning.problem(["biological", "technical"]) is None and conditioning.problem([]) is None
    assert conditioning.wire_default() == ["biological", "technical"] and fixed.wire_default() is False
    assert "did you mean 'technical'" in conditioning.problem(["technicl"])
    assert "twice" in conditioning.problem(["technical", "technical"])
    assert conditioning.problem("biological").startswith("must be a list of distinct values")
    assert fixed.problem(1) == "must be true or false, not 1"


def test_outside_the_vocabulary_no_code_spells_a_modality_or_a_mode():
    """Modalities and modes are named through the vocabulary's constants, never as literals."""
    words = {*MODALITIES, *SAMPLING_STRATEGIES}
    files = [
        path
        for path in sorted((ROOT / "src/synthbio_pipeline").rglob("*.py"))
        if "vocabulary" not in path.relative_to(ROOT / "src/synthbio_pipeline").parts
    ]
    found = []
    for path in [*files, *sorted((ROOT / "workflow/scripts").glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in words and id(node) not in docstrings
        ]
    for path in sorted((ROOT / "workflow").rglob("*.smk")) + [ROOT / "workflow/Snakefile"]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}" for word in words if f'"{word}"' in line]
    assert found == []


# --- the emulator refuses what the client refuses ----------------------------------------------


def bad_bodies():
    """(model id, wire body, paths refused) for a few bad bodies."""
    bulk, sc = example_wire_query("gem-1-bulk"), example_wire_query("gem-1-sc")
    # Counts of the test emulator's gene length (200), so the emulator has no more to say than the client.
    reference = example_wire_query("gem-1-bulk_reference-conditioning", lambda metadata: [5] * 200)
    annotate = example_wire_query("gem-1-sc_predict-metadata", lambda metadata: [5] * 200)

    def changed(body, change):
        body = copy.deepcopy(body)
        change(body)
        return body

    return [
        ("gem-1-sc", changed(sc, lambda b: b.update(sampling_strategy="sample generation")), ["sampling_strategy"]),
        ("gem-1-bulk", changed(bulk, lambda b: b.pop("sampling_strategy")), ["sampling_strategy"]),
        ("gem-1-bulk", changed(bulk, lambda b: b.update(sampling_strategy="best guess")), ["sampling_strategy"]),
        (
            "gem-1-bulk",
            changed(bulk, lambda b: b.update(seed="x", total_count=0, deterministic_latents="yes")),
            ["seed", "total_count", "deterministic_latents"],
        ),
        ("gem-1-bulk", changed(bulk, lambda b: b.update(inputs=[])), ["inputs"]),
        (
            "gem-1-bulk",
            changed(bulk, lambda b: b["inputs"][0]["metadata"].update(sexx="male", tissue_ontology_id="UBERON:1")),
            ["inputs[0].metadata.tissue_ontology_id", "inputs[0].metadata.sexx"],
        ),
        (
            "gem-1-sc",
            changed(sc, lambda b: b["inputs"][1].update(num_samples=0, metadata=["sex"])),
            ["inputs[1].num_samples", "inputs[1].metadata"],
        ),
        ("gem-1-bulk", changed(bulk, lambda b: b["inputs"].append("lung")), ["inputs[2]"]),
        ("gem-1-bulk", changed(bulk, lambda b: b["inputs"][0].pop("metadata")), ["inputs[0].metadata"]),
        (
            "gem-1-bulk_reference-conditioning",
            changed(reference, lambda b: b["inputs"][1]["metadata"].update(sex="male")),
            ["inputs[1].metadata.sex"],
        ),
        (
            "gem-1-bulk_reference-conditioning",
            changed(reference, lambda b: b.update(conditioning="biological", fixed_total_count=None)),
            ["conditioning"],
        ),
        (
            "gem-1-sc_predict-metadata",
            changed(annotate, lambda b: b["inputs"][0]["counts"].__setitem__(3, -1)),
            ["inputs[0].counts"],
        ),
        (
            "gem-1-sc_predict-metadata",
            changed(annotate, lambda b: b["inputs"][1].update(num_samples=2)),
            ["inputs[1].num_samples"],
        ),
    ]


BAD_BODIES = bad_bodies()


@pytest.mark.parametrize("model_id, body, paths", BAD_BODIES, ids=[str(p) for _, _, p in BAD_BODIES])
def test_the_emulator_refuses_a_bad_body_with_the_clients_own_problems(emulator, model_id, body, paths):
    """A vendor-style query (model id, wire names) gets the same problems from the client's
    checks as its body gets from the emulator's 422: one implementation, two sides."""
    client_side = query_problems({"model_id": model_id, **body})
    assert sorted(problem.path for problem in client_side) == sorted(paths)
    assert wire_problems(model_id, body) == client_side
    with SynthesizeClient(emulator.url, model_id=model_id) as client, pytest.raises(ValidationError) as caught:
        client.submit(model_id, body)
    assert caught.value.problems == client_side
    assert emulator.stats()["submissions"] == {}


def test_a_body_that_is_not_an_object_gets_the_same_problem_on_both_sides(emulator):
    answer = requests.post(
        f"{emulator.url}/api/models/gem-1-bulk/predict",
        json=["inputs"],
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert [Problem(error["path"], error["message"])] == query_problems(["inputs"])


def test_a_query_in_the_seeds_words_reports_the_mode_under_its_own_name():
    query = {"modality": "single-cell", "mode": "sample generation", "inputs": [{"metadata": {}, "num_samples": 1}]}
    (problem,) = query_problems(query)
    assert problem.path == "mode" and "not available for single-cell" in problem.message
    query["sampling_strategy"] = query.pop("mode")
    assert [p.path for p in query_problems(query)] == ["sampling_strategy"]
