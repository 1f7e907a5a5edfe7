"""``synthbio-pipeline``: every subcommand (``token`` in test_token.py, ``report`` in test_report.py)."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from synthbio_pipeline.cli import build_parser, main
from synthbio_pipeline.errors import TOKEN_HINT
from synthbio_pipeline.pipeline.conditions import ConditionsError, read_conditions

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEADER = "condition\tnum_samples\ttissue_ontology_id\tsex\tmodality"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# --- validate ----------------------------------------------------------------------------


def test_validate_a_good_table_prints_one_summary_line(tmp_path, capsys):
    table = write(tmp_path / "c.tsv", HEADER, "lung\t3\tUBERON:0002048\tmale\t", "blood\t2\t\tfemale\tsingle-cell")
    assert main(["validate", str(table), "--config", str(write(tmp_path / "config.yaml", "defaults: {}"))]) == 0
    assert capsys.readouterr().out == "2 conditions, 5 samples (5 to buy, within max_samples), OK\n"


def test_validate_holds_the_table_to_the_configs_budget_and_row_limit(tmp_path, capsys, monkeypatch):
    """max_samples and max_table_rows of the config, as the workflow applies them; tickets the
    workflow holds in this directory are not bought again."""
    from synthbio_pipeline.pipeline.runner import Ticket, body_sha256, save_ticket

    monkeypatch.chdir(tmp_path)
    table = write(tmp_path / "c.tsv", HEADER, "lung\t3\tUBERON:0002048\tmale\t", "liver\t4\t\tfemale\t")
    config = write(tmp_path / "config.yaml", "max_samples: 6")
    assert main(["validate", str(table), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: this run would buy 7 samples") and "max_samples" in err
    # A ticket of the lung row (same body, model and service) holds 3 of them.
    lung = read_conditions(table)[0]
    url = "https://app.synthesize.bio"
    ticket = Ticket("q-1", body_sha256(lung.wire_body()), lung.model_id, url)
    save_ticket(tmp_path / "results/predictions/bulk/.tickets/lung.json", ticket)
    assert main(["validate", str(table), "--config", str(config)]) == 0
    assert capsys.readouterr().out == "2 conditions, 7 samples (4 to buy, 3 already bought, within max_samples), OK\n"
    write(config, "max_table_rows: 1")
    assert main(["validate", str(table), "--config", str(config)]) == 1
    assert "more than 1 rows" in capsys.readouterr().err
    write(config, "max_table_rows: many")
    assert main(["validate", str(table), "--config", str(config)]) == 1
    assert "max_table_rows must be a whole number" in capsys.readouterr().err


def test_validate_prints_the_workflows_messages_and_exits_1(tmp_path, capsys):
    table = write(tmp_path / "c.tsv", HEADER, "lung\t3\tUBERON:2048\tmale\t", "lung\tx\t\tmal\tbulk")
    assert main(["validate", str(table), "--config", str(write(tmp_path / "config.yaml", "{}"))]) == 1
    out, err = capsys.readouterr()
    with pytest.raises(ConditionsError) as raised:
        read_conditions(table)  # what the workflow raises at parse time, before any job
    assert out == "" and err == str(raised.value) + "\n"
    lines = err.splitlines()[1:]
    assert len(lines) == 4
    assert lines[0].startswith(f"- {table}:2 (condition 'lung'), column 'tissue_ontology_id': ")
    assert f"- {table}:3 (condition 'lung'), column 'sex': 'mal' is not allowed" in err and "did you mean 'male'" in err


def test_validate_reads_the_defaults_of_a_config(tmp_path, capsys):
    table = write(tmp_path / "c.tsv", HEADER, "blood\t2\t\tfemale\tsingle-cell")
    config = write(tmp_path / "config.yaml", "defaults:", "  mode: sample generation", "  seed: 3")
    assert main(["validate", str(table), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{table}:2 (condition 'blood'), column 'mode'" in err and "config defaults.mode" in err


def test_validate_uses_the_workflow_config_by_default(tmp_path, capsys, monkeypatch):
    table = write(tmp_path / "c.tsv", HEADER, "lung\t3\t\tmale\t")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    write(tmp_path / "config/config.yaml", "defaults:", "  modality: bulkk")
    assert main(["validate", str(table)]) == 1
    assert "config defaults.modality" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "cannot read the config"),
        ("defaults: [1, 2]", "'defaults' must be a mapping"),
        ("defaults: {a: [", "not YAML"),
    ],
)
def test_validate_with_an_unusable_config_says_why(tmp_path, capsys, config, message):
    table = write(tmp_path / "c.tsv", HEADER, "lung\t3\t\tmale\t")
    path = tmp_path / "config.yaml"
    if config is not None:
        path.write_text(config)
    assert main(["validate", str(table), "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and message in err and "Traceback" not in err


def test_validate_the_example_table_from_the_shell():
    done = subprocess.run(
        [str(BIN / "synthbio-pipeline"), "validate", "config/conditions.tsv"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"\d+ conditions, \d+ samples \(\d+ to buy(, \d+ already bought)?, within max_samples\), OK\n", done.stdout
    )


# --- the API -----------------------------------------------------------------------------


def test_models_and_example_queries_from_the_emulator(emulator, capsys):
    assert main(["models", "--base-url", emulator.url]) == 0
    listed = capsys.readouterr().out
    assert "gem-1-bulk" in listed and "gem-1-sc" in listed
    assert main(["example-query", "--model-id", "gem-1-bulk", "--base-url", emulator.url]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]
    assert main(["example-query", "--modality", "bulk"]) == 0
    assert json.loads(capsys.readouterr().out)["modality"] == "bulk"


def test_an_api_error_is_one_line_and_exit_2(emulator, capsys, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", "not-the-emulators-token")
    assert main(["models", "--base-url", emulator.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: GET /api/models: authentication failed (401)") and "not-the-emulators" not in err


# --- emulator and demo -------------------------------------------------------------------


def test_the_emulator_subcommand_serves_until_sigterm():
    token = "cli-emulator-token"
    command = [str(BIN / "synthbio-pipeline"), "emulator", "--port", "0", "--genes", "20", "--token", token]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline()).group(0)
        assert requests.get(f"{url}/api/models", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
        assert (
            requests.get(f"{url}/api/models", headers={"Authorization": "Bearer other"}, timeout=10).status_code == 401
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_emulator_subcommand_refuses_a_bad_fault_plan(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--faults", '{"faults": [{"endpoint": "status"}]}'])
    assert exited.value.code == 2
    assert "argument --faults: fault plan: a rule needs 'fault'" in capsys.readouterr().err


def test_the_demo_subcommand(capsys, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", "restored-after-the-test")  # the demo sets its own
    assert main(["demo", "--genes", "30", "--latency", "0.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Emulator (synthetic data, not a model) at http://127.0.0.1:")
    assert "== bulk: 'sample generation'" in out and "== single-cell: 'mean estimation'" in out


@pytest.mark.parametrize("module", ["synthbio_pipeline.emulator", "synthbio_pipeline.demo"])
def test_the_python_m_aliases_take_the_same_options(module):
    alias = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    command = subprocess.run(
        [str(BIN / "synthbio-pipeline"), module.rsplit(".", 1)[1], "--help"], capture_output=True, text=True
    )
    assert alias.returncode == command.returncode == 0

    def options(text):
        return sorted(set(re.findall(r"--[a-z][a-z-]+", text)))

    assert options(alias.stdout) == options(command.stdout) and "--latency" in options(alias.stdout)


# --- the commands the documentation gives ------------------------------------------------


def documented_commands() -> list[str]:
    """Every ``synthbio-pipeline ...`` command the README files, the demo script and the error hints give."""
    found = set()
    for path in (ROOT / "README.md", ROOT / "config/README.md", ROOT / "scripts/demo.sh"):
        for line in path.read_text().splitlines():
            command = re.match(r'\s*(?:"\$venv/bin/)?synthbio-pipeline"? ([^#>&]+)', line)
            if command:
                found.add(command.group(1))
    texts = [TOKEN_HINT, (ROOT / "README.md").read_text(), (ROOT / "config/README.md").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "src/synthbio_pipeline").rglob("*.py"))]
    for text in texts:
        found.update(re.findall(r"`synthbio-pipeline ([^`]+)`", text))
    return sorted({" ".join(command.split()) for command in found})


def test_every_documented_command_parses(capsys):
    commands = documented_commands()
    assert {"token set", "token has", "emulator --port 0", "validate config/conditions.tsv"} <= set(commands)
    for command in commands:
        words = shlex.split(command)
        if words[0].isupper():  # `synthbio-pipeline COMMAND --help`
            continue
        if len(words) == 1:  # the name of a command, as in "`synthbio-pipeline report` runs this"
            words.append("--help")
        try:
            build_parser().parse_args(words)
        except SystemExit as exited:
            assert exited.code == 0, f"`synthbio-pipeline {command}` does not parse"
