"""Never lose work, never pay twice, never leak the token: whole-workflow tests.

A run killed while queries are in flight is resumed on rerun without a second
submission; the token appears in no file the run wrote and on no command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from snakemake_runs import (
    ROOT,
    assert_same_outputs,
    copy_config,
    files_under,
    output_of,
    run_watching_command_lines,
    snakemake,
    snakemake_command,
    snakemake_env,
    workflow_args,
)

GENES = 300


def clean_run(make_emulator, token, workdir: Path) -> Path:
    emulator = make_emulator(genes=GENES, latency=0.1)
    copy_config(ROOT / ".test/config", workdir)
    run = snakemake("--cores", "2", *workflow_args(workdir, emulator.url), cwd=workdir, token=token)
    assert run.returncode == 0, output_of(run)
    return workdir


def test_a_killed_run_resumes_without_submitting_again(make_emulator, emulator_token, tmp_path):
    reference = clean_run(make_emulator, emulator_token, tmp_path / "reference")

    workdir = tmp_path / "killed"
    copy_config(ROOT / ".test/config", workdir)
    emulator = make_emulator(genes=GENES, latency=6)  # queries stay in flight long enough to kill the run
    process = subprocess.Popen(
        snakemake_command("--cores", "3", *workflow_args(workdir, emulator.url)),
        cwd=workdir,
        env=snakemake_env(emulator_token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    conditions = 3
    deadline = time.monotonic() + 60
    while sum(emulator.stats()["submissions"].values()) < conditions:
        assert time.monotonic() < deadline and process.poll() is None, "the queries were never all submitted"
        time.sleep(0.1)
    time.sleep(0.5)  # every job is polling now
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (workdir / "results" / "bulk").exists()
    tickets = sorted(workdir.glob("results/predictions/*/.tickets/*.json"))
    assert len(tickets) == conditions

    assert (
        snakemake("--unlock", *workflow_args(workdir, emulator.url), cwd=workdir, token=emulator_token).returncode == 0
    )
    rerun = snakemake(
        "--cores", "3", "--rerun-incomplete", *workflow_args(workdir, emulator.url), cwd=workdir, token=emulator_token
    )
    assert rerun.returncode == 0, output_of(rerun)

    assert sorted(emulator.stats()["submissions"].values()) == [1] * conditions  # nobody paid twice
    logs = "".join(path.read_text() for path in workdir.glob("logs/predict/*/*.log"))
    assert logs.count("resuming model query") == conditions
    # The tickets stay (a later edit of a row buys that row only); the batches' work folders go.
    assert len(list(workdir.glob("results/predictions/*/.tickets/*.json"))) == conditions
    assert not list(workdir.glob("results/predictions/**/.*.work"))
    assert_same_outputs(workdir, reference)


def test_the_token_is_in_no_file_and_on_no_command_line(make_emulator, tmp_path):
    token = "sk-SECRET-distinctive-9f8e7d6c"
    emulator = make_emulator(genes=GENES, latency=1.5, tokens=[token])
    workdir = tmp_path / "run"
    copy_config(ROOT / ".test/config", workdir)
    command = snakemake_command("--cores", "2", "--printshellcmds", *workflow_args(workdir, emulator.url))
    output = tmp_path / "snakemake.out"
    status, command_lines_seen = run_watching_command_lines(
        command, workdir, snakemake_env(token), output, token, timeout=600
    )
    log = output.read_text()
    assert status == 0, log
    assert command_lines_seen > 0
    assert token not in log

    written = files_under(workdir)
    assert any(".snakemake" in path.parts for path in written) and any("logs" in path.parts for path in written)
    for path in written:
        assert token.encode() not in path.read_bytes(), f"the token was written to {path}"
    stats = emulator.stats()
    assert stats["downloads"] == 3 and stats["downloads_with_auth"] == 0  # never sent to the download host


# Every fault a run can live through unattended. Two are left out on purpose and tested on
# their own: a dropped answer to a submission (it may have been accepted, so it is not resent:
# tests/test_client.py) and a failed query (not resubmitted by default: tests/test_faults.py).
MIXED_FAULTS = {
    "seed": 5,
    "faults": [
        {"endpoint": "predict", "fault": "503", "requests": [1], "retry_after": 1},
        {"endpoint": "predict", "fault": "429", "requests": [2], "retry_after": "http-date"},
        {"endpoint": "status", "fault": "502", "fraction": 0.15},
        {"endpoint": "status", "fault": "429", "fraction": 0.1, "retry_after": 1},
        {"endpoint": "status", "fault": "drop", "fraction": 0.1},
        {"endpoint": "status", "fault": "expire_url", "requests": [4, 7]},
        {"endpoint": "download", "fault": "truncate", "requests": [1]},
        {"endpoint": "download", "fault": "short", "requests": [2]},
        {"endpoint": "download", "fault": "504", "requests": [3]},
    ],
}


def test_the_workflow_completes_under_a_mixed_fault_plan(make_emulator, emulator_token, tmp_path):
    reference = clean_run(make_emulator, emulator_token, tmp_path / "reference")
    workdir = tmp_path / "faulty"
    copy_config(ROOT / ".test/config", workdir)
    emulator = make_emulator(genes=GENES, latency=0.5, faults=MIXED_FAULTS)
    run = snakemake("--cores", "3", *workflow_args(workdir, emulator.url), cwd=workdir, token=emulator_token)
    assert run.returncode == 0, output_of(run)

    stats = emulator.stats()
    injected = stats["faults"]
    kinds = {key.split(":")[1] for key in injected}
    assert {"503", "429", "drop", "expire_url", "truncate", "short", "504"} <= kinds, injected
    assert sorted(stats["submissions"].values()) == [1, 1, 1]  # every condition paid for exactly once
    assert_same_outputs(workdir, reference)
