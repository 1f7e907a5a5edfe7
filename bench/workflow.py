"""Benchmark: the workflow at scale, against the emulator, next to its anchors, in one run.

    python bench/workflow.py                 # everything below (about 12 minutes)
    python bench/workflow.py --only p2       # or p1, p4; repeatable

P2, many conditions at once: 200 one-sample bulk conditions, emulator latency L = 5 s and a
   cap of C = 20 queries in flight (the emulator refuses the 21st with 429), run by
   ``snakemake --cores 2 --resources synthbio_api=20``. Target: at most 1.25 x the ideal
   ceil(200 / C) x L. Anchor: a sequential loop of pysynthbio 4.2.4 ``predict_query`` calls
   against the same emulator (200 x L); by default measured on ``--anchor-calls`` of them and
   scaled to 200 (the full loop takes about 17 minutes: ``--anchor-calls 200``).
P4, scale of the DAG: ``snakemake -n`` over a 10,000-condition table, at batch sizes 1
   (a job per condition), 20 (the default) and 100: wall time and peak memory. Target:
   under 60 s. Then the real per-job overhead: 100 conditions at latency 0 run at batch
   size 1 and 20, wall and CPU seconds per job.
P1, the whole workflow on one condition of 1,000 samples x 44,590 genes (submit, poll,
   download, parse, merge) against the vendor's conversion of the same result (json ->
   transform_standard_model_output -> to_parquet, bench/_measure.py ``vendor``), both in this
   run. Target: at most half the anchor's wall time. The emulator's own generation time is
   printed apart (a real service computes meanwhile; it is not our code).

Every Snakemake run is a child process; its CPU time and peak memory come from ``os.wait4``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SNAKEFILE = ROOT / "workflow" / "Snakefile"
TOKEN = "bench-token-not-a-secret"
METADATA = {"tissue_ontology_id": "UBERON:0002048", "sex": "female", "sample_type": "primary tissue"}
P2_CONDITIONS, P2_LATENCY, P2_CAP, P2_SLACK = 200, 5.0, 20, 1.25
P4_CONDITIONS, P4_SECONDS = 10_000, 60.0


def write_table(folder: Path, conditions: int, samples: int = 1, *, extras: bool = False) -> Path:
    """A conditions table of ``conditions`` bulk rows and its config file.

    Without ``extras`` the run stops at the merged pair (the steps the targets name: submit,
    poll, download, parse, merge); with them it also draws the report (the default outputs).
    """
    folder.mkdir(parents=True, exist_ok=True)
    header = ["condition", "num_samples", *METADATA]
    rows = ["\t".join(header)]
    for i in range(1, conditions + 1):
        rows.append("\t".join([f"c{i:05d}", str(samples), *METADATA.values()]))
    (folder / "conditions.tsv").write_text("\n".join(rows) + "\n")
    config = folder / "config.yaml"
    config.write_text(
        "api_base_url: https://app.synthesize.bio\n"
        f"conditions: {folder / 'conditions.tsv'}\n"
        "defaults:\n  seed: 42\n"
        "poll_interval_seconds: 1\npoll_timeout_seconds: 900\n"
        + ("" if extras else "outputs:\n  h5ad: []\n  report: false\n")
    )
    return config


def run_snakemake(workdir: Path, config: Path, *args: str, url: str | None = None) -> dict:
    """One Snakemake run in a child process: wall, CPU and peak memory, and its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNTHESIZE_API")}
    env.update({"SYNTHESIZE_API_KEY": TOKEN, "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"})
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", str(config), *args]
    if url is not None:
        command += ["--config", f"api_base_url={url}"] if "--config" not in args else []
    log = workdir / f".snakemake-{time.monotonic_ns()}.out"
    start = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"snakemake failed ({' '.join(command[3:])}):\n{text[-3000:]}")
    # Snakemake prints its job table at the start (and again at the end of a dry run).
    totals = [int(line.split()[-1]) for line in text.splitlines() if line.startswith("total ")]
    jobs = totals[0] if totals else 0
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024, "jobs": jobs}


def ratio_line(name: str, value: float, anchor: float, unit: str, target: str, met: bool) -> str:
    verdict = "met" if met else "NOT met"
    return f"  {name:<46} {value:>9.1f} {unit:<3} anchor {anchor:>8.1f} {unit:<3} {target:<28} {verdict}"


# --- P2 ------------------------------------------------------------------------------------


