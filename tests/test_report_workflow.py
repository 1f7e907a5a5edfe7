"""The report and the exports through the workflow: `snakemake --report report.html` after a run
of the test table against an emulator, and the h5ad / log1p-CPM / TSV outputs read back the way a
user would."""

from __future__ import annotations

import base64
import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("matplotlib")  # the workflow extra: the report's figures need it
h5py = pytest.importorskip("h5py")

from snakemake_runs import ROOT, SNAKEFILE, copy_config, output_of, snakemake, workflow_args  # noqa: E402

from synthbio_pipeline import log_cpm  # noqa: E402

GENES = 300
FIGURES = ("library_sizes", "detected_genes", "pca", "condition_correlation")
MODALITIES = ("bulk", "single-cell")
BULK = ["lung", "hepg2_TP53_crispr"]  # the rows of .test/config/conditions.tsv, by modality
SINGLE_CELL = ["lung_macrophage_sc"]


def run_workflow(workdir, emulator, token, outputs=None, *extra):
    """Run the .test config (with `outputs` merged into it) in `workdir`; return the args used."""
    configfile = copy_config(ROOT / ".test/config", workdir)
    if outputs is not None:
        config = yaml.safe_load(configfile.read_text())
        configfile.write_text(yaml.safe_dump({**config, "outputs": outputs}))
    args = (*workflow_args(workdir, emulator.url), *extra)
    run = snakemake("--cores", "2", *args, cwd=workdir, token=token)
    assert run.returncode == 0, output_of(run)
    return args


def embedded(report: str, mime: str, name: str) -> list[str]:
    """The decoded contents of every file `name` embedded in the report as a data URI."""
    pattern = re.escape(f"data:{mime};charset=utf8;filename={name};base64,") + r"([A-Za-z0-9+/=]+)"
    return [base64.b64decode(found).decode() for found in re.findall(pattern, report)]


def report_variable(report: str, name: str):
    """A JSON variable of the report's app (`var results = {...};`)."""
    found = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', report, re.S)
    assert found, name
    return json.loads(found.group(1))


