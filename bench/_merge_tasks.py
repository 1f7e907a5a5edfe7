"""One measured task of the merge benchmark, run in a fresh interpreter by ``merge.py``.

    python bench/_merge_tasks.py TASK PARAMS_JSON REPORT_JSON

Like ``_measure.py``: heavy imports happen inside the task, the memory after them is the
*baseline*, and the parent takes the process's peak from ``os.wait4``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from _children import Tasks, baseline, best_of

TASKS = task = Tasks()


def _parts(params: dict) -> tuple[list[Path], list[Path]]:
    folder = Path(params["parts"])
    k = params["k"]
    return (
        [folder / f"c{i:04d}.expression.parquet" for i in range(k)],
        [folder / f"c{i:04d}.metadata.parquet" for i in range(k)],
    )


@task
def make_parts(params: dict) -> dict:
    """K parts of S samples x G genes in write_part's layout: the schema, blocks and options it uses."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthbio_pipeline.formats import parquet

    report = baseline()
    start = time.perf_counter()
    rng = np.random.default_rng(params["seed"])
    n_genes, per_part = params["genes"], params["samples_per_part"]
    genes = pa.array([f"ENSG{i:011d}" for i in range(n_genes)], pa.string())
    # Count-like values: a gene mean from a log-normal, negative binomial (dispersion 0.5) draws around it.
    means = np.minimum(rng.lognormal(2.0, 2.0, n_genes), 1e5)
    p = 2.0 / (2.0 + means)
    folder = Path(params["parts"])
    folder.mkdir(parents=True, exist_ok=True)
    expression_paths, metadata_paths = _parts(params)
    total = 0
    for i, (expression, metadata) in enumerate(zip(expression_paths, metadata_paths)):
        condition = f"c{i:04d}"
        ids = parquet.sample_ids(condition, per_part)
        label = {
            "values": parquet.COUNTS,
            "backend": "emulator",
            "model_id": "gem-1-bulk",
            "orientation": "genes x samples",
        }
        schema = parquet.expression_schema(ids, pa.int32(), label)
        counts = rng.negative_binomial(2, p[:, None], size=(n_genes, per_part)).astype(np.int32)
        with pq.ParquetWriter(expression, schema, **parquet.PARQUET_OPTIONS) as out:
            for first in range(0, n_genes, parquet.ROW_GROUP_GENES):
                last = min(first + parquet.ROW_GROUP_GENES, n_genes)
                columns = [genes[first:last]] + [pa.array(counts[first:last, j]) for j in range(per_part)]
                out.write_batch(pa.record_batch(columns, schema=schema))
        frame = pd.DataFrame(
            {
                parquet.SAMPLE_ID: ids,
                "condition": condition,
                "backend": "emulator",
                "model_id": "gem-1-bulk",
                "query_id": f"q-{condition}",
                "sex": pd.array(["female"] * per_part, dtype="string"),
            }
        )
        parquet.write_metadata(frame, metadata, label)
        total += os.path.getsize(expression)
    report["wall_s"] = time.perf_counter() - start
    report["bytes"] = total
    return report


def _pool(report: dict) -> None:
    import pyarrow as pa

    pool = pa.default_memory_pool()
    report["pool"] = pool.backend_name
    report["pool_max_bytes"] = pool.max_memory()


@task
def merge(params: dict) -> dict:
    """parquet.merge_parts of the K parts."""
    from synthbio_pipeline.formats import parquet

    expression, metadata = _parts(params)
    report = baseline()
    start = time.perf_counter()
    parquet.merge_parts(expression, metadata, params["expression_out"], params["metadata_out"])
    report["wall_s"] = time.perf_counter() - start
    report["bytes"] = os.path.getsize(params["expression_out"])
    _pool(report)
    return report


@task
def reencode(params: dict) -> dict:
    """The previous merge: decode every part's gene block, write it with pyarrow's ParquetWriter."""
    from synthbio_pipeline.formats import parquet

    expression, metadata = _parts(params)
    report = baseline()
    start = time.perf_counter()
    schemas = [parquet.pq.read_schema(path) for path in expression]
    ids = [name for schema in schemas for name in schema.names[1:]]
    schema = parquet.expression_schema(ids, parquet.pa.int32(), {"values": parquet.COUNTS})
    parquet.reencode_expression(expression, params["expression_out"], schema)
    report["wall_s"] = time.perf_counter() - start
    _pool(report)
    return report


@task
def anchor(params: dict) -> dict:
    """Rewrite the same bytes with pyarrow: read the merged file whole, write it with the same options."""
    import pyarrow.parquet as pq

    from synthbio_pipeline.formats import parquet

    report = baseline()
    start = time.perf_counter()
    table = pq.read_table(params["expression_in"])
    middle = time.perf_counter()
    pq.write_table(table, params["expression_out"], row_group_size=parquet.ROW_GROUP_GENES, **parquet.PARQUET_OPTIONS)
    report["wall_s"] = time.perf_counter() - start
    report["phases"] = {"read_table": middle - start, "write_table": time.perf_counter() - middle}
    report["bytes"] = os.path.getsize(params["expression_out"])
    _pool(report)
    return report


_best = best_of


@task
def project(params: dict) -> dict:
    """Slices of the merged file with load_expression, and checks they hold the right values."""
    import numpy as np
    import pyarrow.parquet as pq

    from synthbio_pipeline.formats.parquet import load_expression

    path, repeat = params["expression_in"], params["repeat"]
    report = baseline()
    footer_s, footer = _best(lambda: pq.read_metadata(path), repeat)
    ids = footer.schema.names[1:]
    gene_ids = pq.read_table(path, columns=["gene_id"]).column(0).to_pylist()
    spread = [gene_ids[i] for i in np.linspace(0, len(gene_ids) - 1, min(10, len(gene_ids))).astype(int)]
    adjacent = gene_ids[len(gene_ids) // 2 : len(gene_ids) // 2 + 10]
    samples = [ids[i] for i in np.linspace(0, len(ids) - 1, min(10, len(ids))).astype(int)]
    report["footer_s"] = footer_s
    report["footer_bytes"] = footer.serialized_size
    report["row_groups"] = footer.num_row_groups
    report["samples"] = len(ids)
    report["genes_spread_s"], by_genes = _best(lambda: load_expression(path, genes=spread)[0], repeat)
    report["genes_adjacent_s"], _ = _best(lambda: load_expression(path, genes=adjacent)[0], repeat)
    report["samples_s"], by_samples = _best(lambda: load_expression(path, samples=samples)[0], repeat)
    # The slices must be the right ones, or the timings measure something else.
    one = pq.ParquetFile(path).read(columns=["gene_id", samples[3]])
    row = gene_ids.index(spread[4])
    report["slices_ok"] = bool(
        by_genes.shape == (len(spread), len(ids))
        and list(by_genes.index) == spread
        and by_samples.shape == (len(gene_ids), len(samples))
        and list(by_samples.columns) == samples
        and by_genes.loc[spread[4], samples[3]] == one.column(1)[row].as_py()
        and np.array_equal(by_samples[samples[3]].to_numpy(), one.column(1).to_numpy())
    )
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in TASKS:
        print(f"usage: {argv[0]} {{{','.join(TASKS)}}} PARAMS_JSON REPORT_JSON", file=sys.stderr)
        return 2
    report = TASKS[argv[1]](json.loads(argv[2]))
    report["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(argv[3]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
