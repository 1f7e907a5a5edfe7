"""Round trip and MA plots (issue 13): numbers on hand-made files, figures that open."""

from __future__ import annotations

import html
import json
import tracemalloc
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("matplotlib")  # the workflow extra; scripts/setup.sh installs it

from synthbio_pipeline.formats.parquet import ROW_GROUP_GENES, SCHEMA_KEY
from synthbio_pipeline.pipeline import report_reference
from synthbio_pipeline.pipeline.report import EMULATOR_NOTE, ReportError
from synthbio_pipeline.pipeline.report_reference import (
    canonical_value,
    compute_reference_comparison,
    compute_round_trip,
    describe_perturbation,
    list_value,
    listed_requests,
    perturbed_gene,
    plot_ma,
    plot_round_trip,
    requested_values,
    write_reference_report,
    write_round_trip,
    write_top_changed_genes,
)

LUNG, BRAIN, LIVER = "UBERON:0002048", "UBERON:0000955", "UBERON:0002107"
TP53 = "ENSG00000141510"


# --- fixture files -----------------------------------------------------------------------


def label(values="counts", backend="emulator"):
    return {SCHEMA_KEY: json.dumps({"values": values, "backend": [backend]}).encode()}


def write_metadata(path, rows):
    frame = pd.DataFrame(rows)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **label()}), path)
    return path


def write_predictions(tmp_path, tops, probabilities):
    """tops: {sample: {field: value}}; probabilities: [(sample, field, value, p), ...]."""
    predicted = tmp_path / "predicted_metadata.parquet"
    pd.DataFrame([{"sample_id": s, **fields} for s, fields in tops.items()]).to_parquet(predicted)
    probs = tmp_path / "classifier_probs.parquet"
    frame = pd.DataFrame(probabilities, columns=["sample_id", "field", "value", "probability"])
    # Small row groups: the reader must stream across them.
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), probs, row_group_size=3)
    return predicted, probs


def hand_made(tmp_path):
    """Condition a (4 samples) asks lung, female, a disease; b (2 samples) brain, male."""
    rows = [
        {"sample_id": f"a_{i}", "condition": "a", "tissue_ontology_id": LUNG, "sex": "female"} for i in (1, 2, 3, 4)
    ]
    for row in rows:
        row["disease_ontology_id"] = "MONDO:0005015"
    rows += [{"sample_id": f"b_{i}", "condition": "b", "tissue_ontology_id": BRAIN, "sex": "male"} for i in (1, 2)]
    metadata = write_metadata(tmp_path / "metadata.parquet", rows)
    tops = {
        "a_1": {"tissue_ontology_id": LUNG, "sex": "female"},
        "a_2": {"tissue_ontology_id": LUNG, "sex": "female"},
        "a_3": {"tissue_ontology_id": LUNG, "sex": "male"},
        "a_4": {"tissue_ontology_id": BRAIN, "sex": "female"},
        "b_1": {"tissue_ontology_id": BRAIN, "sex": "male"},
        "b_2": {"tissue_ontology_id": LIVER, "sex": "male"},
    }
    probabilities = [
        ("a_1", "tissue_ontology_id", LUNG, 0.9),
        ("a_1", "tissue_ontology_id", BRAIN, 0.1),
        ("a_2", "tissue_ontology_id", LUNG, 0.8),
        ("a_2", "tissue_ontology_id", BRAIN, 0.2),
        ("a_3", "tissue_ontology_id", LUNG, 0.6),
        ("a_3", "tissue_ontology_id", LIVER, 0.4),
        # a_4: lung left out of its probabilities: it counts as 0.
        ("a_4", "tissue_ontology_id", BRAIN, 0.7),
        ("a_4", "tissue_ontology_id", LIVER, 0.3),
        ("b_1", "tissue_ontology_id", BRAIN, 0.5),
        ("b_1", "tissue_ontology_id", LUNG, 0.5),
        ("b_2", "tissue_ontology_id", LIVER, 0.6),
        ("b_2", "tissue_ontology_id", BRAIN, 0.4),
    ]
    for sample, p in zip(["a_1", "a_2", "a_3", "a_4", "b_1", "b_2"], [0.9, 0.8, 0.3, 0.7, 0.95, 0.85]):
        requested = "female" if sample.startswith("a") else "male"
        other = "male" if requested == "female" else "female"
        probabilities += [(sample, "sex", requested, p), (sample, "sex", other, round(1 - p, 10))]
    return metadata, *write_predictions(tmp_path, tops, probabilities)


def row_of(table, condition, field):
    rows = table[(table["condition"] == condition) & (table["field"] == field)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# --- round trip --------------------------------------------------------------------------


def test_round_trip_numbers_on_a_hand_made_case(tmp_path):
    rt = compute_round_trip(*hand_made(tmp_path))
    table = rt.table
    tissue_a = row_of(table, "a", "tissue_ontology_id")
    assert tissue_a["requested"] == LUNG and tissue_a["samples"] == 4 and tissue_a["predicted"] == 4
    assert tissue_a["top_match_share"] == pytest.approx(3 / 4)
    assert tissue_a["mean_probability"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.0) / 4)
    assert tissue_a["most_predicted"] == LUNG and tissue_a["requested_seen"]
    sex_a = row_of(table, "a", "sex")
    assert sex_a["top_match_share"] == pytest.approx(3 / 4)
    assert sex_a["mean_probability"] == pytest.approx((0.9 + 0.8 + 0.3 + 0.7) / 4)
    tissue_b = row_of(table, "b", "tissue_ontology_id")
    assert tissue_b["top_match_share"] == pytest.approx(1 / 2)
    assert tissue_b["mean_probability"] == pytest.approx((0.5 + 0.4) / 2)
    assert row_of(table, "b", "sex")["top_match_share"] == 1.0
    # The disease was asked by a only, and nothing predicts it: not compared, but said.
    assert set(table["field"]) == {"tissue_ontology_id", "sex"}
    assert rt.not_predicted == {"disease_ontology_id": ["a"]}
    assert rt.fields == ["sex", "tissue_ontology_id"]  # the API's key order
    assert rt.conditions == ["a", "b"] and rt.backend == "emulator"


