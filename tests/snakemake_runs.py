"""Running Snakemake from the tests: a subprocess in the test's interpreter, as a user would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
#: The tests never read the machine's keyring: a token must come from the environment.
NO_KEYRING = "keyring.backends.null.Keyring"


def snakemake_env(token: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment for a Snakemake run, with ``token`` (or none) in SYNTHESIZE_API_KEY.

    No other SYNTHESIZE_API* variable of the test's environment is passed on, nor its keyring;
    ``env`` adds or replaces some.
    """
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SYNTHESIZE_API")},
        "PYTHON_KEYRING_BACKEND": NO_KEYRING,
        **(env or {}),
    }
    if token is not None:
        env["SYNTHESIZE_API_KEY"] = token
    return env


def snakemake_command(*args: str) -> list[str]:
    """``python -m snakemake ARGS`` in the test's interpreter."""
    return [sys.executable, "-m", "snakemake", *args]


def snakemake(
    *args: str, cwd: Path, token: str | None, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """:func:`snakemake_command` in ``cwd``, in :func:`snakemake_env` (``token``, ``env``)."""
    return subprocess.run(
        snakemake_command(*args),
        cwd=cwd,
        env=snakemake_env(token, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def workflow_args(workdir: Path, url: str) -> tuple[str, ...]:
    """The workflow in ``workdir``, with the config :func:`copy_config` put there, against the API
    at ``url``, polled every second."""
    return (
        "-s",
        str(SNAKEFILE),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config" / "config.yaml"),
        "--config",
        f"api_base_url={url}",
        "poll_interval_seconds=1",
    )


def output_of(run: subprocess.CompletedProcess) -> str:
    return f"exit {run.returncode}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"


def copy_config(source: Path, workdir: Path) -> Path:
    """Copy a config folder (config.yaml + its table) into ``workdir/config``; return the config file."""
    shutil.copytree(source, workdir / "config")
    return workdir / "config" / "config.yaml"


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


#: Files of an output group (or an annotate folder) compared whole when present.
COMPARED = ("expression", "latents", "predicted_metadata", "classifier_probs", "encoded_latents")


def merged(workdir: Path) -> dict[str, pd.DataFrame]:
    """The merged outputs (output groups and annotate folders: expression, latents, predicted
    metadata), without what legitimately differs between runs (query ids)."""
    tables = {}
    results = workdir / "results"
    folders = (
        [*results.iterdir(), *(results / "annotate").glob("*")]
        if (results / "annotate").is_dir()
        else [*results.iterdir()]
    )
    for folder in sorted(folders):
        name = folder.relative_to(results).as_posix()
        for table in COMPARED:
            if (folder / f"{table}.parquet").exists():
                tables[f"{name}/{table}"] = pd.read_parquet(folder / f"{table}.parquet")
        if (folder / "metadata.parquet").exists():
            tables[f"{name}/metadata"] = pd.read_parquet(folder / "metadata.parquet").drop(columns="query_id")
    return tables


def assert_same_outputs(left: Path, right: Path) -> None:
    a, b = merged(left), merged(right)
    assert a.keys() == b.keys() and a
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def scan_command_lines(token: str) -> int:
    """Assert that no running process has ``token`` on its command line; the number looked at."""
    seen = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes()
        except OSError:
            continue  # the process ended
        seen += 1
        assert token.encode() not in arguments, f"the token is on the command line of {cmdline.parent.name}"
    return seen


def run_watching_command_lines(
    command: list[str], cwd: Path, env: dict[str, str], output: Path, token: str, timeout: float
) -> tuple[int, int]:
    """Run ``command``, its output (stdout and stderr) to ``output``; fail if any process's command
    line holds ``token`` meanwhile, or if it has not ended after ``timeout`` seconds (then it is killed).

    Returns the exit status and how many command lines were looked at.
    """
    with output.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        seen = 0
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                assert time.monotonic() < deadline, f"no end after {timeout} s:\n{output.read_text()}"
                seen += scan_command_lines(token)
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return process.returncode, seen
