"""Hostile and broken inputs (tests/hostile/cases.yaml): each stops the workflow before any
request reaches the API, writes nothing under results/, and says what is wrong and where."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake_runs import ROOT, SNAKEFILE, output_of, snakemake

CORPUS = Path(__file__).parent / "hostile"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        base[key] = deep_update(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
    return base


def test_the_corpus_is_large_and_every_table_is_used():
    assert len(CASES) >= 25
    tables = {case["table"] for case in CASES.values()}
    assert {path.name for path in CORPUS.glob("*.tsv")} <= tables


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_refused_before_any_request(name, make_emulator, emulator_token, tmp_path):
    case = CASES[name]
    emulator = make_emulator()
    config = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    config.update(conditions=str(CORPUS / case["table"]), api_base_url=emulator.url)
    deep_update(config, case.get("config", {}))
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))

    run = snakemake(
        "--cores",
        "1",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(tmp_path),
        "--configfile",
        str(configfile),
        cwd=tmp_path,
        token=emulator_token if case.get("token", True) else None,
        timeout=120,
    )

    said = run.stdout + run.stderr
    assert run.returncode != 0, output_of(run)
    for fragment in case["expect"]:
        assert fragment in said, f"{fragment!r} missing from:\n{output_of(run)}"
    assert sum(emulator.stats()["requests"].values()) == 0
    assert not (tmp_path / "results").exists()
    assert "Traceback" not in said, "a bad input deserves a message, not a stack trace"
