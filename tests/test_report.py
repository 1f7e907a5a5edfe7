"""Report figures and summary of a merged pair: statistics against numpy, files that open."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")  # the workflow extra; scripts/setup.sh installs it

from synthbio_pipeline import log_cpm
from synthbio_pipeline.cli import main
from synthbio_pipeline.formats.parquet import ROW_GROUP_GENES, PartTarget, merge_parts, write_part
from synthbio_pipeline.pipeline.report import (
    EMULATOR_NOTE,
    ReportError,
    compute_report,
    plot_condition_correlation,
    plot_detected_genes,
    plot_library_sizes,
    plot_pca,
    write_condition_summary,
    write_report,
)

GENES = [f"ENSG{i:011d}" for i in range(ROW_GROUP_GENES * 2 + 17)]  # three row groups, the last one short
CONDITIONS = ["lung_normal", "liver_tumour", "brain_treated"]
PER_CONDITION = 4
PCA_GENES = 2500  # more than one row group: the running selection has to merge blocks


def simulated_counts(conditions, per_condition, seed=0):
    """Counts where each condition moves its own tenth of the genes eightfold up or down."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 60.0, len(GENES))
    base[rng.random(len(GENES)) < 0.1] = 0  # genes never detected
    blocks = []
    for _ in conditions:
        profile = base * np.where(rng.random(len(GENES)) < 0.1, rng.choice([8.0, 0.125], len(GENES)), 1.0)
        depth = rng.uniform(0.5, 2.0, (per_condition, 1))
        blocks.append(rng.poisson(profile * depth))
    return np.concatenate(blocks)


def result_document(path, counts, emulator):
    document = {
        "gene_order": GENES,
        "model_version": "emulator-2" if emulator else 2,
        "outputs": [{"counts": row.tolist(), "metadata": {"sex": "male"}} for row in counts],
    }
    if emulator:
        document["emulator"] = {"note": "synthetic"}
    path.write_text(json.dumps(document))
    return path


def merged_pair(tmp_path, counts, conditions, per_condition, *, emulator=True, as_counts=True, model_id="gem-1-bulk"):
    """The workflow's way: one part per condition from a result document, then the merge."""
    expression_parts, metadata_parts = [], []
    for i, condition in enumerate(conditions):
        rows = counts[i * per_condition : (i + 1) * per_condition]
        result = result_document(tmp_path / f"{condition}.json", rows, emulator)
        expression, metadata = tmp_path / condition / "expression.parquet", tmp_path / condition / "metadata.parquet"
        write_part(
            result,
            PartTarget(
                condition=condition,
                model_id=model_id,
                body={"inputs": [{"metadata": {"sex": "male"}, "num_samples": len(rows)}]},
                expression_out=expression,
                metadata_out=metadata,
                as_counts=as_counts,
            ),
            query_id=f"q-{condition}",
        )
        expression_parts.append(expression)
        metadata_parts.append(metadata)
    kind = "counts" if as_counts else "cpm"
    out = tmp_path / "merged" / kind
    merge_parts(expression_parts, metadata_parts, out / "expression.parquet", out / "metadata.parquet")
    return out / "expression.parquet", out / "metadata.parquet"


@pytest.fixture(scope="module")
def counts():
    return simulated_counts(CONDITIONS, PER_CONDITION)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, counts):
    return merged_pair(tmp_path_factory.mktemp("report"), counts, CONDITIONS, PER_CONDITION)


@pytest.fixture(scope="module")
def data(pair):
    return compute_report(*pair, pca_genes=PCA_GENES)


def labels():
    return np.repeat(CONDITIONS, PER_CONDITION)


def test_per_sample_statistics_equal_numpy(data, counts):
    assert data.samples == [f"{c}_{i}" for c in CONDITIONS for i in range(1, PER_CONDITION + 1)]
    assert data.conditions == CONDITIONS and data.sample_conditions == list(labels())
    assert data.values == "counts" and data.backend == "emulator" and data.n_genes == len(GENES)
    np.testing.assert_array_equal(data.library_sizes, counts.sum(axis=1))
    np.testing.assert_array_equal(data.detected_genes, np.count_nonzero(counts > 0, axis=1))