def test_round_trip_reads_lower_when_samples_are_swapped(tmp_path):
    """A predictor that recovers the request exactly, then the same answers with the two
    conditions' samples swapped."""
    conditions = {"lung": LUNG, "brain": BRAIN, "liver": LIVER}
    rows = [
        {"sample_id": f"{c}_{i}", "condition": c, "tissue_ontology_id": t}
        for c, t in conditions.items()
        for i in (1, 2, 3)
    ]
    metadata = write_metadata(tmp_path / "metadata.parquet", rows)

    def predictions(truth, folder):
        folder.mkdir()
        tops = {s: {"tissue_ontology_id": t} for s, t in truth.items()}
        probabilities = [
            (s, "tissue_ontology_id", v, 0.8 if v == t else 0.1) for s, t in truth.items() for v in conditions.values()
        ]
        return write_predictions(folder, tops, probabilities)

    truth = {row["sample_id"]: row["tissue_ontology_id"] for row in rows}
    faithful = compute_round_trip(metadata, *predictions(truth, tmp_path / "faithful")).table
    assert list(faithful["top_match_share"]) == [1.0, 1.0, 1.0]
    assert list(faithful["mean_probability"]) == pytest.approx([0.8, 0.8, 0.8])
    swapped_truth = {s: (BRAIN if t == LUNG else LUNG if t == BRAIN else t) for s, t in truth.items()}
    swapped = compute_round_trip(metadata, *predictions(swapped_truth, tmp_path / "swapped")).table
    assert list(swapped["top_match_share"]) == [0.0, 0.0, 1.0]  # lung and brain swapped; liver kept
    assert list(swapped["mean_probability"]) == pytest.approx([0.1, 0.1, 0.8])


def test_round_trip_compares_text_exactly_ids_are_case_sensitive_and_unseen_values_flagged(tmp_path):
    rows = [
        {"sample_id": "ids_1", "condition": "ids", "tissue_ontology_id": LUNG, "age_years": "65"},
        {"sample_id": "names_1", "condition": "names", "tissue_ontology_id": "lung", "age_years": "65.0"},
        {"sample_id": "lower_1", "condition": "lower", "tissue_ontology_id": LUNG.lower()},
    ]
    metadata = write_metadata(tmp_path / "metadata.parquet", rows)
    tops = {s: {"tissue_ontology_id": LUNG, "age_years": 65.0} for s in ("ids_1", "names_1", "lower_1")}
    probabilities = [(s, "tissue_ontology_id", LUNG, 1.0) for s in tops]
    probabilities += [(s, "age_years", "65", 0.7) for s in tops] + [(s, "age_years", "70", 0.3) for s in tops]
    rt = compute_round_trip(metadata, *write_predictions(tmp_path, tops, probabilities))
    assert row_of(rt.table, "ids", "tissue_ontology_id")["top_match_share"] == 1.0
    for condition in ("names", "lower"):  # a name is not an id; ids are case-sensitive
        row = row_of(rt.table, condition, "tissue_ontology_id")
        assert row["top_match_share"] == 0.0 and row["mean_probability"] == 0.0
        assert not row["requested_seen"]
    # 65, 65.0 and the float 65.0 are one value.
    for condition in ("ids", "names"):
        row = row_of(rt.table, condition, "age_years")
        assert row["top_match_share"] == 1.0 and row["mean_probability"] == pytest.approx(0.7)
    assert "age_years" not in set(rt.table[rt.table["condition"] == "lower"]["field"])


def test_requests_come_from_the_table_or_the_file_and_reference_rows_ask_perturbation_only(tmp_path):
    rows = [
        {"sample_id": "base_1", "condition": "base", "sex": "male", "perturbation_type": None, "reference": None},
        {"sample_id": "base_2", "condition": "base", "sex": "male", "perturbation_type": None, "reference": None},
        # Inferred from the reference, returned per sample: not a request.
        {"sample_id": "ko_1", "condition": "ko", "sex": "female", "perturbation_type": "crispr", "reference": "r.tsv"},
        {"sample_id": "ko_2", "condition": "ko", "sex": "female", "perturbation_type": "crispr", "reference": "r.tsv"},
        # Values that differ between samples are the service's answers, not a request.
        {"sample_id": "mixed_1", "condition": "mixed", "sex": "male", "perturbation_type": None, "reference": None},
        {"sample_id": "mixed_2", "condition": "mixed", "sex": "female", "perturbation_type": None, "reference": None},
    ]
    metadata = pd.DataFrame(rows)
    assert requested_values(metadata) == {"base": {"sex": "male"}, "ko": {"perturbation_type": "crispr"}, "mixed": {}}
    requests = {"base": {"sex": "female", "age_years": 40.0}, "ko": {"perturbation_type": "crispr"}}
    assert requested_values(metadata, requests) == {
        "base": {"sex": "female", "age_years": "40"},
        "ko": {"perturbation_type": "crispr"},
        "mixed": {},
    }
    assert canonical_value(" 6.5e1 ") == "65" and canonical_value("") is None and canonical_value(0.25) == "0.25"


