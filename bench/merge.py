"""Benchmark: merging K per-condition Parquet parts into the expression + metadata pair (target P3).

    python bench/merge.py [--parts 100,1000] [--samples-per-part 10] [--genes 44590] [--keep DIR]

1. Writes K parts of S samples x G genes in ``write_part``'s layout (genes as rows, one int32
   column per sample, row groups of ``ROW_GROUP_GENES`` genes, negative binomial counts) and
   their metadata parts, once per K (reused from ``--keep DIR`` when already there).
2. Runs ``parquet.merge_parts`` of the K parts in a fresh interpreter (``bench/_merge_tasks.py``)
   and takes its peak memory from ``os.wait4`` (``ru_maxrss``): wall, peak, peak at the largest
   K over the smallest (target: at most 1.3x).
3. The anchor, in the same run: rewriting the same bytes with pyarrow, ``pq.read_table`` of
   the merged file then ``pq.write_table`` with the same options and row groups (target: our
   merge at most 2x the anchor's time). ``--reencode`` adds the previous merge (decode each
   gene block of every part, write it with ``ParquetWriter``) as a reference row.
4. Reads slices of the largest merged file with ``parquet.load_expression``: 10 genes spread
   over the file for all samples, 10 adjacent genes, 10 samples for all genes, and the footer
   alone (best of ``--repeat``; target: well under a second).

This process imports only the standard library (a child's ru_maxrss starts at its parent's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import _children
from _children import ChildFailed

HERE = Path(__file__).resolve().parent
TASKS = HERE / "_merge_tasks.py"
#: Target P3: peak at the largest K at most 1.3x the peak at the smallest; merge at most 2x
#: the anchor's time; slices "well under a second" (taken here as at most 0.5 s).
SCALING, SPEED, SLICE_S = 1.3, 2.0, 0.5


def run_task(name: str, params: dict, workdir: Path) -> dict:
    return _children.run_task(TASKS, name, params, workdir)


def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda cells: "  ".join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def parts_for(k: int, args, root: Path) -> tuple[Path, dict | None]:
    folder = root / f"parts_{k}x{args.samples_per_part}x{args.genes}"
    done = folder / "DONE"
    if done.exists():
        return folder, None
    shutil.rmtree(folder, ignore_errors=True)
    report = run_task(
        "make-parts",
        {"seed": 42, "genes": args.genes, "samples_per_part": args.samples_per_part, "k": k, "parts": str(folder)},
        root,
    )
    done.write_text("ok\n")
    return folder, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="100,1000", help="part counts K, comma-separated (default 100,1000)")
    parser.add_argument("--samples-per-part", type=int, default=10)
    parser.add_argument("--genes", type=int, default=44590)
    parser.add_argument("--repeat", type=int, default=3, help="slice reads: best of R (default 3)")
    parser.add_argument("--keep", help="keep parts and outputs here (parts are reused when present)")
    parser.add_argument("--reencode", action="store_true", help="also time the previous, re-encoding merge")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    ks = sorted({int(k) for k in args.parts.split(",")})
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
        return _run(args, ks, root)
    with tempfile.TemporaryDirectory(prefix="synthbio-merge-") as folder:
        return _run(args, ks, Path(folder))


def _run(args, ks: list[int], root: Path) -> int:
    print(
        f"merge benchmark: K = {', '.join(map(str, ks))} parts of {args.samples_per_part} samples x "
        f"{args.genes} genes, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, work in {root}"
    )
    figures: dict = {"ks": ks, "merge": {}, "anchor": {}, "reencode": {}}
    try:
        for k in ks:
            folder, made = parts_for(k, args, root)
            if made:
                print(
                    f"parts: K = {k}: {made['bytes'] / 1e6:,.1f} MB written in {made['wall_s']:.1f} s (not a contender)"
                )
            else:
                print(f"parts: K = {k}: reused from {folder}")
            out = root / f"merged_{k}"
            out.mkdir(exist_ok=True)
            figures["merge"][k] = run_task(
                "merge",
                {
                    "k": k,
                    "parts": str(folder),
                    "expression_out": str(out / "expression.parquet"),
                    "metadata_out": str(out / "metadata.parquet"),
                },
                root,
            )
            figures["anchor"][k] = run_task(
                "anchor",
                {"expression_in": str(out / "expression.parquet"), "expression_out": str(out / "anchor.parquet")},
                root,
            )
            (out / "anchor.parquet").unlink()
            if args.reencode:
                figures["reencode"][k] = run_task(
                    "reencode", {"k": k, "parts": str(folder), "expression_out": str(out / "reencoded.parquet")}, root
                )
                (out / "reencoded.parquet").unlink()
        largest = root / f"merged_{ks[-1]}" / "expression.parquet"
        figures["project"] = run_task("project", {"expression_in": str(largest), "repeat": args.repeat}, root)
    except ChildFailed as failure:
        print(f"a measured step crashed: {failure}")
        return 2
    _print(args, ks, figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0 if figures["project"]["slices_ok"] else 1


def step_row(step: str, figures: dict, out_mb: str, versus: str) -> list[str]:
    """One row of the merge table: a step's wall and CPU seconds, base and peak MB, output MB, comparison."""
    return [
        step,
        f"{figures['wall_s']:.2f}",
        f"{figures['cpu_s']:.2f}",
        mb(figures["baseline_maxrss_kb"]),
        mb(figures["peak_kb"]),
        out_mb,
        versus,
    ]