def test_pca_equals_svd_of_the_most_variable_genes(data, counts):
    values = log_cpm(counts)  # the whole matrix at once, as the streamed blocks must reproduce
    variance = values.var(axis=0)
    top = np.sort(np.lexsort((np.arange(len(GENES)), -variance))[:PCA_GENES])
    assert data.pca_gene_ids == [GENES[i] for i in top]
    centred = values[:, top] - values[:, top].mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :2] * s[:2]
    # Components are defined up to sign.
    np.testing.assert_allclose(np.abs(data.pca), np.abs(expected), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(data.explained_variance, s[:2] ** 2 / (s**2).sum(), rtol=1e-9)


def test_pca_separates_conditions_that_differ_strongly(data):
    groups = labels()
    centroids = np.array([data.pca[groups == c].mean(axis=0) for c in CONDITIONS])
    spread = max(np.linalg.norm(data.pca[groups == c] - centroids[i], axis=1).max() for i, c in enumerate(CONDITIONS))
    between = min(np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i + 1, 3))
    assert between > 3 * spread
    assert data.explained_variance.sum() > 0.5  # the condition effect dominates, not noise


def test_condition_correlation_is_pearson_of_condition_means(data, counts):
    values = log_cpm(counts)
    means = np.stack([values[labels() == c].mean(axis=0) for c in CONDITIONS])
    np.testing.assert_allclose(data.correlation, np.corrcoef(means), rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(data.correlation) == pytest.approx(1.0))