def test_round_trip_refuses_files_of_another_run_and_bad_probabilities(tmp_path):
    metadata, predicted, probs = hand_made(tmp_path)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    other, _ = write_predictions(stranger, {"z_1": {"sex": "male"}}, [("z_1", "sex", "male", 1.0)])
    with pytest.raises(ReportError, match=r"predicts 1 samples that .*metadata.parquet does not list.*'z_1'"):
        compute_round_trip(metadata, other, probs)
    bad = tmp_path / "bad"
    bad.mkdir()
    _, bad_probs = write_predictions(
        bad, {"a_1": {"sex": "male"}}, [("a_1", "sex", "male", 0.5)] * 4 + [("a_1", "sex", "x", 1.5)]
    )
    with pytest.raises(ReportError, match=r"row 5: probability 1.5 for sample 'a_1', field 'sex'"):
        compute_round_trip(metadata, predicted, bad_probs)


def round_trip_files(tmp_path, n_conditions, per_condition=3, seed=0):
    """n conditions asking tissue and sex; a predictor right about 70% of the time."""
    rng = np.random.default_rng(seed)
    tissues = [LUNG, BRAIN, LIVER]
    rows, tops, probabilities = [], {}, []
    for c in range(n_conditions):
        name = f"condition_{c:03d}_with_a_rather_long_name"
        tissue, sex = tissues[c % 3], ("male", "female")[c % 2]
        for i in range(per_condition):
            sample = f"{name}_{i + 1}"
            rows.append({"sample_id": sample, "condition": name, "tissue_ontology_id": tissue, "sex": sex})
            if c % 7 == 0:
                rows[-1]["cell_line_ontology_id"] = "CVCL_0030"  # requested by some conditions only
            right = rng.random() < 0.7
            top_tissue = tissue if right else tissues[(c + 1) % 3]
            tops[sample] = {"tissue_ontology_id": top_tissue, "sex": sex, "cell_line_ontology_id": "CVCL_0030"}
            probabilities += [(sample, "tissue_ontology_id", t, 0.6 if t == top_tissue else 0.2) for t in tissues]
            probabilities += [(sample, "sex", sex, 0.9), (sample, "sex", "x", 0.1)]
            probabilities += [(sample, "cell_line_ontology_id", "CVCL_0030", 1.0)]
    folder = tmp_path / f"rt{n_conditions}"
    folder.mkdir()
    metadata = write_metadata(folder / "metadata.parquet", rows)
    return metadata, *write_predictions(folder, tops, probabilities)


def svg_text(path):
    root = ET.parse(path).getroot()
    return " ".join(t for t in root.itertext())


@pytest.mark.parametrize("n", [1, 5, 200])
def test_round_trip_outputs_at_1_5_and_200_conditions(tmp_path, n):
    files = round_trip_files(tmp_path, n)
    out = tmp_path / "out"
    rt = write_round_trip(
        *files, table=out / "round_trip.tsv", html=out / "round_trip.html", figure=out / "round_trip.svg"
    )
    assert len(rt.conditions) == n
    table = pd.read_csv(out / "round_trip.tsv", sep="\t")
    assert len(table) == 2 * n + len(range(0, n, 7))
    assert table["top_match_share"].between(0, 1).all()
    html = (out / "round_trip.html").read_text()
    assert "Round trip" in html and "Emulator data" in html and html.count("<tr>") == len(table) + 1
    text = svg_text(out / "round_trip.svg")
    assert EMULATOR_NOTE in text and "cell_line_ontology_id" in text
    assert ("all conditions" in text) == (n > 1)  # the pooled row, for several conditions
    assert (out / "round_trip.svg").stat().st_size < 600_000
    named = "condition_000_with_a_rather_l" in text
    assert named == (n <= 60)
    if n == 200:
        assert "200 conditions, in table order (names in round_trip.tsv)" in text
    if n == 5:  # annotated cells: the 5 conditions' sex shares are 100%
        assert text.count("100%") >= 5
    figure = plot_round_trip(rt, out / "round_trip.png")
    assert figure.stat().st_size > 5_000


def test_round_trip_figure_says_when_there_is_nothing_to_compare(tmp_path):
    rows = [{"sample_id": "ko_1", "condition": "ko", "perturbation_type": "crispr", "reference": "r.tsv"}]
    metadata = write_metadata(tmp_path / "metadata.parquet", rows)
    files = write_predictions(tmp_path, {"ko_1": {"sex": "male"}}, [("ko_1", "sex", "male", 1.0)])
    rt = write_round_trip(metadata, *files, table=tmp_path / "rt.tsv", figure=tmp_path / "rt.svg")
    assert rt.table.empty and list(pd.read_csv(tmp_path / "rt.tsv", sep="\t").columns)[:3] == [
        "condition",
        "field",
        "requested",
    ]
    text = svg_text(tmp_path / "rt.svg")
    assert "Nothing to compare" in text and "perturbation_type" in text