def _print(args, ks, figures) -> None:
    merge, anchor, reencode, project = figures["merge"], figures["anchor"], figures["reencode"], figures["project"]
    print(
        f"\n== merge_parts: K parts of {args.samples_per_part} samples x {args.genes} genes, each step in a fresh "
        "process =="
    )
    print("wall s: timed inside the child; peak MB: the child's ru_maxrss from os.wait4; base MB: after imports.")
    rows = []
    for k in ks:
        m, a = merge[k], anchor[k]
        rows.append(
            step_row(
                f"merge_parts, K = {k} ({k * args.samples_per_part} samples)",
                m,
                f"{m['bytes'] / 1e6:,.1f}",
                f"{a['wall_s'] / m['wall_s']:.1f}x faster",
            )
        )
        rows.append(
            step_row(f"  anchor: pq.read_table + pq.write_table, K = {k}", a, f"{a['bytes'] / 1e6:,.1f}", "anchor")
        )
        if k in reencode:
            r = reencode[k]
            rows.append(
                step_row(
                    f"  ref: previous merge (decode + ParquetWriter), K = {k}",
                    r,
                    "",
                    f"{a['wall_s'] / r['wall_s']:.2f}x",
                )
            )
    table(["step", "wall s", "cpu s", "base MB", "peak MB", "out MB", "vs anchor"], rows)
    for k in ks:
        a = anchor[k]["phases"]
        print(
            f"anchor phases, K = {k}: read_table {a['read_table']:.2f} s, write_table {a['write_table']:.2f} s; "
            f"merge arrow pool peak {merge[k]['pool_max_bytes'] / 1e6:.1f} MB ({merge[k]['pool']})"
        )
    print(f"this parent process peaked at {mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)} MB")

    print(
        f"\n== Slices of the K = {ks[-1]} merged file ({project['samples']} samples, {project['row_groups']} row "
        f"groups, footer {project['footer_bytes'] / 1e6:.1f} MB) with load_expression, best of {args.repeat} =="
    )
    slices = [
        ("footer alone (pq.read_metadata)", project["footer_s"]),
        ("10 genes spread over the file, all samples", project["genes_spread_s"]),
        ("10 adjacent genes, all samples", project["genes_adjacent_s"]),
        ("10 samples spread over the file, all genes", project["samples_s"]),
    ]
    table(["read", "s", f"target <= {SLICE_S} s"], [[n, f"{s:.3f}", met(s <= SLICE_S)] for n, s in slices])
    print(f"slices hold the right values: {'yes' if project['slices_ok'] else 'NO'}")

    low, high = merge[ks[0]], merge[ks[-1]]
    scaling = high["peak_kb"] / low["peak_kb"]
    speed = high["wall_s"] / anchor[ks[-1]]["wall_s"]
    print("\n== Verdict (P3) ==")
    print(
        f"peak memory: {mb(low['peak_kb'])} MB at K = {ks[0]}, {mb(high['peak_kb'])} MB at K = {ks[-1]}: "
        f"{scaling:.2f}x vs <= {SCALING}x: {met(scaling <= SCALING)}"
    )
    for k in ks:
        ratio = merge[k]["wall_s"] / anchor[k]["wall_s"]
        print(
            f"time at K = {k}: merge {merge[k]['wall_s']:.2f} s = {ratio:.2f}x the anchor's "
            f"{anchor[k]['wall_s']:.2f} s vs <= {SPEED}x: {met(ratio <= SPEED)}"
        )
    worst = max(s for _, s in slices)
    print(f"slices: slowest {worst:.3f} s vs <= {SLICE_S} s: {met(worst <= SLICE_S)}")
    figures["verdict"] = {"scaling": scaling, "time_ratio_largest": speed, "slowest_slice_s": worst}


if __name__ == "__main__":
    sys.exit(main())