def test_report_html_is_self_contained_with_every_plot_and_table(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.1)
    args = run_workflow(tmp_path, emulator, emulator_token)
    # Default outputs: AnnData for single-cell only; the report's figures and tables.
    assert (tmp_path / "results/single-cell/single-cell.h5ad").exists()
    assert not (tmp_path / "results/bulk/bulk.h5ad").exists()
    assert not list(tmp_path.glob("results/*/log1p_cpm.parquet")) and not list(tmp_path.glob("results/*/*.tsv.gz"))

    # The report needs no token (it sends nothing) and describes the run that made the data,
    # not the config it is built with: here the production URL, without the emulator's.
    without_the_emulator = args[: args.index("--config")]
    run = snakemake(*without_the_emulator, "--report", "report.html", cwd=tmp_path, token=None, timeout=120)
    assert run.returncode == 0, output_of(run)
    report = (tmp_path / "report.html").read_text()

    # Self-contained: nothing is loaded from elsewhere; the figures are data URIs inside it.
    assert not re.search(
        r"<(script|img|iframe|link|embed|object)\b[^>]*\b(src|href|data)\s*=\s*[\"']?(https?:)?//", report, re.I
    )
    results = report_variable(report, "results")
    by_path = {path.replace("\\", "/"): entry for path, entry in results.items()}
    for modality in MODALITIES:
        for figure in FIGURES:
            entry = by_path[f"results/report/{modality}/{figure}.svg"]
            assert entry["mime_type"] == "image/svg+xml"
            assert entry["data_uri"].startswith("data:image/svg+xml;")
            assert entry["caption"].strip(), (modality, figure)  # the workflow/report/*.rst caption
            assert f"{modality} sample" in entry["caption"] or f"{modality} condition" in entry["caption"]
            assert entry["labels"]["data"] == "emulator" and entry["labels"]["modality"] == modality
        svgs = embedded(report, "image/svg+xml", f"{FIGURES[0]}.svg")
        assert len(svgs) == 2 and all("<svg" in svg and "emulator data" in svg for svg in svgs)
    for figure in FIGURES:
        assert len(embedded(report, "image/svg+xml", f"{figure}.svg")) == len(MODALITIES), figure
    categories = report_variable(report, "categories")
    assert set(categories) == {"bulk", "single-cell", "Conditions table"}
    assert set(categories["bulk"]) == {"Quality control", "Structure", "Per-condition summary"}

    # The per-condition tables: ids from the metadata, timings from the prediction summaries.
    summaries = embedded(report, "text/html", "summary.html")
    assert len(summaries) == 2
    for modality, names in (("bulk", BULK), ("single-cell", SINGLE_CELL)):
        runs = {
            entry["condition"]: entry
            for batch in (tmp_path / "results/predictions" / modality).glob("*/summary.json")
            for entry in json.loads(batch.read_text())["conditions"]
        }
        assert sorted(runs) == sorted(names)
        metadata = pd.read_parquet(tmp_path / "results" / modality / "metadata.parquet")
        (page,) = [page for page in summaries if all(f"<td>{name}</td>" in page for name in names)]
        assert "Emulator data (synthetic, not a model)" in page
        for name in names:
            (query_id,) = set(metadata.loc[metadata["condition"] == name, "query_id"])
            assert query_id == runs[name]["query_id"] and query_id in page
        table = pd.read_csv(tmp_path / "results/report" / modality / "summary.tsv", sep="\t")
        assert list(table["condition"]) == names
        assert list(table["seconds"]) == [runs[name]["seconds"] for name in names]
        assert list(table["seconds"]) and (table["seconds"] > 0).all()
        assert list(table["submissions"]) == [1] * len(names)
        assert set(table["model_version"]) == {"emulator-2"}

    # The conditions table, as run (defaults applied), and the run's description.
    (conditions,) = embedded(report, "text/html", "conditions.html")
    for name in BULK + SINGLE_CELL:
        assert f"<td>{name}</td>" in conditions
    assert conditions.count("<td>gem-1-bulk</td>") == 2 and "<td>mean estimation</td>" in conditions
    description = report_variable(report, "workflow-desc")
    assert "This data comes from the API emulator" in description
    assert "config/conditions.tsv" in description and emulator.url in description
    assert "app.synthesize.bio" not in description
    (entry,) = [entry for path, entry in by_path.items() if path.endswith("conditions.html")]
    assert entry["labels"]["service"] == emulator.url and entry["labels"]["file"] == "config/conditions.tsv"
    assert entry["labels"]["values"] == "counts" and entry["labels"]["data"] == "emulator"
    for modality in MODALITIES:
        provenance = json.loads((tmp_path / "results" / modality / "provenance.json").read_text())
        assert provenance["api_base_url"] == [emulator.url] and provenance["data"] == "emulator"
        assert provenance["conditions_table"] == "config/conditions.tsv" and provenance["options"]["as_counts"]
    assert f"Predicted by {emulator.url} (emulator)" in conditions


