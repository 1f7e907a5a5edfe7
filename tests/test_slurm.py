"""HPC submission on a real SLURM cluster, with workflow/profiles/slurm.

The example test table runs against the emulator twice: locally, and through SLURM. Compute
jobs must go through sbatch, the prediction jobs must stay local, the merged outputs must equal
the local run's, and the token must be in no file and on no command line (sbatch's included).

The SLURM run needs the `cluster` extra and a cluster answering `sinfo`: scripts/test-slurm.sh
provides both (scripts/slurm-up.sh, as root). Elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
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

PROFILES = ROOT / "workflow" / "profiles"
GENES = 300
TOKEN = "sk-SECRET-slurm-distinctive-5a4b3c2d"


def slurm_unavailable() -> str | None:
    """Why the SLURM run cannot happen here, or None."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return (
            "snakemake-executor-plugin-slurm is not installed in this environment (the `cluster` "
            "extra, kept out of the main venv); scripts/test-slurm.sh runs this test in a venv with it"
        )
    if shutil.which("sbatch") is None:
        return "no sbatch here: scripts/slurm-up.sh (as root) installs and starts a single-node SLURM cluster"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if not re.search(r"idle|mix|alloc", states.stdout):
        return (
            f"no SLURM node is up (sinfo: {(states.stdout + states.stderr).strip() or 'nothing'}): "
            "scripts/slurm-up.sh (as root) starts one"
        )
    return None


def test_the_slurm_profile_repeats_the_default_profile():
    # A workflow profile given by name replaces profiles/default instead of adding to it.
    default = yaml.safe_load((PROFILES / "default" / "profile.yaml").read_text())
    slurm = yaml.safe_load((PROFILES / "slurm" / "profile.yaml").read_text())
    assert {key: slurm.get(key) for key in default} == default
    assert slurm["executor"] == "slurm" and slurm["slurm-status-command"] == "squeue"
    # The token travels in the environment only (sbatch --export=ALL).
    assert "envvars" not in slurm


def sbatch_recorder(folder: Path, record: Path) -> Path:
    """A folder with an `sbatch` that appends its arguments to ``record``, then runs the real one."""
    real = shutil.which("sbatch")
    folder.mkdir()
    script = folder / "sbatch"
    script.write_text(
        f'#!/bin/sh\nprintf \'%s\\n\' "sbatch $*" >> {shlex.quote(str(record))}\nexec {shlex.quote(real)} "$@"\n'
    )
    script.chmod(0o755)
    return folder


def test_the_workflow_runs_on_slurm_like_it_runs_locally(make_emulator, tmp_path):
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    emulator = make_emulator(genes=GENES, latency=0.5, tokens=[TOKEN])

    local = tmp_path / "local"
    copy_config(ROOT / ".test/config", local)
    run = snakemake("--cores", "2", *workflow_args(local, emulator.url), cwd=local, token=TOKEN)
    assert run.returncode == 0, output_of(run)

    workdir = tmp_path / "slurm"
    copy_config(ROOT / ".test/config", workdir)
    calls = tmp_path / "sbatch-calls.txt"
    shim = sbatch_recorder(tmp_path / "bin", calls)
    # The way README recommends on a cluster: the token in the keyring (here a test keyring in
    # a file outside the workdir), SYNTHESIZE_API_KEY unset. The local prediction jobs read the
    # keyring; the submitted jobs, which never call the API, inherit no token.
    keyring_file = tmp_path / "keyring.json"
    keyring_file.write_text(json.dumps({"pysynthbio\x00api_token": TOKEN}))
    env = snakemake_env(
        None,
        {
            "PYTHON_KEYRING_BACKEND": "fixtures.FileKeyring",
            "SYNTHBIO_TEST_KEYRING": str(keyring_file),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
            "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        },
    )
    output = tmp_path / "snakemake-slurm.out"
    # timeout -k: a status command that never sees a job makes Snakemake wait forever. Checking
    # status sooner than the plugin's 40 s only shortens the test; successful jobs' SLURM logs
    # are kept so that they can be searched for the token.
    command = [
        "timeout",
        "-k",
        "10",
        "600",
        *snakemake_command(
            "--workflow-profile",
            str(PROFILES / "slurm"),
            *workflow_args(workdir, emulator.url),
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--seconds-between-status-checks",
            "2",
            "--slurm-keep-successful-logs",
        ),
    ]
    started = time.monotonic()
    status, command_lines_seen = run_watching_command_lines(command, workdir, env, output, TOKEN, timeout=660)
    wall = time.monotonic() - started
    log = output.read_text()
    assert status == 0, log
    assert command_lines_seen > 0

    # Every job that is not a localrule went through sbatch, and nothing else did.
    remote_jobs = re.findall(r"^rule (\w+):$", log, flags=re.MULTILINE)
    local_jobs = re.findall(r"^localrule (\w+):$", log, flags=re.MULTILINE)
    submissions = re.findall(
        r"^Job \d+ has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", log, flags=re.MULTILINE
    )
    sbatch_calls = calls.read_text().splitlines()
    submitted_rules = [
        re.search(r"--comment '?rule_(\w+?)(?:_wildcards_\S*?)?'? ", call).group(1) for call in sbatch_calls
    ]
    assert "merge" in remote_jobs
    assert {"predict", "write_queries"} <= set(local_jobs)
    assert sorted(submitted_rules) == sorted(remote_jobs)
    assert len(submissions) == len(sbatch_calls) == len({jobid for jobid, _ in submissions})
    for jobid, slurm_log in submissions:
        slurm_log = Path(slurm_log)
        assert slurm_log.is_relative_to(workdir / ".snakemake" / "slurm_logs") and slurm_log.name == f"{jobid}.log"
        # The job ran inside its SLURM allocation, through the plugin's job-step executor.
        assert "--executor slurm-jobstep" in slurm_log.read_text(), slurm_log
    assert not (workdir / ".snakemake" / "slurm_logs" / "rule_predict").exists()
    assert list(workdir.glob("logs/predict/*/*.log"))
    steps = re.search(r"^(\d+) of \1 steps \(100%\) done$", log, flags=re.MULTILINE)
    assert steps and int(steps.group(1)) == len(remote_jobs) + len(local_jobs)

    assert_same_outputs(workdir, local)

    # The token: in no file of the run (SLURM logs, .snakemake, logs, results), not in what
    # Snakemake printed, not in any sbatch call.
    assert TOKEN not in log
    assert sbatch_calls and all("--export=ALL" in call and TOKEN not in call for call in sbatch_calls)
    written = files_under(workdir)
    assert any("slurm_logs" in path.parts for path in written)
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), f"the token was written to {path}"

    # slurmctld keeps each batch job's environment in its state directory until the job is
    # purged: with the token in the keyring, none of them holds it.
    state = Path("/var/spool/slurmctld")
    kept = [path for jobid, _ in submissions for path in state.glob(f"hash.*/job.{jobid}/environment")]
    with_token = sum(TOKEN.encode() in path.read_bytes() for path in kept)
    assert with_token == 0, f"the token is in {with_token} of {len(kept)} job environments slurmctld kept"
    print(
        f"\nSLURM run: {steps.group(1)} jobs ({len(submissions)} submitted with sbatch: "
        f"{', '.join(f'{rule}×{submitted_rules.count(rule)}' for rule in sorted(set(submitted_rules)))}; "
        f"{len(local_jobs)} local: {', '.join(sorted(set(local_jobs)))}), wall time {wall:.1f} s; "
        f"token in slurmctld's saved job environments: {with_token} of {len(kept)} readable"
    )
