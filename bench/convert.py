"""Benchmark: one bulk result JSON to Parquet, our path against the vendor's, in one run.

    python bench/convert.py [--samples 1000] [--genes 44590] [--keep DIR] [--scaling 100,3000]

1. Writes a "sample generation" result of N samples x G genes with the emulator's generator
   (not a contender; its size and time are printed).
2. Runs each path in a fresh interpreter (bench/_measure.py) and takes its peak memory from
   the resource usage ``os.wait4`` returns for that child (``ru_maxrss``, KB on Linux):
   - the vendor's path (the anchor): json.load -> pysynthbio 4.2.4
     transform_standard_model_output -> expression/metadata ``DataFrame.to_parquet``;
   - ours: ``parquet.write_part`` (streaming parse -> Parquet part) then ``merge_parts`` of that
     one part, together and each alone; the streaming parser alone; ``result_json.to_frames``.
3. Checks that our merged expression, loaded samples x genes, equals the vendor's (values,
   gene order) and that the metadata agrees: prints PASS or FAIL, exits 1 on FAIL.
4. Writes the same counts as genes-as-rows and as samples-as-rows Parquet and times writing,
   reading back and reading slices.
5. With ``--scaling``, measures our path again at other sample counts, for peak memory vs N.

This process imports only the standard library and does no heavy work itself: on Linux a
child's ``ru_maxrss`` starts from its parent's high-water mark (the address space it was
forked from counts until exec), so a large parent would inflate every child's peak. The
parent's own peak is printed as the floor of every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import _children
from _children import ChildFailed

HERE = Path(__file__).resolve().parent
MEASURE = HERE / "_measure.py"
MODEL_ID = "gem-1-bulk"
CONDITION = "bench"
METADATA = {"tissue_ontology_id": "UBERON:0002371", "sex": "female", "sample_type": "primary tissue", "age_years": 52}
#: Target P1: at N = 1,000, at least 8x faster and at most 1/10 of the anchor's peak memory;
#: peak memory at N = 3,000 at most 1.3x the peak at N = 100.
P1_N, P1_SPEEDUP, P1_MEMORY, P1_SCALING = 1000, 8.0, 0.10, 1.3

HEADERS = ("path", "wall s", "proc s", "cpu s", "base MB", "peak MB", "peak-base", "time vs anchor", "memory vs anchor")


def body(samples: int) -> dict:
    return {
        "sampling_strategy": "sample generation",
        "seed": 42,
        "inputs": [{"metadata": dict(METADATA), "num_samples": samples}],
    }


def run_task(name: str, params: dict, workdir: Path) -> dict:
    return _children.run_task(MEASURE, name, params, workdir)


def combine(reports: list[dict]) -> dict:
    """Several runs of one task: the fastest run's figures, with the highest peak of all."""
    best = dict(min(reports, key=lambda report: report["wall_s"]))
    best["peak_kb"] = max(report["peak_kb"] for report in reports)
    best["all_wall_s"] = [report["wall_s"] for report in reports]
    return best


def mb_kb(kb: float) -> float:
    return kb / 1024