def test_each_figure_is_a_valid_svg_with_the_emulator_label(data, tmp_path):
    drawn = {
        "library": plot_library_sizes(data, tmp_path / "library.svg"),
        "detected": plot_detected_genes(data, tmp_path / "detected.svg"),
        "pca": plot_pca(data, tmp_path / "pca.svg"),
        "correlation": plot_condition_correlation(data, tmp_path / "correlation.svg"),
    }
    for name, path in drawn.items():
        root = ET.parse(path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg", name
        text = " ".join("".join(element.itertext()) for element in root.iter("{http://www.w3.org/2000/svg}text"))
        assert EMULATOR_NOTE in text, name
        assert all(condition in text for condition in CONDITIONS), name  # axis labels or legend
    pca_text = (tmp_path / "pca.svg").read_text()
    assert "PC1 (" in pca_text and "PC2 (" in pca_text and "condition" in pca_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["correlation.svg", "detected.svg", "library.svg", "pca.svg"]


def test_png_output(data, tmp_path):
    from matplotlib.image import imread

    path = plot_pca(data, tmp_path / "pca.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 500


def test_svg_output_is_reproducible(data, tmp_path):
    plot_library_sizes(data, tmp_path / "a.svg")
    plot_library_sizes(data, tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_condition_summary_table(data, counts, tmp_path):
    table = write_condition_summary(data, tmp_path / "conditions.tsv")
    read = pd.read_csv(tmp_path / "conditions.tsv", sep="\t")
    assert list(read.columns) == [
        "condition",
        "query_id",
        "model_version",
        "backend",
        "samples",
        "library_size_median",
        "detected_genes_median",
    ]
    assert list(read.condition) == CONDITIONS
    assert list(read.query_id) == [f"q-{c}" for c in CONDITIONS]
    assert set(read.model_version) == {"emulator-2"} and set(read.backend) == {"emulator"}
    assert list(read.samples) == [PER_CONDITION] * 3
    for i in range(3):
        rows = counts[i * PER_CONDITION : (i + 1) * PER_CONDITION]
        assert read.library_size_median[i] == np.median(rows.sum(axis=1))
        assert read.detected_genes_median[i] == np.median(np.count_nonzero(rows > 0, axis=1))
    pd.testing.assert_frame_equal(read, table, check_dtype=False)
    write_condition_summary(data, tmp_path / "conditions.csv")
    assert pd.read_csv(tmp_path / "conditions.csv").equals(read)


def test_data_from_the_real_service_has_no_emulator_label(tmp_path, counts):
    pair = merged_pair(tmp_path, counts, CONDITIONS, PER_CONDITION, emulator=False)
    data = compute_report(*pair, pca_genes=PCA_GENES)
    assert data.backend == "synthesize"
    plot_pca(data, tmp_path / "pca.svg")
    text = (tmp_path / "pca.svg").read_text()
    assert "PCA of log1p-CPM" in text and "emulator" not in text


def test_a_log_cpm_file_gives_the_same_pca_and_no_library_sizes(tmp_path, counts, data):
    pair = merged_pair(tmp_path, counts, CONDITIONS, PER_CONDITION, as_counts=False)
    cpm = compute_report(*pair, pca_genes=PCA_GENES)
    assert cpm.values == "log1p_cpm" and cpm.library_sizes is None
    np.testing.assert_array_equal(cpm.detected_genes, data.detected_genes)
    np.testing.assert_allclose(np.abs(cpm.pca), np.abs(data.pca), rtol=1e-4, atol=1e-3)  # float32 storage
    np.testing.assert_allclose(cpm.correlation, data.correlation, atol=1e-6)
    with pytest.raises(ReportError, match="log1p-CPM"):
        plot_library_sizes(cpm, tmp_path / "library.svg")
    assert not (tmp_path / "library.svg").exists()
    summary = write_condition_summary(cpm, tmp_path / "conditions.tsv")
    assert summary.library_size_median.isna().all()
    assert "\tNA\t" in (tmp_path / "conditions.tsv").read_text()
    assert main(["report", str(pair[0]), str(pair[1]), str(tmp_path / "cli"), "--pca-genes", str(PCA_GENES)]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "condition_correlation.svg",
        "conditions.tsv",
        "detected_genes.svg",
        "pca.svg",
    ]


def test_metadata_of_other_samples_is_refused(pair, tmp_path):
    expression, metadata = pair
    shuffled = pd.read_parquet(metadata).iloc[::-1]
    shuffled.to_parquet(tmp_path / "metadata.parquet")
    with pytest.raises(ReportError, match="same order"):
        compute_report(expression, tmp_path / "metadata.parquet")


def test_write_report_and_the_command_line(pair, tmp_path):
    data = write_report(
        *pair, pca=tmp_path / "one" / "pca.svg", summary=tmp_path / "one" / "conditions.tsv", pca_genes=PCA_GENES
    )
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["conditions.tsv", "pca.svg"]
    assert data.conditions == CONDITIONS
    assert main(["report", str(pair[0]), str(pair[1]), str(tmp_path / "all"), "--format", "png"]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "condition_correlation.png",
        "conditions.tsv",
        "detected_genes.png",
        "library_sizes.png",
        "pca.png",
    ]


def test_thirty_conditions_are_all_labelled(tmp_path):
    conditions = [f"condition_with_a_long_name_{i:02d}" for i in range(30)]
    counts = simulated_counts(conditions, 2, seed=1)
    data = compute_report(*merged_pair(tmp_path, counts, conditions, 2))
    assert data.correlation.shape == (30, 30) and len(data.pca_gene_ids) == 2000
    for plot in (plot_pca, plot_condition_correlation, plot_detected_genes):
        path = plot(data, tmp_path / f"{plot.__name__}.svg")
        text = "".join(ET.parse(path).getroot().itertext())
        assert all(condition in text for condition in conditions), plot.__name__


def test_past_the_named_limit_figures_stay_small_and_drop_the_names(tmp_path):
    from synthbio_pipeline.pipeline.report import MAX_NAMED_CONDITIONS

    n = MAX_NAMED_CONDITIONS + 1
    conditions = [f"cond_{i:03d}" for i in range(n)]
    counts = simulated_counts(conditions, 1, seed=2)
    data = compute_report(*merged_pair(tmp_path, counts, conditions, 1))
    for plot in (plot_pca, plot_condition_correlation, plot_detected_genes, plot_library_sizes):
        path = plot(data, tmp_path / f"{plot.__name__}.svg")
        root = ET.parse(path).getroot()
        text = "".join(root.itertext())
        assert f"{n:,} conditions" in text or f"({n:,}; no legend)" in text, plot.__name__
        assert not any(condition in text for condition in conditions), plot.__name__
        # Bounded size (points): the heat map drawn at its natural size grew with n squared.
        assert float(root.get("width").removesuffix("pt")) < 72 * 26, plot.__name__


def test_prediction_timings_join_the_summary_by_condition(data, tmp_path):
    from synthbio_pipeline.pipeline.report import read_run_summaries

    batches = [
        {"conditions": [{"condition": CONDITIONS[0], "seconds": 4.25, "submissions": 2}]},
        {"conditions": [{"condition": CONDITIONS[2], "seconds": 1.5, "submissions": 1}], "seconds": 2.0},
    ]
    paths = []
    for i, batch in enumerate(batches):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(batch))
    runs = read_run_summaries(paths)
    table = write_condition_summary(data, tmp_path / "summary.tsv", runs)
    assert list(table.columns[-2:]) == ["seconds", "submissions"]
    read = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert read.seconds.tolist()[0] == 4.25 and np.isnan(read.seconds[1]) and read.seconds[2] == 1.5
    assert table.submissions.tolist()[0] == 2 and pd.isna(table.submissions[1])

    page = write_condition_summary(data, tmp_path / "summary.html", runs)
    html = (tmp_path / "summary.html").read_text()
    assert page.equals(table) and "<th" in html and "http" not in html
    assert f"<td>{CONDITIONS[0]}</td>" in html and '<td class="number">4.25</td>' in html
    assert '<td class="missing">–</td>' in html  # the condition without timings
    assert EMULATOR_NOTE.capitalize() in html

    (tmp_path / "bad.json").write_text('{"seconds": 1}')
    with pytest.raises(ReportError, match="bad.json"):
        read_run_summaries([tmp_path / "bad.json"])


def test_html_table_escapes_text_and_formats_numbers(tmp_path):
    from synthbio_pipeline.pipeline.report import write_html_table

    frame = pd.DataFrame({"name": ["<b>x</b>", None], "count": [1234567, 3], "value": [0.125, 1234.5]})
    write_html_table(frame, tmp_path / "t.html", title="A & B", notes=["n<1"], emulator="careful")
    html = (tmp_path / "t.html").read_text()
    assert "<title>A &amp; B</title>" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert '<td class="number">1,234,567</td>' in html and '<td class="number">0.12</td>' in html
    assert '<td class="number">1,234</td>' in html or '<td class="number">1,235</td>' in html
    assert '<p class="emulator">careful</p>' in html and "n&lt;1" in html
    assert "<script" not in html and "src=" not in html


def test_conditions_page_shows_the_table_as_run(tmp_path):
    from synthbio_pipeline.pipeline.conditions import read_conditions
    from synthbio_pipeline.pipeline.report import conditions_frame, write_conditions_page

    table = tmp_path / "conditions.tsv"
    table.write_text(
        "condition\tnum_samples\tmodality\tsex\ttissue_ontology_id\n"
        "lung\t2\t\tfemale\tUBERON:0002048\n"
        "sc\t3\tsingle-cell\t\tUBERON:0002048\n"
    )
    frame = conditions_frame(read_conditions(table, {"seed": 5}))
    assert list(frame.columns) == [
        "condition",
        "modality",
        "model_id",
        "mode",
        "num_samples",
        "seed",
        "sex",
        "tissue_ontology_id",
    ]
    assert frame["mode"].tolist() == ["sample generation", "mean estimation"]  # the models' own defaults
    assert frame["seed"].tolist() == [5, 5] and frame["sex"][0] == "female" and pd.isna(frame["sex"][1])
    write_conditions_page(table, tmp_path / "conditions.html", {"seed": 5})
    html = (tmp_path / "conditions.html").read_text()
    assert "2 conditions (bulk: 1, single-cell: 1), 5 samples" in html and "seed = 5" in html


def test_data_source_names_who_made_the_values(pair, tmp_path, counts):
    from synthbio_pipeline.pipeline.report import data_source

    assert data_source(pair[0]) == "emulator"
    real = merged_pair(tmp_path, counts, CONDITIONS, PER_CONDITION, emulator=False)
    assert data_source(real[0]) == "Synthesize Bio API"


def test_server_text_in_the_summary_tsv_cannot_be_a_spreadsheet_formula(tmp_path):
    """The model version is the server's text; a cell starting with = + - @ is escaped."""
    counts = simulated_counts(["lung"], 2)
    document = json.loads(result_document(tmp_path / "r.json", counts, emulator=False).read_text())
    document["model_version"] = '=HYPERLINK("http://evil.example","update")'
    (tmp_path / "r.json").write_text(json.dumps(document))
    parts = tmp_path / "lung" / "expression.parquet", tmp_path / "lung" / "metadata.parquet"
    write_part(
        tmp_path / "r.json",
        PartTarget(
            condition="lung",
            model_id="gem-1-bulk",
            body={"inputs": [{"metadata": {"sex": "male"}, "num_samples": 2}]},
            expression_out=parts[0],
            metadata_out=parts[1],
        ),
        query_id="-q1",
    )
    merge_parts([parts[0]], [parts[1]], tmp_path / "e.parquet", tmp_path / "m.parquet")
    write_condition_summary(compute_report(tmp_path / "e.parquet", tmp_path / "m.parquet"), tmp_path / "s.tsv")
    row = pd.read_csv(tmp_path / "s.tsv", sep="\t").iloc[0]
    assert row.model_version == "'" + document["model_version"] and row.query_id == "'-q1"


def svg_texts(path) -> str:
    return " ".join("".join(e.itertext()) for e in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}text"))


def first_y_tick(path) -> str:
    """The text of the lowest y tick label of an SVG figure."""
    root = ET.parse(path).getroot()
    (tick,) = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("id") == "ytick_1"]
    return "".join(tick.itertext()).strip()


def test_single_cell_qc_shows_genes_and_counts_per_cell_and_one_condition_is_not_compared(tmp_path):
    counts = simulated_counts(["lung_macrophage_sc"], 3, seed=3)
    data = compute_report(*merged_pair(tmp_path, counts, ["lung_macrophage_sc"], 3, model_id="gem-1-sc"))
    assert data.single_cell and data.unit == "cell"
    library = svg_texts(plot_library_sizes(data, tmp_path / "library.svg"))
    detected = svg_texts(plot_detected_genes(data, tmp_path / "detected.svg"))
    assert "Counts per cell (3 cells)" in library and "lung_macrophage_sc (3 cells)" in library
    assert "Genes per cell" in detected and "genes detected per cell" in detected
    for plot, name in ((plot_pca, "A PCA"), (plot_condition_correlation, "A correlation heat map")):
        path = plot(data, tmp_path / f"{plot.__name__}.svg")
        text = svg_texts(path)
        assert "Nothing to compare: one condition (lung_macrophage_sc, 3 cells)." in text, text
        assert f"{name} compares conditions" in text and "PC1" not in text and "Pearson" not in text
        assert EMULATOR_NOTE in text


def test_quality_axes_start_at_zero(data, tmp_path):
    """A spread of a few percent must look like one: detected genes and library sizes from 0."""
    assert first_y_tick(plot_detected_genes(data, tmp_path / "detected.svg")) == "0"
    assert first_y_tick(plot_library_sizes(data, tmp_path / "library.svg")) == "0"


def test_twenty_conditions_get_twenty_distinguishable_styles():
    from synthbio_pipeline.pipeline.report import condition_styles

    styles = condition_styles(20)
    assert len(set(styles)) == 20
    for (colour, marker), (next_colour, next_marker) in zip(styles, styles[1:]):
        assert colour != next_colour and marker != next_marker
