"""One measured task of the conversion benchmark, run in a fresh interpreter by ``convert.py``.

    python bench/_measure.py TASK PARAMS_JSON REPORT_JSON

Each task imports what it needs first, records its memory after imports (the *baseline*),
then does its work and writes a JSON report: the baseline, the wall time of the work (and
of its phases), and task-specific facts. The peak memory of the whole process is not
measured here but by the parent, from the resource usage ``os.wait4`` returns for this
process, so it covers everything the task did, imports included.

Only the standard library is imported at module level, so that a task's baseline holds
its own imports and nothing else.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

from _children import Tasks, best_of

TASKS = task = Tasks()


def _vm_rss_kb() -> int | None:
    """The current resident set size (Linux ``VmRSS``), in KB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _baseline() -> dict:
    """Memory once the imports are done: peak so far (ru_maxrss, KB on Linux) and current."""
    gc.collect()
    return {"baseline_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "baseline_rss_kb": _vm_rss_kb()}


def _timed(work):
    """(the baseline report with ``wall_s`` of ``work()``, what ``work()`` returned)."""
    report = _baseline()
    start = time.perf_counter()
    result = work()
    report["wall_s"] = time.perf_counter() - start
    return report, result


def _output_folder(params: dict) -> Path:
    """The task's output folder (``params["out"]``), created; before the baseline, so not counted."""
    out = Path(params["out"])
    out.mkdir(parents=True, exist_ok=True)
    return out


def _body(params: dict) -> dict:
    return params["body"]


# --- the document --------------------------------------------------------------------------


@task
def generate(params: dict) -> dict:
    from synthbio_pipeline.emulator.generate import plan_query, write_result

    report = _baseline()
    start = time.perf_counter()
    plan = plan_query(params["model_id"], _body(params))
    path = write_result(params["result"], plan, genes=params["genes"])
    report["wall_s"] = time.perf_counter() - start
    report["bytes"] = os.path.getsize(path)
    return report


# --- the contenders ------------------------------------------------------------------------


@task
def vendor(params: dict) -> dict:
    """The vendor's path: json.load -> transform_standard_model_output -> DataFrame.to_parquet."""
    import json as json_module

    import pandas as pd  # noqa: F401  (imported by the transformer anyway; counted in the baseline)
    import pyarrow  # noqa: F401  (to_parquet imports it on first use; counted in the baseline)
    from pysynthbio.output_transformers import transform_standard_model_output

    out, report = _output_folder(params), _baseline()
    phases = {}
    start = time.perf_counter()
    with open(params["result"], "rb") as f:
        document = json_module.load(f)
    phases["json.load"] = time.perf_counter() - start
    mark = time.perf_counter()
    result = transform_standard_model_output(document)
    phases["transform_standard_model_output"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result["expression"].to_parquet(out / "expression.parquet")
    phases["expression.to_parquet"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result["metadata"].to_parquet(out / "metadata.parquet")
    phases["metadata.to_parquet"] = time.perf_counter() - mark
    report["wall_s"] = time.perf_counter() - start
    report["phases"] = phases
    report["shape"] = list(result["expression"].shape)
    return report


def _write_part(params: dict, out: Path) -> dict:
    from synthbio_pipeline.formats.parquet import PartTarget, write_part

    target = PartTarget(
        condition=params["condition"],
        model_id=params["model_id"],
        body=_body(params),
        expression_out=out / "part.expression.parquet",
        metadata_out=out / "part.metadata.parquet",
    )
    return write_part(params["result"], target, query_id="bench")


def _merge(out: Path) -> dict:
    from synthbio_pipeline.formats.parquet import merge_parts

    return merge_parts(
        [out / "part.expression.parquet"],
        [out / "part.metadata.parquet"],
        out / "expression.parquet",
        out / "metadata.parquet",
    )


@task
def ours(params: dict) -> dict:
    """Our path, as the workflow runs it: write_part (stream -> part) then merge_parts."""
    import synthbio_pipeline.formats.parquet  # noqa: F401

    out, report = _output_folder(params), _baseline()
    start = time.perf_counter()
    summary = _write_part(params, out)
    middle = time.perf_counter()
    _merge(out)
    end = time.perf_counter()
    report["wall_s"] = end - start
    report["phases"] = {"write_part": middle - start, "merge_parts": end - middle}
    report["shape"] = [summary["samples"], summary["genes"]]
    return report


@task
def write_part(params: dict) -> dict:
    import synthbio_pipeline.formats.parquet  # noqa: F401

    out = _output_folder(params)
    return _timed(lambda: _write_part(params, out))[0]


@task
def merge(params: dict) -> dict:
    """merge_parts of the one part the write-part task left in the same folder."""
    import synthbio_pipeline.formats.parquet  # noqa: F401

    return _timed(lambda: _merge(Path(params["out"])))[0]


@task
def parse(params: dict) -> dict:
    """The streaming parser alone: every sample's counts, nothing kept."""
    from synthbio_pipeline.formats.result_json import open_result

    def count() -> int:
        with open_result(params["result"]) as reader:
            return sum(1 for _ in reader.samples())

    report, samples = _timed(count)
    report["samples"] = samples
    return report


@task
def to_frames(params: dict) -> dict:
    """Our in-memory equivalent of the vendor's frames (holds the whole matrix, by design)."""
    from synthbio_pipeline.formats.result_json import to_frames as build

    report, frames = _timed(lambda: build(params["result"]))
    report["shape"] = list(frames["expression"].shape)
    return report


# --- checks and the layout comparison ---------------------------------------------------


@task
def verify(params: dict) -> dict:
    """Our merged pair, loaded as samples x genes, against the vendor's frames (read back)."""
    import numpy as np
    import pandas as pd

    from synthbio_pipeline.formats.parquet import load_expression

    report = _baseline()
    vendor_dir, ours_dir = Path(params["vendor_out"]), Path(params["ours_out"])
    theirs = pd.read_parquet(vendor_dir / "expression.parquet")
    theirs_meta = pd.read_parquet(vendor_dir / "metadata.parquet")
    mine, mine_meta = load_expression(
        ours_dir / "expression.parquet", ours_dir / "metadata.parquet", orientation="samples"
    )
    checks = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    check("shape", mine.shape == theirs.shape, f"ours {mine.shape}, vendor {theirs.shape}")
    same_genes = list(mine.columns) == list(theirs.columns)
    check("gene ids and order", same_genes, f"{mine.shape[1]} genes")
    if mine.shape == theirs.shape:
        a, b = mine.to_numpy(), theirs.to_numpy()
        differ = int(np.count_nonzero(a != b))
        check("values", differ == 0, f"{a.size:,} values, {differ:,} differ; dtypes ours {a.dtype}, vendor {b.dtype}")
    expected_ids = [f"{params['condition']}_{i}" for i in range(1, len(theirs) + 1)]
    check(
        "sample order",
        list(mine.index) == expected_ids and list(mine_meta.index) == expected_ids,
        "sample_id {condition}_1..n in document order, metadata aligned",
    )
    missing = [c for c in theirs_meta.columns if c not in mine_meta.columns]
    bad = [
        c
        for c in theirs_meta.columns
        if c in mine_meta.columns and [str(v) for v in theirs_meta[c]] != [str(v) for v in mine_meta[c]]
    ]
    check(
        "metadata",
        not missing and not bad,
        f"{len(theirs_meta.columns)} vendor columns; missing {missing or 'none'}; different {bad or 'none'}",
    )
    report["checks"] = checks
    report["ok"] = all(c["ok"] for c in checks)
    return report


_best = best_of


@task
def layout(params: dict) -> dict:
    """The same counts written both ways with pyarrow, then read back whole and in slices."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthbio_pipeline.formats.parquet import GENE_ID, PARQUET_OPTIONS, ROW_GROUP_GENES, SAMPLE_ID, load_expression

    out, report = _output_folder(params), _baseline()
    repeat = params["repeat"]
    source = pq.read_table(Path(params["ours_out"]) / "expression.parquet")
    genes = source.column(0).to_pylist()
    ids = source.column_names[1:]
    matrix = np.column_stack([c.to_numpy() for c in source.columns[1:]]).astype(np.int32)  # genes x samples
    del source
    n_genes, n_samples = matrix.shape
    pick_genes = [genes[i] for i in np.linspace(0, n_genes - 1, min(10, n_genes)).astype(int)]
    pick_samples = [ids[i] for i in np.linspace(0, n_samples - 1, min(10, n_samples)).astype(int)]

    by_gene = pa.Table.from_arrays(
        [pa.array(genes, pa.string())] + [pa.array(matrix[:, j]) for j in range(n_samples)], names=[GENE_ID, *ids]
    )
    by_sample_matrix = np.ascontiguousarray(matrix.T)
    by_sample = pa.Table.from_arrays(
        [pa.array(ids, pa.string())] + [pa.array(by_sample_matrix[:, i]) for i in range(n_genes)],
        names=[SAMPLE_ID, *genes],
    )
    del matrix
    rows = {}

    def layout_row(path: Path, write_s: float) -> dict:
        """A genes-as-rows file's size, write time, best read times (all, 10 genes, 10 samples), row groups."""
        return {
            "bytes": os.path.getsize(path),
            "write_s": write_s,
            "read_all_s": _best(lambda: load_expression(path), repeat)[0],
            "read_10_genes_s": _best(lambda: load_expression(path, genes=pick_genes), repeat)[0],
            "read_10_samples_s": _best(lambda: load_expression(path, samples=pick_samples), repeat)[0],
            "row_groups": pq.ParquetFile(path).metadata.num_row_groups,
        }

    path = out / "genes_as_rows.parquet"
    write_s, _ = _best(
        functools.partial(pq.write_table, by_gene, path, row_group_size=ROW_GROUP_GENES, **PARQUET_OPTIONS), 1
    )
    rows["genes as rows (ours: gene_id + a column per sample)"] = layout_row(path, write_s)
    slice_genes = load_expression(path, genes=pick_genes)[0]
    slice_samples = load_expression(path, samples=pick_samples)[0]

    # Diagnostic: the same file in one row group, to show what ROW_GROUP_GENES costs and buys.
    path = out / "genes_as_rows_one_group.parquet"
    write_s, _ = _best(
        functools.partial(pq.write_table, by_gene, path, row_group_size=max(n_genes, 1), **PARQUET_OPTIONS), 1
    )
    rows["  diagnostic: genes as rows, one row group"] = layout_row(path, write_s)
    del by_gene

    path = out / "samples_as_rows.parquet"
    write_s, _ = _best(functools.partial(pq.write_table, by_sample, path, **PARQUET_OPTIONS), 1)
    del by_sample

    def read_all():
        return pq.read_table(path).to_pandas().set_index(SAMPLE_ID)

    def read_genes():
        return pq.read_table(path, columns=[SAMPLE_ID, *pick_genes]).to_pandas().set_index(SAMPLE_ID)

    def read_samples():
        return pq.read_table(path, filters=[(SAMPLE_ID, "in", pick_samples)]).to_pandas().set_index(SAMPLE_ID)

    rows["samples as rows (vendor frame: sample_id + a column per gene)"] = {
        "bytes": os.path.getsize(path),
        "write_s": write_s,
        "read_all_s": _best(read_all, repeat)[0],
        "read_10_genes_s": _best(read_genes, repeat)[0],
        "read_10_samples_s": _best(read_samples, repeat)[0],
        "row_groups": pq.ParquetFile(path).metadata.num_row_groups,
    }
    # The slices must agree, or the timings compare different work.
    other_genes, other_samples = read_genes(), read_samples()
    report["slices_agree"] = bool(
        np.array_equal(slice_genes.T.loc[other_genes.index, other_genes.columns].to_numpy(), other_genes.to_numpy())
        and np.array_equal(
            slice_samples.T.loc[other_samples.index, other_samples.columns].to_numpy(), other_samples.to_numpy()
        )
    )
    report["layouts"] = rows
    report["repeat"] = repeat
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in TASKS:
        print(f"usage: {argv[0]} {{{','.join(TASKS)}}} PARAMS_JSON REPORT_JSON", file=sys.stderr)
        return 2
    params = json.loads(argv[2])
    report = TASKS[argv[1]](params)
    report["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(argv[3]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