def anchor_loop(url: str, calls: int) -> float:
    """Seconds per ``pysynthbio.predict_query`` call in a sequential loop (the vendor's way)."""
    import pysynthbio

    os.environ["SYNTHESIZE_API_KEY"] = TOKEN
    query = {
        "inputs": [{"metadata": dict(METADATA), "num_samples": 1}],
        "sampling_strategy": "sample generation",
        "seed": 42,
    }
    start = time.perf_counter()
    for _ in range(calls):
        pysynthbio.predict_query(
            dict(query), model_id="gem-1-bulk", api_base_url=url, poll_interval_seconds=1, return_download_url=True
        )
    return (time.perf_counter() - start) / calls


def p2(scratch: Path, anchor_calls: int, batch_size: int, queries_per_job: int) -> list[str]:
    from synthbio_pipeline.emulator import start_emulator

    workdir = scratch / "p2"
    config = write_table(workdir / "config", P2_CONDITIONS)
    ideal = math.ceil(P2_CONDITIONS / P2_CAP) * P2_LATENCY
    with start_emulator(tokens=[TOKEN], latency=P2_LATENCY, max_in_flight=P2_CAP) as emulator:
        options = (
            "--cores",
            "2",
            "--resources",
            f"synthbio_api={P2_CAP}",
            "--config",
            f"api_base_url={emulator.url}",
            f"batch_size={batch_size}",
            f"queries_per_job={queries_per_job}",
        )
        ours = run_snakemake(workdir, config, *options)
        stats = emulator.stats()
        extras_dir = scratch / "p2-report"
        extras = run_snakemake(extras_dir, write_table(extras_dir / "config", P2_CONDITIONS, extras=True), *options)
        per_call = anchor_loop(emulator.url, anchor_calls)
    anchor = per_call * P2_CONDITIONS
    lines = [
        f"P2: {P2_CONDITIONS} conditions, L = {P2_LATENCY:g} s, C = {P2_CAP}, --cores 2, batch_size "
        f"{batch_size}, queries_per_job {queries_per_job} ({ours['jobs']} jobs)",
        ratio_line(
            "workflow wall time vs ideal ceil(200/C) x L",
            ours["wall_s"],
            ideal,
            "s",
            f"<= {P2_SLACK} x ideal: {ours['wall_s'] / ideal:.2f}",
            ours["wall_s"] <= P2_SLACK * ideal,
        ),
        ratio_line(
            "vendor loop (pysynthbio predict_query x 200)",
            anchor,
            anchor,
            "s",
            f"{anchor / ours['wall_s']:.1f}x slower than ours",
            True,
        )[:-4].rstrip(),
        f"  anchor measured on {anchor_calls} sequential calls ({per_call:.2f} s each) and scaled to {P2_CONDITIONS}"
        if anchor_calls < P2_CONDITIONS
        else f"  anchor: all {P2_CONDITIONS} calls measured",
        f"  queries in flight at most {stats['peak_in_flight']} (cap {P2_CAP}); refused over the cap "
        f"{stats['refused_over_capacity']}; submissions {sum(stats['submissions'].values())}",
        f"  CPU: {ours['cpu_s']:.1f} s over {ours['wall_s']:.1f} s = {ours['cpu_s'] / ours['wall_s']:.2f} cores "
        f"on average (2 available); largest process {ours['peak_mb']:.0f} MB",
        f"  with the default outputs too (report figures and tables): {extras['wall_s']:.1f} s, "
        f"{extras['jobs']} jobs, largest process {extras['peak_mb']:.0f} MB (not the target's steps)",
    ]
    return lines


# --- P4 ------------------------------------------------------------------------------------