def fmt_row(cells: list[str], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    return "  ".join([first] + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    print(fmt_row(rows[0], widths))
    print("  ".join("-" * w for w in widths))
    for row in rows[1:]:
        print(fmt_row(row, widths))


def measurement_row(label: str, report: dict, anchor: dict | None) -> list[str]:
    base = mb_kb(report["baseline_maxrss_kb"])
    peak = mb_kb(report["peak_kb"])
    if anchor is None:
        speed, memory = "anchor", "anchor"
    else:
        speed = f"{anchor['wall_s'] / report['wall_s']:.1f}x faster" if report["wall_s"] > 0 else "-"
        memory = f"{report['peak_kb'] / anchor['peak_kb']:.3f}"
    return [
        label,
        f"{report['wall_s']:.2f}",
        f"{report['process_s']:.2f}",
        f"{report['cpu_s']:.2f}",
        f"{base:.0f}",
        f"{peak:.0f}",
        f"{peak - base:.0f}",
        speed,
        memory,
    ]


def generate(samples: int, genes: int, workdir: Path) -> tuple[Path, dict]:
    result = workdir / f"result_{samples}x{genes}.json"
    report = run_task(
        "generate", {"result": str(result), "model_id": MODEL_ID, "body": body(samples), "genes": genes}, workdir
    )
    print(
        f"result document: {result.name}, {report['bytes'] / 1e6:.1f} MB ({samples} samples x {genes} genes), "
        f"written by the emulator's generator in {report['wall_s']:.1f} s (not a contender)"
    )
    return result, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1000, help="samples in the result (default 1000)")
    parser.add_argument("--genes", type=int, default=44_590, help="genes per sample (default 44590)")
    parser.add_argument("--keep", metavar="DIR", help="keep every file (result JSON, Parquet outputs) in DIR")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run every contender this many times (interleaved); report the fastest run's time "
        "and the highest peak (default 1)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="reads of the layout comparison are timed this many times, best kept (default 3)",
    )
    parser.add_argument(
        "--scaling",
        metavar="N,N,...",
        default="",
        help="also measure our path (write_part + merge) at these sample counts, for peak vs N",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args(argv)
    if min(args.samples, args.genes, args.repeat, args.runs) < 1:
        parser.error("--samples, --genes, --runs and --repeat must be at least 1")
    try:
        scaling = sorted({int(n) for n in args.scaling.split(",") if n.strip()})
    except ValueError:
        parser.error("--scaling takes sample counts separated by commas, like 100,3000")
    if any(n < 1 for n in scaling):
        parser.error("--scaling sample counts must be at least 1")

    if args.keep:
        workdir = Path(args.keep).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="synthbio-bench-")
        workdir = Path(cleanup.name)
    try:
        return _run(args, scaling, workdir)
    except ChildFailed as exc:
        print(f"\nbenchmark error: {exc}", file=sys.stderr)
        return 2
    finally:
        if cleanup is not None:
            cleanup.cleanup()


