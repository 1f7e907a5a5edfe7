"""The conditions table: parsing, defaults, and errors that name file, line and column."""

from __future__ import annotations

import json

import pytest

from synthbio_pipeline.pipeline.conditions import ConditionsError, read_conditions, write_query

HEADER = "condition\tnum_samples\ttissue_ontology_id\tsex\tmodality\tmode\tseed\tcell_type_ontology_id"


def table(tmp_path, text, name="conditions.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path, defaults=None):
    with pytest.raises(ConditionsError) as caught:
        read_conditions(path, defaults)
    return caught.value.problems


def test_rows_become_conditions_with_defaults_and_per_row_overrides(tmp_path):
    path = table(
        tmp_path,
        f"{HEADER}\n"
        "lung\t3\tUBERON:0002048\tmale\t\t\t5\t\n"
        "\n"
        "t_cells\t2\tUBERON:0002048\t\tsingle-cell\t\t\tCL:0000084\n",
    )
    lung, cells = read_conditions(path, {"seed": 1, "total_count": 1000, "modality": None})
    assert (lung.name, lung.row, lung.model_id, lung.mode) == ("lung", 2, "gem-1-bulk", "sample generation")
    assert lung.options == {"seed": 5, "total_count": 1000}
    assert lung.metadata == {"tissue_ontology_id": "UBERON:0002048", "sex": "male"}
    assert (cells.row, cells.model_id, cells.mode, cells.options["seed"]) == (4, "gem-1-sc", "mean estimation", 1)
    assert cells.wire_body() == {
        "sampling_strategy": "mean estimation",
        "inputs": [
            {
                "metadata": {"tissue_ontology_id": "UBERON:0002048", "cell_type_ontology_id": "CL:0000084"},
                "num_samples": 2,
            }
        ],
        "seed": 1,
        "total_count": 1000,
        "source": "synthbio-pipeline",
    }


def test_csv_by_name_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "conditions.csv"
    path.write_bytes("\ufeffcondition,num_samples,age_years\r\nold,2,71.5\r\n".encode())
    (old,) = read_conditions(path)
    assert old.metadata == {"age_years": 71.5}


def test_sampling_strategy_and_boolean_spellings(tmp_path):
    path = table(
        tmp_path,
        "condition\tnum_samples\tsampling_strategy\tdeterministic_latents\n"
        "a\t1\tmean estimation\tYes\nb\t1\tsample generation\t0\n",
    )
    a, b = read_conditions(path)
    assert (a.mode, a.options["deterministic_latents"]) == ("mean estimation", True)
    assert (b.mode, b.options["deterministic_latents"]) == ("sample generation", False)


def test_model_id_column_addresses_a_model_by_id(tmp_path):
    path = table(tmp_path, "condition\tnum_samples\tmodel_id\nx\t1\tgem-1-sc\n")
    (x,) = read_conditions(path)
    assert (x.modality, x.model_id, x.mode) == ("single-cell", "gem-1-sc", "mean estimation")


def test_a_rows_model_names_its_modality_over_the_config_default(tmp_path):
    """A gem-1-sc row under the shipped config (defaults: modality: bulk) is single-cell: its
    samples merge into the single-cell matrix, never into the bulk one."""
    path = table(tmp_path, "condition\tnum_samples\tmodel\nbulk_row\t1\t\nsc_row\t1\tgem-1-sc\n")
    rows = read_conditions(path, {"modality": "bulk"})
    assert [(c.name, c.modality, c.model_id, c.group) for c in rows] == [
        ("bulk_row", "bulk", "gem-1-bulk", "bulk"),
        ("sc_row", "single-cell", "gem-1-sc", "single-cell"),
    ]


@pytest.mark.parametrize(
    "model, modality, column, fragment",
    [
        ("gem-1-sc", "bulk", "modality", "gem-1-sc is for 'single-cell', the row says 'bulk'"),
        ("gem-1-bulk", "single-cell", "modality", "gem-1-bulk is for 'bulk', the row says 'single-cell'"),
        ("gem-1-blk", "", "model", "unknown model id 'gem-1-blk'; did you mean 'gem-1-bulk'?"),
        ("gem-1-bulk_predict-metadata", "", "model", "answers metadata, not samples"),
    ],
)
def test_a_model_the_table_cannot_run_or_of_the_other_modality_is_told_at_its_column(
    tmp_path, model, modality, column, fragment
):
    path = table(tmp_path, f"condition\tnum_samples\tmodel\tmodality\nx\t1\t{model}\t{modality}\n")
    (problem,) = problems(path)
    assert (problem.line, problem.column) == (2, column) and fragment in problem.message, problem


def test_a_table_over_its_byte_bound_is_refused_unread_with_readable_sizes(tmp_path):
    path = table(tmp_path, "condition\tnum_samples\n" + "".join(f"c{i}\t1\n" for i in range(3)) + "#" * 9000)
    with pytest.raises(ConditionsError) as caught:
        read_conditions(path, max_rows=1)
    assert "the file is 9.0 kB, more than a table of 1 row should take (8.2 kB at most)" in str(caught.value)


def test_write_query_writes_the_wire_body(tmp_path):
    (lung,) = read_conditions(table(tmp_path, "condition\tnum_samples\nlung\t2\n"))
    write_query(lung, tmp_path / "q" / "lung.json")
    assert json.loads((tmp_path / "q" / "lung.json").read_text()) == lung.wire_body()
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["lung.json"]


@pytest.mark.parametrize(
    "text, line, column, fragment",
    [
        ("condition\tnum_samples\na\t0\n", 2, "num_samples", "at least 1"),
        ("condition\tnum_samples\na\t\n", 2, "num_samples", "required"),
        ("condition\tnum_samples\na\t1e3\n", 2, "num_samples", "whole number"),
        ("condition\tnum_samples\na b\t1\n", 2, "condition", "not a valid id"),
        ("condition\tnum_samples\n.hidden\t1\n", 2, "condition", "not a valid id"),
        ("condition\tnum_samples\nlüng\t1\n", 2, "condition", "ASCII"),
        ("condition\tnum_samples\n\t1\n", 2, "condition", "empty"),
        ("lung\t3\nliver\t2\n", 1, "condition", "required column is missing"),
        ("condition\tnum_samples\tsex\na\t1\tmale\na\t2\tfemale\n", 3, "condition", "also on line 2"),
        ("condition\tnum_samples\tsex\na\t1\tMale\n", 2, "sex", "did you mean 'male'"),
        ("condition\tnum_samples\tmodality\na\t1\tsinglecell\n", 2, "modality", "did you mean 'single-cell'"),
        (
            "condition\tnum_samples\tmodality\tmode\na\t1\tsingle-cell\tsample generation\n",
            2,
            "mode",
            "not available for single-cell",
        ),
        ("condition\tnum_samples\tseed\na\t1\tabc\n", 2, "seed", "whole number"),
        ("condition\tnum_samples\ttotal_count\na\t1\t-5\n", 2, "total_count", "at least 1"),
        ("condition\tnum_samples\tdeterministic_latents\na\t1\tmaybe\n", 2, "deterministic_latents", "true or false"),
        ("condition\tnum_samples\tperturbation_ontology_id\na\t1\tTP53\n", 2, "perturbation_ontology_id", "Ensembl"),
        (
            "condition\tnum_samples\tcel_type_ontology_id\na\t1\tCL:0000084\n",
            1,
            "cel_type_ontology_id",
            "did you mean 'cell_type_ontology_id'",
        ),
        ("condition\tnum_samples\tsex\tsex\na\t1\tmale\tmale\n", 1, "sex", "twice"),
        ("condition\tnum_samples\tmode\tsampling_strategy\na\t1\t\t\n", 1, "sampling_strategy", "not both"),
        ("condition\tnum_samples\na\t1\textra\n", 2, None, "3 fields"),
        ("condition\tnum_sample\na\t1\n", 1, "num_samples", "did you mean"),
    ],
)
def test_each_bad_cell_is_reported_with_file_line_and_column(tmp_path, text, line, column, fragment):
    path = table(tmp_path, text)
    found = problems(path)
    match = [p for p in found if p.line == line and p.column == column]
    assert match, found
    if fragment:
        assert fragment in match[0].message
    assert str(path) in str(match[0])


def test_every_problem_of_the_table_is_reported_at_once(tmp_path):
    path = table(tmp_path, "condition\tnum_samples\tsex\na\t0\tM\nb\tten\tmale\nc\t1\tfemale\n")
    assert {(p.line, p.column) for p in problems(path)} == {(2, "num_samples"), (2, "sex"), (3, "num_samples")}


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"condition,num_samples\na,1\n", "looks comma-separated"),
        (b"condition\tnum_samples\n", "no conditions"),
        (b"\xff\xfecondition\n", "not UTF-8"),
        (b'condition\tnum_samples\n"a\t1\n', "malformed"),
    ],
)
def test_whole_file_problems(tmp_path, content, fragment):
    path = tmp_path / "conditions.tsv"
    path.write_bytes(content)
    assert fragment in str(problems(path)[0])


def test_a_missing_file_is_a_clear_error(tmp_path):
    assert "cannot read" in str(problems(tmp_path / "nope.tsv")[0])


def test_a_config_default_that_does_not_fit_a_row_names_both(tmp_path):
    path = table(tmp_path, "condition\tnum_samples\tmodality\na\t1\tsingle-cell\n")
    (problem,) = problems(path, {"mode": "sample generation"})
    assert problem.column == "mode" and "config defaults.mode" in problem.message


def test_absurd_sample_counts_are_refused(tmp_path):
    (problem,) = problems(table(tmp_path, "condition\tnum_samples\na\t1000000000\n"))
    assert problem.column == "num_samples" and "split it" in problem.message