def p4(scratch: Path) -> list[str]:
    from synthbio_pipeline.emulator import start_emulator

    lines = [f"P4: snakemake -n over {P4_CONDITIONS:,} conditions (target < {P4_SECONDS:g} s)"]
    config = write_table(scratch / "p4" / "config", P4_CONDITIONS)
    for batch_size in (1, 20, 100):
        workdir = scratch / "p4" / f"dry-{batch_size}"
        workdir.mkdir(parents=True)
        run = run_snakemake(
            workdir,
            config,
            "-n",
            "--quiet",
            "rules",
            "--config",
            "api_base_url=http://127.0.0.1:9",
            f"batch_size={batch_size}",
        )
        lines.append(
            f"  batch_size {batch_size:>3}: {run['jobs']:>6} jobs, {run['wall_s']:6.1f} s, "
            f"peak {run['peak_mb']:5.0f} MB  {'met' if run['wall_s'] < P4_SECONDS else 'NOT met'}"
        )
    lines.append("  real run, 100 one-sample conditions, latency 0, --cores 2: per-job overhead")
    config = write_table(scratch / "p4" / "real-config", 100)
    with start_emulator(tokens=[TOKEN], latency=0.0) as emulator:
        for batch_size in (1, 20):
            workdir = scratch / "p4" / f"real-{batch_size}"
            workdir.mkdir(parents=True)
            run = run_snakemake(
                workdir, config, "--cores", "2", "--config", f"api_base_url={emulator.url}", f"batch_size={batch_size}"
            )
            lines.append(
                f"  batch_size {batch_size:>3}: {run['jobs']:>4} jobs, {run['wall_s']:6.1f} s wall, "
                f"{run['cpu_s'] / max(run['jobs'], 1):.2f} CPU s/job, "
                f"{run['wall_s'] / 100:.2f} s wall per condition"
            )
    return lines


# --- P1, the whole workflow ----------------------------------------------------------------


def p1_workflow(scratch: Path, samples: int) -> list[str]:
    from synthbio_pipeline.emulator import start_emulator

    workdir = scratch / "p1"
    config = write_table(workdir / "config", 1, samples=samples)
    keep = workdir / "emulator"
    with start_emulator(tokens=[TOKEN], latency=0.0, workdir=keep) as emulator:
        ours = run_snakemake(workdir, config, "--cores", "2", "--config", f"api_base_url={emulator.url}")
    (result,) = keep.glob("*.json")
    # The emulator's generation time, from the same body, for the record.
    from synthbio_pipeline.emulator import generate

    body = json.loads(next((workdir / "results/queries").glob("*/*/*.json")).read_text())
    start = time.perf_counter()
    generate.write_result(workdir / "regenerated.json", generate.plan_query("gem-1-bulk", body))
    generation = time.perf_counter() - start
    (workdir / "regenerated.json").unlink()
    report = workdir / "vendor.report.json"
    params = {
        "result": str(result),
        "out": str(workdir / "vendor"),
        "model_id": "gem-1-bulk",
        "condition": "c00001",
        "samples": samples,
        "genes": 44590,
    }
    (workdir / "vendor").mkdir()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(HERE / "_measure.py"), "vendor", json.dumps(params), str(report)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    vendor_process = time.perf_counter() - start
    vendor = json.loads(report.read_text())
    anchor = vendor.get("wall_s", vendor_process)
    without_generation = ours["wall_s"] - generation
    return [
        f"P1 (whole workflow): one condition of {samples:,} samples x 44,590 genes, --cores 2, latency 0",
        ratio_line(
            "workflow wall (submit..merge, incl. emulator)",
            ours["wall_s"],
            anchor,
            "s",
            f"<= 0.5 x anchor: {ours['wall_s'] / anchor:.2f}",
            ours["wall_s"] <= 0.5 * anchor,
        ),
        ratio_line(
            "  the same without the emulator's generation",
            without_generation,
            anchor,
            "s",
            f"<= 0.5 x anchor: {without_generation / anchor:.2f}",
            without_generation <= 0.5 * anchor,
        ),
        f"  emulator generation of that result: {generation:.1f} s; vendor conversion process "
        f"{vendor_process:.1f} s (its work {anchor:.1f} s); workflow CPU {ours['cpu_s']:.1f} s, "
        f"largest process {ours['peak_mb']:.0f} MB",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=("p1", "p2", "p4"), help="run only these parts")
    parser.add_argument("--anchor-calls", type=int, default=10, help="vendor loop calls measured for P2 (default 10)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="P2's batch_size (default 100: 200 conditions in 2 jobs of 10 queries in flight)",
    )
    parser.add_argument("--queries-per-job", type=int, default=10, help="P2's queries_per_job (default 10)")
    parser.add_argument("--samples", type=int, default=1000, help="P1's samples (default 1000)")
    args = parser.parse_args(argv)
    parts = args.only or ["p2", "p4", "p1"]
    with tempfile.TemporaryDirectory(prefix="bench-workflow-") as scratch:
        for part in parts:
            if part == "p2":
                lines = p2(Path(scratch), args.anchor_calls, args.batch_size, args.queries_per_job)
            elif part == "p4":
                lines = p4(Path(scratch))
            else:
                lines = p1_workflow(Path(scratch), args.samples)
            print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
