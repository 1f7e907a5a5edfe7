"""Shared by the benchmarks: run a measuring task in a fresh interpreter, time a call.

Parent side: :func:`run_task` starts ``python SCRIPT TASK PARAMS REPORT`` and takes the
child's CPU time and peak memory from ``os.wait4`` (so the parent's own memory never
counts). Child side: :class:`Tasks`, :func:`baseline`, :func:`best_of`. Standard library only.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


class ChildFailed(RuntimeError):
    pass


def run_task(script: Path, name: str, params: dict, workdir: Path) -> dict:
    """Run one task of ``script`` in a fresh interpreter; its report plus the child's resource usage."""
    report_path = workdir / f".{name}.{os.getpid()}.report.json"
    stderr_path = workdir / f".{name}.{os.getpid()}.stderr"
    report_path.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(script), name, json.dumps(params), str(report_path)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not report_path.exists():
        raise ChildFailed(f"task {name!r} exited with {code}:\n{stderr_path.read_text(errors='replace')[-4000:]}")
    report = json.loads(report_path.read_text())
    report_path.unlink()
    stderr_path.unlink()
    report.update(process_s=time.perf_counter() - start, cpu_s=usage.ru_utime + usage.ru_stime, peak_kb=usage.ru_maxrss)
    return report


class Tasks(dict):
    """A child script's tasks by name; decorate a function with the table to add it
    (``make_parts`` runs as ``make-parts``)."""

    def __call__(self, function):
        self[function.__name__.replace("_", "-")] = function
        return function


def baseline() -> dict:
    """Memory once a task's imports are done: the peak so far (ru_maxrss, KB on Linux)."""
    gc.collect()
    return {"baseline_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def best_of(function, repeat: int):
    """(best wall time of ``repeat`` calls, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result
