"""Benchmark: a self-hosted Arrow stream against the result JSON of the same samples, in one run.

    python bench/arrow.py [--samples 1000] [--genes 44590] [--batch 64] [--keep DIR] [--json FILE]

1. Writes a result JSON of N samples x G genes (seeded random counts) and the same samples as
   an Arrow IPC stream file the way a model container sends them (``counts`` list<int64>,
   ``metadata`` struct, ``gene_order`` in the schema metadata; ``--batch`` samples per record
   batch). Not contenders.
2. Runs each path in a fresh interpreter and takes its peak memory from ``os.wait4``:
   - Parquet parts (what the runner writes per condition): ``write_part`` of the JSON
     document, and ``write_arrow_part`` of the stream (read as a file object, batch by batch);
   - the vendor-style DataFrames: ``to_frames`` of the JSON, ``arrow_to_frames`` of the
     stream, and pysynthbio 4.2.4's ``transform_arrow_stream`` of the stream (the vendor's
     Arrow path; it reads the whole table first).
3. Checks that the Arrow part equals the JSON part (both files, values and schema): PASS or
   FAIL; exit 1 on FAIL.

This process imports only the standard library (a child's ``ru_maxrss`` starts from its
parent's high-water mark); the same file is the measuring child (``arrow.py TASK PARAMS REPORT``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _children  # noqa: E402 - bench/ helpers, standard library only

MODEL_ID = "gem-1-bulk"
CONDITION = "bench"
METADATA = {"tissue_ontology_id": "UBERON:0002371", "sex": "female", "sample_type": "primary tissue", "age_years": 52}

# --- child side: one task per fresh interpreter ---------------------------------------------

TASKS = task = _children.Tasks()


def _timed(work) -> dict:
    report = _children.baseline()
    start = time.perf_counter()
    result = work()
    report["wall_s"] = time.perf_counter() - start
    if isinstance(result, dict):
        report.update(result)
    return report


def _part_target(params: dict, prefix: str):
    from synthbio_pipeline.formats.parquet import PartTarget

    out = Path(params["out"])
    return PartTarget(
        condition=CONDITION,
        model_id=MODEL_ID,
        body=params["body"],
        expression_out=out / f"{prefix}.expression.parquet",
        metadata_out=out / f"{prefix}.metadata.parquet",
    )


@task
def make(params: dict) -> dict:
    """A result JSON and an Arrow stream file of the same samples, written side by side.

    Counts are negative binomial-like (Poisson of gamma-distributed gene means), drawn with
    a fixed seed; both files are written batch by batch, so making them needs little memory.
    """
    import numpy as np
    import pyarrow as pa

    start = time.perf_counter()
    n, g, batch = params["samples"], params["genes"], params["batch"]
    rng = np.random.default_rng(42)
    means = rng.gamma(0.5, 40.0, g)
    genes = [f"ENSG{i:011d}" for i in range(g)]
    keys = list(METADATA)
    schema = pa.schema(
        [
            ("counts", pa.list_(pa.int64())),
            ("metadata", pa.struct([(key, pa.int64() if key == "age_years" else pa.string()) for key in keys])),
        ],
        metadata={b"gene_order": json.dumps(genes).encode(), b"request_type": b"baseline", b"model_version": b"bench"},
    )
    with (
        open(params["json"], "w") as document,
        pa.OSFile(params["arrow"], "wb") as sink,
        pa.ipc.new_stream(sink, schema) as writer,
    ):
        document.write(f'{{"gene_order": {json.dumps(genes)}, "model_version": "bench", "outputs": [')
        for first in range(0, n, batch):
            block = rng.poisson(means, size=(min(batch, n - first), g)).astype(np.int64)
            metadata = [dict(METADATA, sex=("female", "male")[(first + i) % 2]) for i in range(len(block))]
            document.write(
                ("," if first else "")
                + ",".join(json.dumps({"counts": row.tolist(), "metadata": meta}) for row, meta in zip(block, metadata))
            )
            offsets = pa.array(np.arange(0, block.size + 1, g, dtype=np.int32))
            counts = pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))
            writer.write_batch(
                pa.RecordBatch.from_arrays([counts, pa.array(metadata, schema.field(1).type)], schema=schema)
            )
        document.write("]}")
    return {
        "make_s": time.perf_counter() - start,
        "json_bytes": os.path.getsize(params["json"]),
        "arrow_bytes": os.path.getsize(params["arrow"]),
    }


@task
def json_part(params: dict) -> dict:
    from synthbio_pipeline.formats.parquet import write_part

    target = _part_target(params, "json")
    return _timed(lambda: write_part(params["json"], target, query_id="bench"))


@task
def arrow_part(params: dict) -> dict:
    from synthbio_pipeline.formats.arrow_stream import write_arrow_part

    target = _part_target(params, "arrow")

    def work():
        with open(params["arrow"], "rb") as stream:  # a file object, read as the socket's body is
            return write_arrow_part(stream, target, query_id="bench")

    return _timed(work)


# The frames tasks import pandas before the baseline: every frame path needs it (pysynthbio imports it).


@task
def json_frames(params: dict) -> dict:
    import pandas  # noqa: F401

    from synthbio_pipeline.formats.result_json import to_frames

    return _timed(lambda: {"shape": list(to_frames(params["json"])["expression"].shape)})


@task
def arrow_frames(params: dict) -> dict:
    import pandas  # noqa: F401

    from synthbio_pipeline.formats.arrow_stream import arrow_to_frames

    return _timed_stream_frames(params["arrow"], arrow_to_frames)


@task
def vendor_arrow_frames(params: dict) -> dict:
    from pysynthbio.arrow_transformers import transform_arrow_stream

    return _timed_stream_frames(params["arrow"], transform_arrow_stream)


def _timed_stream_frames(path: str, transform) -> dict:
    """:func:`_timed` of ``transform`` (stream to frames) over the Arrow stream file at ``path``."""

    def work():
        with open(path, "rb") as stream:
            return {"shape": list(transform(stream)["expression"].shape)}

    return _timed(work)


@task
def verify(params: dict) -> dict:
    """The Arrow part pair against the JSON part pair: same schema, same values, same label."""
    import pyarrow.parquet as pq

    out, checks = Path(params["out"]), []
    for kind in ("expression", "metadata"):
        arrow = pq.read_table(out / f"arrow.{kind}.parquet")
        from_json = pq.read_table(out / f"json.{kind}.parquet")
        labels = [json.loads(t.schema.metadata[b"synthbio"]) for t in (arrow, from_json)]
        for label in labels:
            label.pop("run_id", None)
        same = arrow.schema.remove_metadata() == from_json.schema.remove_metadata() and arrow.equals(from_json)
        checks.append({"check": kind, "ok": bool(same and labels[0] == labels[1]), "shape": list(arrow.shape)})
    return {"checks": checks, "ok": all(check["ok"] for check in checks)}


def child(argv: list[str]) -> int:
    params = json.loads(argv[2])
    report = TASKS[argv[1]](params)
    report["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(argv[3]).write_text(json.dumps(report))
    return 0


# --- parent side ---------------------------------------------------------------------------

ROWS = [
    ("json-part", "JSON path: write_part(result.json) -> part pair"),
    ("arrow-part", "Arrow path: write_arrow_part(stream) -> part pair"),
    ("json-frames", "JSON path: to_frames(result.json)"),
    ("arrow-frames", "Arrow path: arrow_to_frames(stream)"),
    ("vendor-arrow-frames", "vendor: pysynthbio transform_arrow_stream(stream)"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1000, help="samples (default 1000)")
    parser.add_argument("--genes", type=int, default=44_590, help="genes per sample (default 44590)")
    parser.add_argument("--batch", type=int, default=64, help="samples per Arrow record batch (default 64)")
    parser.add_argument("--keep", metavar="DIR", help="keep the inputs and outputs in DIR")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args(argv)
    if min(args.samples, args.genes, args.batch) < 1:
        parser.error("--samples, --genes and --batch must be at least 1")
    cleanup = None
    if args.keep:
        workdir = Path(args.keep).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="synthbio-bench-arrow-")
        workdir = Path(cleanup.name)
    try:
        return _run(args, workdir)
    except _children.ChildFailed as error:
        print(f"\nbenchmark error: {error}", file=sys.stderr)
        return 2
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def _run(args, workdir: Path) -> int:
    script = Path(__file__).resolve()
    n, g = args.samples, args.genes
    body = {"sampling_strategy": "sample generation", "seed": 42, "inputs": [{"metadata": METADATA, "num_samples": n}]}
    params = {
        "json": str(workdir / "result.json"),
        "arrow": str(workdir / "result.arrows"),
        "out": str(workdir),
        "body": body,
        "samples": n,
        "genes": g,
        "batch": args.batch,
    }
    print(f"Arrow benchmark: {n} samples x {g} genes, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    made = _children.run_task(script, "make", params, workdir)
    print(
        f"inputs (not contenders, {made['make_s']:.1f} s): result.json {made['json_bytes'] / 1e6:.0f} MB and the "
        f"same samples as an Arrow stream, {args.batch} per record batch, {made['arrow_bytes'] / 1e6:.0f} MB"
    )
    reports = {name: _children.run_task(script, name, params, workdir) for name, _ in ROWS}
    verify = _children.run_task(script, "verify", params, workdir)

    header = ("path", "wall s", "base MB", "peak MB", "peak-base MB")
    lines = [header]
    for name, label in ROWS:
        report = reports[name]
        base, peak = report["baseline_maxrss_kb"] / 1024, report["peak_kb"] / 1024
        lines.append((label, f"{report['wall_s']:.2f}", f"{base:.0f}", f"{peak:.0f}", f"{peak - base:.0f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for index, line in enumerate(lines):
        print("  ".join([line[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(line[1:], widths[1:])]))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    json_part, arrow_part = reports["json-part"], reports["arrow-part"]
    print(
        f"\nbenchmark line ({n} samples x {g} genes): Arrow path {arrow_part['wall_s']:.2f} s, peak "
        f"{arrow_part['peak_kb'] / 1024:.0f} MB; JSON path {json_part['wall_s']:.2f} s, peak "
        f"{json_part['peak_kb'] / 1024:.0f} MB (Parquet part pair, each in a fresh interpreter)"
    )
    for check in verify["checks"]:
        verdict = "ok" if check["ok"] else "DIFFERS"
        print(f"check: Arrow {check['check']} part equals the JSON one ({check['shape']}): {verdict}")
    print("PASS" if verify["ok"] else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps({"make": made, "runs": reports, "verify": verify}, indent=2))
    return 0 if verify["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in TASKS:
        sys.exit(child(sys.argv))
    sys.exit(main())