def _run(args, scaling: list[int], workdir: Path) -> int:
    n, g = args.samples, args.genes
    print(
        f"conversion benchmark: {n} samples x {g} genes, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"work in {workdir}"
    )
    result, generated = generate(n, g, workdir)
    common = {"result": str(result), "model_id": MODEL_ID, "condition": CONDITION, "body": body(n)}

    contenders = {
        "vendor": ("vendor", {**common, "out": str(workdir / "vendor")}),
        "ours": ("ours", {**common, "out": str(workdir / "ours")}),
        "write_part": ("write-part", {**common, "out": str(workdir / "ours_split")}),
        "merge": ("merge", {**common, "out": str(workdir / "ours_split")}),  # the part write-part just left
        "parse": ("parse", common),
        "to_frames": ("to-frames", common),
    }
    # Rounds interleave the contenders, so that a slow spell of the machine hits them all.
    rounds = [
        {key: run_task(task, params, workdir) for key, (task, params) in contenders.items()} for _ in range(args.runs)
    ]
    runs = {key: combine([round_[key] for round_ in rounds]) for key in contenders}
    verify = run_task(
        "verify", {**common, "vendor_out": str(workdir / "vendor"), "ours_out": str(workdir / "ours")}, workdir
    )
    layout = run_task(
        "layout", {"ours_out": str(workdir / "ours"), "out": str(workdir / "layout"), "repeat": args.repeat}, workdir
    )
    scaled = {}
    for samples in scaling:
        if samples == n:
            scaled[samples] = runs["ours"]
            continue
        print(f"scaling: N = {samples}")
        other, _ = generate(samples, g, workdir)
        scaled[samples] = run_task(
            "ours",
            {**common, "result": str(other), "body": body(samples), "out": str(workdir / f"ours_{samples}")},
            workdir,
        )
        if not args.keep:
            other.unlink()
    parent_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    anchor = runs["vendor"]
    ours = runs["ours"]
    print()
    print(f"== One result JSON ({result.stat().st_size / 1e6:.0f} MB, {n} x {g}) to expression + metadata Parquet ==")
    print("wall s: the work, timed inside the child; proc s: the whole child (interpreter start and imports too);")
    print("base MB: peak RSS after imports; peak MB: the child's ru_maxrss from os.wait4 (nothing subtracted).")
    if args.runs > 1:
        print(f"each path ran {args.runs} times, interleaved: the fastest run's times, the highest peak of all runs.")
    print()
    rows = [list(HEADERS)]
    rows.append(measurement_row("vendor: json.load -> transform -> to_parquet", anchor, None))
    rows.append(measurement_row("ours: write_part + merge_parts", ours, anchor))
    rows.append(measurement_row("  ours: write_part alone (stream -> part)", runs["write_part"], anchor))
    rows.append(measurement_row("  ours: merge_parts alone (1 part)", runs["merge"], anchor))
    rows.append(measurement_row("ref: open_result().samples() parse only", runs["parse"], anchor))
    rows.append(measurement_row("ref: result_json.to_frames (in-memory frames)", runs["to_frames"], anchor))
    print_table(rows)
    print()
    print("vendor phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in anchor["phases"].items()))
    print("ours phases (same process): " + ", ".join(f"{k} {v:.2f} s" for k, v in ours["phases"].items()))
    print(f"this parent process peaked at {mb_kb(parent_kb):.0f} MB (the floor of every child's peak on Linux)")

    print()
    print(
        f"== Layout: the same {n} x {g} int32 counts written both ways with pyarrow "
        f"(zstd level 1, no dictionary; reads: best of {layout['repeat']}) =="
    )
    lrows = [["layout", "size MB", "row groups", "write s", "read all s", "10 genes s", "10 samples s"]]
    ordered = sorted(layout["layouts"].items(), key=lambda item: "diagnostic" in item[0])
    for label, figures in ordered:
        lrows.append(
            [
                label,
                f"{figures['bytes'] / 1e6:.1f}",
                str(figures["row_groups"]),
                f"{figures['write_s']:.2f}",
                f"{figures['read_all_s']:.2f}",
                f"{figures['read_10_genes_s']:.3f}",
                f"{figures['read_10_samples_s']:.3f}",
            ]
        )
    print_table(lrows)
    print(
        "genes-as-rows reads use parquet.load_expression(genes=..., samples=...); samples-as-rows reads use "
        "column projection (genes) and a sample_id filter (samples)."
    )
    if not layout["slices_agree"]:
        print("WARNING: the slices read from the two layouts differ")

    if scaled:
        print()
        print(f"== Our path (write_part + merge_parts) peak memory vs N ({g} genes) ==")
        smallest = min(scaled)
        srows = [["N", "wall s", "base MB", "peak MB", "peak-base", f"peak / peak at N={smallest}"]]
        for samples, report in sorted(scaled.items()):
            srows.append(
                [
                    str(samples),
                    f"{report['wall_s']:.2f}",
                    f"{mb_kb(report['baseline_maxrss_kb']):.0f}",
                    f"{mb_kb(report['peak_kb']):.0f}",
                    f"{mb_kb(report['peak_kb'] - report['baseline_maxrss_kb']):.0f}",
                    f"{report['peak_kb'] / scaled[smallest]['peak_kb']:.2f}",
                ]
            )
        print_table(srows)

    print()
    print("== Correctness ==")
    for check in verify["checks"]:
        print(f"  {'ok  ' if check['ok'] else 'FAIL'} {check['check']}: {check['detail']}")
    print(
        f"correctness: {'PASS' if verify['ok'] else 'FAIL'} (our merged expression via "
        "load_expression(orientation='samples') vs the vendor's expression DataFrame, read back from its Parquet)"
    )

    print()
    print("== Verdict ==")
    growth_mb = mb_kb(ours["peak_kb"] - ours["baseline_maxrss_kb"])
    matrix_mb = n * g * 4 / 2**20
    if len(scaled) >= 2:
        lo, hi = min(scaled), max(scaled)
        ratio = scaled[hi]["peak_kb"] / scaled[lo]["peak_kb"]
        grow = [mb_kb(scaled[k]["peak_kb"] - scaled[k]["baseline_maxrss_kb"]) for k in (lo, hi)]
        bounded = (
            f"{'flat in N' if ratio <= P1_SCALING else 'NOT flat in N'} (peak x{ratio:.2f} for "
            f"x{hi / lo:.0f} samples; flat = at most x{P1_SCALING}): peak-base {grow[0]:.0f} MB at N={lo}, "
            f"{grow[1]:.0f} MB at N={hi}; whole int32 matrix at N={hi}: {hi * g * 4 / 2**20:.0f} MB"
        )
    elif matrix_mb < 64:
        bounded = f"not judged at this size (the whole int32 matrix is only {matrix_mb:.0f} MB; use --scaling)"
    else:
        bounded = (
            f"{'below' if growth_mb < matrix_mb else 'NOT below'} the matrix: peak-base {growth_mb:.0f} MB, "
            f"the whole matrix is {matrix_mb:.0f} MB as int32 (a single-run proxy; --scaling shows peak vs N)"
        )
    print(f"conversion: correct: {'yes' if verify['ok'] else 'NO'}; bounded memory: {bounded}")
    at = "" if n == P1_N else f" (the targets are stated for N = {P1_N}; this run is N = {n})"
    for what, report in (
        ("result JSON -> part (write_part)", runs["write_part"]),
        ("-> merged pair (write_part + merge_parts)", ours),
    ):
        speed = anchor["wall_s"] / report["wall_s"]
        share = report["peak_kb"] / anchor["peak_kb"]
        print(
            f"P1{at}, {what}: time {report['wall_s']:.2f} s vs anchor {anchor['wall_s']:.2f} s = "
            f"{speed:.1f}x vs >= {P1_SPEEDUP:.0f}x: {'MET' if speed >= P1_SPEEDUP else 'NOT MET'}; "
            f"peak {mb_kb(report['peak_kb']):.0f} MB vs anchor {mb_kb(anchor['peak_kb']):.0f} MB = {share:.3f} "
            f"vs <= {P1_MEMORY:.2f}: {'MET' if share <= P1_MEMORY else 'NOT MET'}"
        )
    if len(scaled) >= 2:
        lo, hi = min(scaled), max(scaled)
        ratio = scaled[hi]["peak_kb"] / scaled[lo]["peak_kb"]
        print(
            f"P1 scaling (write_part + merge_parts): peak at N={hi} {mb_kb(scaled[hi]['peak_kb']):.0f} MB is "
            f"{ratio:.2f}x the peak at N={lo} ({mb_kb(scaled[lo]['peak_kb']):.0f} MB) vs <= {P1_SCALING}x"
            + (
                f": {'MET' if ratio <= P1_SCALING else 'NOT MET'}"
                if (lo, hi) == (100, 3000)
                else " (the target compares N=100 with N=3000)"
            )
        )

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "samples": n,
                    "genes": g,
                    "cpus": os.cpu_count(),
                    "result_bytes": generated["bytes"],
                    "generate_s": generated["wall_s"],
                    "runs": runs,
                    "verify": verify,
                    "layout": layout,
                    "scaling": {str(k): v for k, v in scaled.items()},
                    "parent_maxrss_kb": parent_kb,
                },
                indent=1,
            )
        )
    return 0 if verify["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