# --- MA plots ----------------------------------------------------------------------------


def genes(n):
    ids = [f"ENSG{i:011d}" for i in range(1, n + 1)]
    ids[7] = TP53
    return ids


def write_expression(path, gene_ids, columns, *, values="counts", row_group=ROW_GROUP_GENES):
    data = {"gene_id": pa.array(gene_ids, pa.large_string())}
    for name, column in columns.items():
        data[name] = pa.array(column, pa.float64() if values == "log1p_cpm" else pa.int32())
    table = pa.table(data).replace_schema_metadata(label(values))
    pq.write_table(table, path, row_group_size=row_group)
    return path


def ma_case(tmp_path, *, values="counts", n_genes=ROW_GROUP_GENES * 2 + 100):
    """ko: TP53 (a CRISPR target) at a quarter of the reference; drug: a compound, gene 3 up
    eightfold; base: a baseline row (no reference), left out. Every other gene keeps the
    reference's proportions."""
    ids = genes(n_genes)
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 400, n_genes)
    reference[7] = 40_000
    reference[20:40] = 0  # never expressed
    ko_samples = [reference * 2, reference * 3]
    for sample in ko_samples:
        sample[7] //= 4
    drug = reference.copy()
    drug[3] = reference[3] * 8 + 8
    columns = {"ko_1": ko_samples[0], "ko_2": ko_samples[1], "drug_1": drug, "base_1": rng.integers(0, 50, n_genes)}
    if values == "log1p_cpm":
        columns = {k: np.log1p(v / v.sum() * 1e6) for k, v in columns.items()}
    folder = tmp_path / values
    folder.mkdir(exist_ok=True)
    expression = write_expression(folder / "expression.parquet", ids, columns, values=values)
    rows = [
        {"sample_id": "ko_1", "condition": "ko", "reference": "ref.tsv", "reference_sample": "S1",
         "perturbation_ontology_id": TP53 + ".17", "perturbation_type": "crispr"},
        {"sample_id": "ko_2", "condition": "ko", "reference": "ref.tsv", "reference_sample": "S1",
         "perturbation_ontology_id": TP53 + ".17", "perturbation_type": "crispr"},
        {"sample_id": "drug_1", "condition": "drug", "reference": "ref.tsv", "reference_sample": "S1",
         "perturbation_ontology_id": "CHEBI:27899", "perturbation_type": "compound"},
        {"sample_id": "base_1", "condition": "base", "reference": None, "reference_sample": None,
         "perturbation_ontology_id": None, "perturbation_type": None},
    ]  # fmt: skip
    metadata = write_metadata(folder / "metadata.parquet", rows)
    # Row groups that do not line up with the expression file's.
    references = write_expression(
        folder / "references.parquet", ids, {"ko": reference, "drug": reference}, row_group=1000
    )
    return expression, metadata, references, reference, columns


def expected_fold(generated, reference):
    """The documented formula, from whole vectors."""
    p = max(1.0, 1e6 / reference.sum())
    gen = np.mean([g / g.sum() * 1e6 for g in generated], axis=0)
    ref = reference / reference.sum() * 1e6
    return np.log2((gen + p) / (ref + p)), (np.log2(gen + p) + np.log2(ref + p)) / 2


def test_ma_fold_changes_on_a_hand_made_case(tmp_path):
    expression, metadata, references, reference, columns = ma_case(tmp_path)
    ref = compute_reference_comparison(expression, metadata, references, top_n=5)
    assert ref.conditions == ["ko", "drug"]  # the baseline row has no reference
    assert ref.samples == {"ko": 2, "drug": 1}
    assert ref.perturbed == {"ko": TP53, "drug": None}
    m, a = expected_fold([columns["ko_1"], columns["ko_2"]], reference)
    panel_a, panel_m = ref.panels["ko"]
    np.testing.assert_allclose(panel_m, m, atol=1e-5)
    np.testing.assert_allclose(panel_a, a, atol=1e-5)
    # The target at a quarter: log2fc -2, less the others' small rise (their share grew).
    target_a, target_m = ref.perturbed_point["ko"]  # (x, y)
    assert target_m == pytest.approx(m[7], abs=1e-9)
    library = reference.sum()
    known = np.log2(0.25 * library / (library - 0.75 * reference[7]))  # a quarter, in a smaller library
    assert known == pytest.approx(-1.95, abs=0.01) and target_m == pytest.approx(known, abs=5e-4)  # p: 1 CPM of ~45,000
    assert target_a == pytest.approx(a[7], abs=1e-9)
    top = ref.top[ref.top["condition"] == "ko"]
    assert top.iloc[0]["gene_id"] == TP53 and top.iloc[0]["perturbed"] and top.iloc[0]["rank"] == 1
    assert len(top) == 5 and top["log2fc"].abs().is_monotonic_decreasing
    drug = ref.top[ref.top["condition"] == "drug"]
    assert drug.iloc[0]["gene_id"] == genes(10)[3] and not drug["perturbed"].any()
    m_drug, _ = expected_fold([columns["drug_1"]], reference)
    assert drug.iloc[0]["log2fc"] == pytest.approx(m_drug[3]) and m_drug[3] > 2.9