def test_exports_read_back_with_the_tools_users_use(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator(genes=GENES, latency=0.1)
    outputs = {"h5ad": ["bulk", "single-cell"], "log_cpm": True, "counts_tsv": True, "report": False}
    run_workflow(tmp_path, emulator, emulator_token, outputs)
    assert not (tmp_path / "results/report").exists()  # report: false

    for modality, names in (("bulk", BULK), ("single-cell", SINGLE_CELL)):
        folder = tmp_path / "results" / modality
        expression = pd.read_parquet(folder / "expression.parquet").set_index("gene_id")
        metadata = pd.read_parquet(folder / "metadata.parquet")
        samples = list(metadata["sample_id"])
        assert [s.rsplit("_", 1)[0] for s in samples] == [n for n in names for _ in range(2)]
        counts = expression[samples].to_numpy().T  # samples x genes

        # TSV: R's read.delim(path, row.names = 1, check.names = FALSE), here pandas.
        with gzip.open(folder / "counts.tsv.gz", "rt") as handle:
            assert handle.readline().rstrip("\n").split("\t") == ["gene_id", *samples]
        tsv = pd.read_csv(folder / "counts.tsv.gz", sep="\t", index_col=0)
        assert list(tsv.index) == list(expression.index) and list(tsv.columns) == samples
        np.testing.assert_array_equal(tsv.to_numpy().T, counts)

        # log1p-CPM Parquet: the library's log_cpm of the counts, same layout.
        cpm = pd.read_parquet(folder / "log1p_cpm.parquet").set_index("gene_id")
        assert list(cpm.columns) == samples and cpm.dtypes.unique().tolist() == [np.float32]
        np.testing.assert_allclose(cpm.to_numpy().T, log_cpm(counts.astype(np.float64)), rtol=1e-6, atol=1e-6)

        check_h5ad(folder / f"{modality}.h5ad", modality, counts, samples, list(expression.index), metadata)


def check_h5ad(path, modality, counts, samples, genes, metadata):
    """Read the AnnData file with anndata when it is installed, and as the HDF5 it is."""
    try:
        import anndata
    except ImportError:  # anndata may need pandas < 3 on Python 3.11: see synthbio_pipeline.formats.exports
        anndata = None
    if anndata is not None:
        adata = anndata.read_h5ad(path)
        assert list(adata.obs_names) == samples and list(adata.var_names) == genes
        x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        np.testing.assert_array_equal(x, counts)
        assert list(adata.obs["condition"]) == list(metadata["condition"])
        assert adata.uns["synthbio"]["backend"] == "emulator"
    with h5py.File(path, "r") as f:
        assert f.attrs["encoding-type"] == "anndata"
        obs, var = f["obs"], f["var"]
        assert [s.decode() for s in obs[obs.attrs["_index"]][:]] == samples
        assert [g.decode() for g in var[var.attrs["_index"]][:]] == genes
        condition = obs["condition"]
        categories = [c.decode() for c in condition["categories"][:]]
        assert [categories[i] for i in condition["codes"][:]] == list(metadata["condition"])
        assert f["uns/synthbio/backend"][()].decode() == "emulator"
        x = f["X"]
        if modality == "single-cell":  # sparse counts: CSR, one row per sample
            assert x.attrs["encoding-type"] == "csr_matrix"
            dense = np.zeros(tuple(x.attrs["shape"]), counts.dtype)
            indptr, indices, data = x["indptr"][:], x["indices"][:], x["data"][:]
            for row in range(dense.shape[0]):
                dense[row, indices[indptr[row] : indptr[row + 1]]] = data[indptr[row] : indptr[row + 1]]
        else:
            assert x.attrs["encoding-type"] == "array"
            dense = x[:]
        np.testing.assert_array_equal(dense, counts)


@pytest.mark.parametrize("as_counts", [True, False])
def test_outputs_follow_as_counts(tmp_path, as_counts):
    """log1p-CPM values have no library sizes, no counts to write as TSV and no log-CPM to add."""
    configfile = copy_config(ROOT / ".test/config", tmp_path)
    config = yaml.safe_load(configfile.read_text())
    outputs = {"h5ad": [], "log_cpm": True, "counts_tsv": False, "report": True}
    configfile.write_text(yaml.safe_dump({**config, "as_counts": as_counts, "outputs": outputs}))
    args = ("-n", "-s", str(SNAKEFILE), "--configfile", str(configfile))
    run = snakemake(*args, cwd=tmp_path, token="unused", timeout=60)
    assert run.returncode == 0, output_of(run)
    assert ("results/report/bulk/library_sizes.svg" in run.stdout) == as_counts
    assert ("results/bulk/log1p_cpm.parquet" in run.stdout) == as_counts
    assert "results/report/bulk/pca.svg" in run.stdout and ".h5ad" not in run.stdout

    configfile.write_text(
        yaml.safe_dump({**config, "as_counts": as_counts, "outputs": {**outputs, "counts_tsv": True}})
    )
    run = snakemake(*args, cwd=tmp_path, token="unused", timeout=60)
    if as_counts:
        assert run.returncode == 0 and "results/bulk/counts.tsv.gz" in run.stdout, output_of(run)
    else:
        assert run.returncode != 0
        assert "counts_tsv: true needs as_counts: true" in run.stdout + run.stderr, output_of(run)
