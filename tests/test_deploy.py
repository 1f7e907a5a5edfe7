"""The layout deploys the way the Snakemake workflow catalog expects (snakedeploy).

``snakedeploy deploy-workflow URL DEST --tag T`` copies ``config/`` and writes a Snakefile
that imports ``workflow/Snakefile`` as a module (``github(...)`` for a GitHub URL). Here the
source is a local clone, so the module's path is pointed at the clone, as ``github(...)``
would point at the tag; then the deployed folder runs, with its copied config, against the
emulator.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from snakemake_runs import ROOT, output_of, snakemake

pytest.importorskip("snakedeploy")


def test_snakedeploy_deploys_a_runnable_workflow(make_emulator, emulator_token, tmp_path):
    source = tmp_path / "source"
    # A clean copy of the files git would commit, as a clone of a tag would give.
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, files.decode().split("\0")):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    subprocess.run(["git", "init", "-q"], cwd=source, check=True)
    subprocess.run(["git", "add", "-A"], cwd=source, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "release"], cwd=source, check=True
    )
    subprocess.run(["git", "tag", "v0.0.0-test"], cwd=source, check=True)

    dest = tmp_path / "deployed"
    deploy = subprocess.run(
        [
            str(Path(sys.executable).with_name("snakedeploy")),
            "deploy-workflow",
            str(source),
            str(dest),
            "--tag",
            "v0.0.0-test",
            "--name",
            "synthbio",
        ],
        capture_output=True,
        text=True,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert sorted(p.name for p in (dest / "config").iterdir()) == ["README.md", "conditions.tsv", "config.yaml"]
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert "module synthbio:" in text and "use rule * from synthbio" in text
    # What github("OWNER/synthbio-snakemake", path="workflow/Snakefile", tag=...) resolves to.
    text, replaced = re.subn(
        r'snakefile:\s*\n\s*"workflow/Snakefile"', f'snakefile:\n        "{source / "workflow" / "Snakefile"}"', text
    )
    assert replaced == 1, text
    snakefile.write_text(text)

    emulator = make_emulator(genes=200, latency=0.1)
    run = snakemake("--cores", "2", "--config", f"api_base_url={emulator.url}", cwd=dest, token=emulator_token)
    assert run.returncode == 0, output_of(run)
    conditions = pd.read_csv(dest / "config" / "conditions.tsv", sep="\t")
    metadata = pd.read_parquet(dest / "results" / "bulk" / "metadata.parquet")
    bulk = conditions[conditions["modality"].fillna("bulk") == "bulk"]
    assert set(metadata["condition"]) == set(bulk["condition"])
    assert set(metadata["backend"]) == {"emulator"}