def test_the_perturbed_gene_is_listed_with_its_rank_when_not_in_the_top(tmp_path):
    expression, metadata, references, reference, columns = ma_case(tmp_path)
    ref = compute_reference_comparison(expression, metadata, references, top_n=1)
    ko = ref.top[ref.top["condition"] == "ko"]
    assert list(ko["gene_id"]) == [TP53]  # it is the top one
    # Make another gene change more than the target: the target comes second, listed with rank 2.
    columns["ko_1"][11] = columns["ko_1"][11] * 64 + 64
    columns["ko_2"][11] = columns["ko_2"][11] * 64 + 64
    write_expression(expression, genes(len(reference)), columns)
    ref = compute_reference_comparison(expression, metadata, references, top_n=1)
    ko = ref.top[ref.top["condition"] == "ko"]
    assert list(ko["gene_id"]) == [genes(12)[11], TP53]
    assert list(ko["rank"]) == [1, 2] and list(ko["perturbed"]) == [False, True]


def test_log_cpm_expression_gives_the_same_fold_changes(tmp_path):
    counts = compute_reference_comparison(*ma_case(tmp_path)[:3])
    logs = compute_reference_comparison(*ma_case(tmp_path, values="log1p_cpm")[:3])
    np.testing.assert_allclose(logs.panels["ko"][1], counts.panels["ko"][1], atol=1e-4)
    assert logs.top.iloc[0]["gene_id"] == TP53


def test_perturbed_gene_only_for_gene_perturbations():
    assert perturbed_gene(TP53 + ".3", "CRISPR") == TP53
    assert perturbed_gene(TP53, "overexpression") == TP53
    assert perturbed_gene(TP53, "compound") is None
    assert perturbed_gene("CHEBI:27899", "sirna") is None
    assert perturbed_gene(None, "crispr") is None and perturbed_gene(TP53, None) is None


def test_reference_report_refuses_unaligned_or_missing_references(tmp_path):
    expression, metadata, references, reference, _ = ma_case(tmp_path)
    shuffled = tmp_path / "shuffled.parquet"
    ids = genes(len(reference))
    ids[100], ids[101] = ids[101], ids[100]
    write_expression(shuffled, ids, {"ko": reference, "drug": reference})
    with pytest.raises(
        ReportError, match=r"shuffled.parquet: gene 101 is 'ENSG00000000102', the expression file's 'ENSG00000000101'"
    ):
        compute_reference_comparison(expression, metadata, shuffled)
    short = tmp_path / "short.parquet"
    write_expression(short, genes(len(reference))[:-5], {"ko": reference[:-5], "drug": reference[:-5]})
    with pytest.raises(ReportError, match="short.parquet has fewer genes"):
        compute_reference_comparison(expression, metadata, short)
    lacking = tmp_path / "lacking.parquet"
    write_expression(lacking, genes(len(reference)), {"ko": reference})
    with pytest.raises(ReportError, match=r"no column for the reference-conditioned conditions \['drug'\]"):
        compute_reference_comparison(expression, metadata, lacking)


def test_reference_reading_is_bounded_by_row_group_and_sample_chunk(tmp_path, monkeypatch):
    """No whole-file read; the peak of numpy memory stays far below the full matrix."""
    n_genes, n_samples = ROW_GROUP_GENES * 4, 600
    ids = genes(n_genes)
    rng = np.random.default_rng(2)
    reference = rng.integers(0, 100, n_genes)
    columns = {f"c_{i}": rng.poisson(reference + 1).astype(np.int32) for i in range(n_samples)}
    expression = write_expression(tmp_path / "expression.parquet", ids, columns)
    rows = [
        {"sample_id": s, "condition": "c", "reference": "r.tsv", "perturbation_type": "crispr",
         "perturbation_ontology_id": TP53}
        for s in columns
    ]  # fmt: skip
    metadata = write_metadata(tmp_path / "metadata.parquet", rows)
    references = write_expression(tmp_path / "references.parquet", ids, {"c": reference})
    whole = compute_reference_comparison(expression, metadata, references)

    def refuse(*args, **kwargs):
        raise AssertionError("read the whole file")

    read_table = pq.read_table

    def metadata_only(path, *args, **kwargs):  # the metadata file is one row per sample: read whole
        assert str(path).endswith("metadata.parquet"), path
        return read_table(path, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    monkeypatch.setattr(pq, "read_table", metadata_only)
    monkeypatch.setattr(report_reference, "SAMPLE_CHUNK", 64)
    tracemalloc.start()
    chunked = compute_reference_comparison(expression, metadata, references)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full = n_genes * n_samples * 8
    assert peak < full / 8, (peak, full)
    np.testing.assert_allclose(chunked.panels["c"][1], whole.panels["c"][1], atol=1e-5)
    pd.testing.assert_frame_equal(chunked.top, whole.top)


def ma_files(tmp_path, n_conditions, n_genes=400):
    ids = genes(n_genes)
    rng = np.random.default_rng(3)
    reference = rng.integers(50, 300, n_genes)
    columns, rows, refs = {}, [], {}
    for c in range(n_conditions):
        name = f"ko_{c:03d}_a_fairly_long_condition_name"
        gene = c % n_genes
        for i in (1, 2):
            sample = reference.copy() * (i + 1)
            sample[gene] //= 8
            columns[f"{name}_{i}"] = rng.poisson(sample)
            rows.append(
                {"sample_id": f"{name}_{i}", "condition": name, "reference": "refs/bulk.tsv",
                 "reference_sample": "S1", "perturbation_ontology_id": ids[gene], "perturbation_type": "shrna"}
            )  # fmt: skip
        refs[name] = reference
    folder = tmp_path / f"ma{n_conditions}"
    folder.mkdir()
    return (
        write_expression(folder / "expression.parquet", ids, columns, row_group=150),
        write_metadata(folder / "metadata.parquet", rows),
        write_expression(folder / "references.parquet", ids, refs, row_group=150),
    )


@pytest.mark.parametrize("n", [1, 5, 200])
def test_ma_outputs_at_1_5_and_200_conditions(tmp_path, n):
    out = tmp_path / "out"
    ref = write_reference_report(
        *ma_files(tmp_path, n),
        figure=out / "ma_plots.svg",
        table=out / "top_changed_genes.tsv",
        html=out / "top_changed_genes.html",
        top_n=10,
    )
    assert len(ref.conditions) == n and len(ref.panels) == min(n, 24)
    table = pd.read_csv(out / "top_changed_genes.tsv", sep="\t")
    assert table["condition"].nunique() == n
    assert (table.groupby("condition")["perturbed"].sum() == 1).all()  # each target found once
    targets = table[table["perturbed"]]
    assert (targets["log2fc"] < -1.5).all()
    text = svg_text(out / "ma_plots.svg")
    assert EMULATOR_NOTE in text and "(target)" in text and "mean log2 CPM" in text
    assert text.count("(target)") == min(n, 24)
    if n == 200:
        assert "first 24 shown, 176 left out: all in top_changed_genes.tsv" in text
    else:
        assert "left out" not in text
    # The grey cloud is an image inside the SVG: the file stays small.
    assert 10_000 < (out / "ma_plots.svg").stat().st_size < 3_000_000
    html = (out / "top_changed_genes.html").read_text()
    assert "Top changed genes" in html and "bulk.tsv:S1" in html
    png = plot_ma(ref, out / "ma_plots.png")
    assert png.stat().st_size > 5_000


def test_top_changed_genes_tsv_columns(tmp_path):
    ref = compute_reference_comparison(*ma_case(tmp_path)[:3], top_n=3)
    table = write_top_changed_genes(ref, tmp_path / "top.tsv")
    read = pd.read_csv(tmp_path / "top.tsv", sep="\t")
    assert list(read.columns) == [
        "condition",
        "rank",
        "gene_id",
        "log2fc",
        "mean_log2_cpm",
        "generated_cpm",
        "reference_cpm",
        "perturbed",
    ]
    assert len(read) == len(table) == 6


# --- GEM-2 groups ------------------------------------------------------------------------


def gem2_rows():
    """GEM-2 bulk rows as metadata.parquet holds them: the tissue by name, perturbation lists as
    JSON text; a from-reference row whose tissue is inferred from its reference."""
    etoh = json.dumps([{"smiles": "CCO"}])
    rows = [
        {"sample_id": f"liver_{i}", "condition": "liver", "model_id": "gem-2-bulk", "tissue": "liver",
         "sample_type": "primary tissue", "bioactive_entity_perturbations": etoh, "gene_perturbations": "[]",
         "reference": None}
        for i in (1, 2)
    ] + [
        {"sample_id": f"ko_{i}", "condition": "ko", "model_id": "gem-2-bulk_reference-conditioning",
         "tissue": "lung", "sample_type": None, "bioactive_entity_perturbations": None,
         "gene_perturbations": json.dumps([{"gene_id": TP53 + ".3"}]), "reference": "r.tsv"}
        for i in (1, 2)
    ]  # fmt: skip
    return rows


GEM2_REQUESTS = {
    "liver": {
        "tissue": "liver",
        "sample_type": "primary tissue",
        "bioactive_entity_perturbations": [{"smiles": "CCO"}],
    },
    "ko": {"tissue": "liver", "gene_perturbations": [{"gene_id": TP53}], "infection_perturbations": []},
}


def test_gem2_requests_speak_gem2_and_their_lists_are_named_not_compared():
    metadata = pd.DataFrame(gem2_rows())
    # From the table: the values as given, the (non-empty) lists apart.
    assert requested_values(metadata, GEM2_REQUESTS) == {
        "liver": {"tissue": "liver", "sample_type": "primary tissue"},
        "ko": {"tissue": "liver"},
    }
    assert listed_requests(metadata, GEM2_REQUESTS) == {
        "bioactive_entity_perturbations": ["liver"],
        "gene_perturbations": ["ko"],
    }
    # From the file: GEM-2's vocabulary by the rows' model (tissue by name; GEM-1 would read
    # only tissue_ontology_id), a reference row's perturbations only, lists read from JSON text.
    assert requested_values(metadata) == {"liver": {"tissue": "liver", "sample_type": "primary tissue"}, "ko": {}}
    assert listed_requests(metadata) == {"bioactive_entity_perturbations": ["liver"], "gene_perturbations": ["ko"]}
    gem1 = metadata.assign(model_id="gem-1-bulk")
    assert requested_values(gem1) == {"liver": {"sample_type": "primary tissue"}, "ko": {}}
    assert listed_requests(gem1) == {}
    assert list_value('[{"smiles": "CCO"}]', text=True) == [{"smiles": "CCO"}]
    assert list_value('[{"smiles": "CCO"}]') is None and list_value("CCO", text=True) is None
    assert canonical_value([{"smiles": "CCO", "a": 1}]) == '[{"a": 1, "smiles": "CCO"}]'


def test_gem2_round_trip_compares_the_fields_both_sides_have(tmp_path):
    metadata = write_metadata(tmp_path / "metadata.parquet", gem2_rows())
    # GEM-2's predictor answers tissue names, sample type and library layout; not perturbations.
    tops = {
        "liver_1": {"tissue": "liver", "sample_type": "primary tissue", "library_layout": "PAIRED"},
        "liver_2": {"tissue": "lung", "sample_type": "primary tissue", "library_layout": "PAIRED"},
        "ko_1": {"tissue": "liver", "sample_type": "cell line", "library_layout": "PAIRED"},
        "ko_2": {"tissue": "liver", "sample_type": "cell line", "library_layout": "SINGLE"},
    }
    probabilities = [(s, "tissue", "liver", p) for s, p in zip(tops, [0.9, 0.3, 0.8, 0.6])]
    probabilities += [(s, "tissue", "lung", round(1 - p, 10)) for s, p in zip(tops, [0.9, 0.3, 0.8, 0.6])]
    probabilities += [(s, "sample_type", "primary tissue", 0.7) for s in tops]
    requests = {**GEM2_REQUESTS, "ko": {**GEM2_REQUESTS["ko"], "age_years": 40}}
    rt = write_round_trip(
        metadata,
        *write_predictions(tmp_path, tops, probabilities),
        requests=requests,
        table=tmp_path / "rt.tsv",
        html=tmp_path / "rt.html",
        figure=tmp_path / "rt.svg",
    )
    table = rt.table
    assert list(zip(table["condition"], table["field"])) == [
        ("liver", "sample_type"),
        ("liver", "tissue"),
        ("ko", "tissue"),
    ]
    assert rt.fields == ["sample_type", "tissue"]  # GEM-1's key order, then GEM-2's own keys
    liver = row_of(table, "liver", "tissue")
    assert liver["top_match_share"] == pytest.approx(1 / 2) and liver["mean_probability"] == pytest.approx(0.6)
    ko = row_of(table, "ko", "tissue")
    assert ko["top_match_share"] == 1.0 and ko["mean_probability"] == pytest.approx(0.7)
    assert row_of(table, "liver", "sample_type")["mean_probability"] == pytest.approx(0.7)
    assert rt.lists == {"bioactive_entity_perturbations": ["liver"], "gene_perturbations": ["ko"]}
    assert rt.not_predicted == {"age_years": ["ko"]}
    page = html.unescape((tmp_path / "rt.html").read_text())
    assert "gene_perturbations: requested by 1 conditions as a list of objects (GEM-2's perturbation lists)" in page
    assert "age_years: requested by 1 conditions, not predicted" in page
    assert "tissue" in svg_text(tmp_path / "rt.svg")


def test_gem2_round_trip_with_only_lists_says_why_there_is_nothing_to_compare(tmp_path):
    rows = [dict(row, tissue=None) for row in gem2_rows()]
    metadata = write_metadata(tmp_path / "metadata.parquet", rows)
    files = write_predictions(tmp_path, {"ko_1": {"tissue": "liver"}}, [("ko_1", "tissue", "liver", 1.0)])
    requests = {"ko": {"gene_perturbations": [{"gene_id": TP53}]}}
    rt = write_round_trip(metadata, *files, requests=requests, figure=tmp_path / "rt.svg")
    assert rt.table.empty and rt.lists == {"gene_perturbations": ["ko"]}
    text = svg_text(tmp_path / "rt.svg")
    assert "Nothing to compare" in text and "lists, not compared: gene_perturbations" in text


def test_describe_perturbation_reads_gem1_keys_and_gem2_lists():
    assert describe_perturbation({"perturbation_type": "crispr", "perturbation_ontology_id": TP53 + ".2"}) == (
        f"crispr {TP53}.2",
        [TP53],
    )
    assert describe_perturbation({"perturbation_type": "compound", "perturbation_ontology_id": "CHEBI:27899"}) == (
        "compound CHEBI:27899",
        [],
    )
    gem2 = {
        "bioactive_entity_perturbations": json.dumps([{"smiles": "CCO"}, {"entity_ontology_id": "CHEMBL3261331"}]),
        "gene_perturbations": [{"gene_id": TP53 + ".7"}],
    }
    assert describe_perturbation(gem2) == (f"smiles CCO entity_ontology_id CHEMBL3261331 gene_id {TP53}.7", [TP53])
    assert describe_perturbation({"gene_perturbations": "[]", "bioactive_entity_perturbations": None}) == (
        "no perturbation",
        [],
    )


def test_gem2_ma_plots_mark_the_one_gene_of_gene_perturbations(tmp_path):
    expression, _, references, reference, columns = ma_case(tmp_path)
    lists = {"ko": [{"gene_id": TP53}], "drug": [{"gene_id": TP53}, {"gene_id": "ENSG00000000004"}]}
    rows = [
        {"sample_id": s, "condition": c, "model_id": "gem-2-bulk_reference-conditioning", "reference": "ref.tsv",
         "reference_sample": "S1", "gene_perturbations": json.dumps(lists[c])}
        for s, c in (("ko_1", "ko"), ("ko_2", "ko"), ("drug_1", "drug"))
    ] + [{"sample_id": "base_1", "condition": "base", "model_id": "gem-2-bulk", "reference": None,
          "reference_sample": None, "gene_perturbations": None}]  # fmt: skip
    metadata = write_metadata(tmp_path / "gem2_metadata.parquet", rows)
    ref = compute_reference_comparison(expression, metadata, references, top_n=5)
    assert ref.conditions == ["ko", "drug"]
    assert ref.perturbed == {"ko": TP53, "drug": None}
    assert ref.perturbation["ko"] == f"gene_id {TP53}"
    assert any("drug: 2 perturbed genes" in note and "none marked" in note for note in ref.notes)
    top = ref.top[ref.top["condition"] == "ko"]
    assert top.iloc[0]["gene_id"] == TP53 and top.iloc[0]["perturbed"] and top.iloc[0]["log2fc"] < -1.5
    assert not ref.top[ref.top["condition"] == "drug"]["perturbed"].any()
    plot_ma(ref, tmp_path / "ma.svg")
    assert f"{TP53} (target)" in svg_text(tmp_path / "ma.svg")


# --- through the workflow ----------------------------------------------------------------


def test_the_rules_draw_the_round_trip_and_ma_plots_and_the_report_embeds_them(tmp_path, emulator, emulator_token):
    """The rules on hand-made results of the .test table's bulk rows (the files the
    prediction rules write are given: only the report rules may run)."""
    from snakemake_runs import ROOT, SNAKEFILE, copy_config, output_of, snakemake

    workdir = tmp_path / "run"
    workdir.mkdir()
    configfile = copy_config(ROOT / ".test/config", workdir)
    results = workdir / "results" / "bulk"
    results.mkdir(parents=True)
    ids = genes(300)
    rng = np.random.default_rng(4)
    reference = rng.integers(20, 300, len(ids))
    knocked = reference * 2
    knocked[7] //= 8
    columns = {"lung_1": reference, "lung_2": reference, "hepg2_TP53_crispr_1": knocked, "hepg2_TP53_crispr_2": knocked}
    write_expression(results / "expression.parquet", ids, columns)
    rows = [
        {"sample_id": f"lung_{i}", "condition": "lung", "sample_type": "primary tissue", "tissue_ontology_id": LUNG,
         "sex": "female", "perturbation_type": None, "perturbation_ontology_id": None, "reference": None,
         "reference_sample": None}
        for i in (1, 2)
    ] + [
        {"sample_id": f"hepg2_TP53_crispr_{i}", "condition": "hepg2_TP53_crispr", "sample_type": "cell line",
         "tissue_ontology_id": LIVER, "sex": None, "perturbation_type": "crispr", "perturbation_ontology_id": TP53,
         "reference": "refs/hepg2.tsv", "reference_sample": "HepG2_1"}
        for i in (1, 2)
    ]  # fmt: skip
    write_metadata(results / "metadata.parquet", rows)
    write_expression(results / "references.parquet", ids, {"hepg2_TP53_crispr": reference})
    tops = {row["sample_id"]: {"tissue_ontology_id": LUNG, "sex": "female"} for row in rows}
    probabilities = [(s, "tissue_ontology_id", LUNG, 0.75) for s in tops] + [(s, "sex", "female", 0.6) for s in tops]
    write_predictions(results, tops, probabilities)

    names = ["round_trip.tsv", "round_trip.html", "round_trip.svg", "ma_plots.svg", "top_changed_genes.html"]
    targets = [f"results/report/bulk/{name}" for name in names]
    args = ("-s", str(SNAKEFILE), "-d", str(workdir), "--configfile", str(configfile))
    args += ("--config", f"api_base_url={emulator.url}", "--allowed-rules", "report_round_trip", "report_reference")
    # Targets first: --allowed-rules takes a list. The preflight asks the emulator, so its token.
    run = snakemake(*targets, "--cores", "1", *args, cwd=workdir, token=emulator_token)
    assert run.returncode == 0, output_of(run)
    round_trip = pd.read_csv(workdir / "results/report/bulk/round_trip.tsv", sep="\t")
    # The requests come from the table: lung asked sample_type, tissue and sex; the crispr
    # row asked cell line, tissue, perturbation (here nothing predicts those but tissue).
    assert set(zip(round_trip["condition"], round_trip["field"])) == {
        ("lung", "tissue_ontology_id"),
        ("lung", "sex"),
        ("hepg2_TP53_crispr", "tissue_ontology_id"),
    }
    assert row_of(round_trip, "hepg2_TP53_crispr", "tissue_ontology_id")["top_match_share"] == 0.0
    assert row_of(round_trip, "lung", "sex")["mean_probability"] == pytest.approx(0.6)
    top = pd.read_csv(workdir / "results/report/bulk/top_changed_genes.tsv", sep="\t")
    assert top.iloc[0]["gene_id"] == TP53 and top.iloc[0]["log2fc"] < -2.5
    assert "(target)" in svg_text(workdir / "results/report/bulk/ma_plots.svg")

    page = snakemake(*targets, "--report", "report.html", *args, cwd=workdir, token="test-token")
    assert page.returncode == 0, output_of(page)
    report = (workdir / "report.html").read_text()
    for name in ("round_trip.svg", "round_trip.html", "ma_plots.svg", "top_changed_genes.html"):
        assert name in report, name
    assert "Round trip" in report and "Reference conditioning" in report
