"""The checks before any job: the config (one line per problem), the service (answers, takes the
token, has the table's models), and the wrong-port mistake ending in seconds with a few lines."""

from __future__ import annotations

import socket
import time

import pytest
import yaml
from snakemake_runs import ROOT, SNAKEFILE, copy_config, output_of, snakemake

from synthbio_pipeline.pipeline.preflight import config_problems, service_problem

CONFIG_SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the service ---------------------------------------------------------------------------


def test_a_service_that_answers_takes_the_token_and_has_the_models_passes(emulator):
    assert service_problem(emulator.url, ["gem-1-bulk", "gem-1-sc"]) is None
    assert emulator.stats()["requests"] == {"list_models": 1}  # nothing submitted, nothing paid


def test_nothing_listening_names_the_url_and_the_emulator(emulator_token):
    url = closed_port_url()
    started = time.monotonic()
    problem = service_problem(url, ["gem-1-bulk"])
    assert time.monotonic() - started < 2  # no retries
    assert problem == f"nothing answers at {url} — is the emulator running? check api_base_url"


def test_a_refused_token_says_how_to_set_one(emulator, monkeypatch):
    monkeypatch.setenv("SYNTHESIZE_API_KEY", "not-the-emulators-token")
    problem = service_problem(emulator.url, ["gem-1-bulk"])
    assert problem == (
        f"the token was refused by {emulator.url} (401) — set SYNTHESIZE_API_KEY or run `synthbio-pipeline token set`"
    )


def test_a_model_the_token_may_not_use_is_named(emulator):
    # A model of the vendor's that the emulator does not serve.
    problem = service_problem(emulator.url, ["gem-1-bulk", "gem-1-bulk_condition-on-sample-ids"])
    assert problem.startswith(
        f"model gem-1-bulk_condition-on-sample-ids is not available to this token at {emulator.url}"
    )
    assert "it offers: gem-1-bulk, gem-1-bulk_predict-metadata" in problem


def test_a_base_url_with_a_path_too_many_says_what_a_base_url_is(emulator):
    problem = service_problem(emulator.url + "/api", ["gem-1-bulk"])
    assert problem.startswith(f"{emulator.url}/api answered GET /api/models with 404 — is api_base_url")


# --- the config ----------------------------------------------------------------------------


def valid_config(**changes):
    config = {"conditions": "config/conditions.tsv", "api_base_url": "https://app.synthesize.bio", "batch_size": 5}
    return {**config, **changes}


def test_a_valid_config_has_no_problems():
    assert config_problems(valid_config(), CONFIG_SCHEMA) == []


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"batchsize": 10}, ["unknown key 'batchsize' — did you mean batch_size?"]),
        ({"defaults": {"sed": 1}}, ["defaults: unknown key 'sed' — did you mean seed?"]),
        ({"batch_size": "ten"}, ["batch_size: 'ten' is not a whole number — Conditions per prediction job"]),
        ({"poll_interval_seconds": 0}, ["poll_interval_seconds: 0 is not at least 1 — Seconds between"]),
        ({"outputs": {"h5ad": ["bulkk"]}}, ["outputs.h5ad[0]: 'bulkk' is not one of bulk, single-cell"]),
        (
            {"api_base_url": "example.org"},
            ["api_base_url: 'example.org' is not in the expected form — Base URL of the Synthesize Bio API"],
        ),
    ],
    ids=["unknown-key", "nested-unknown-key", "type", "minimum", "enum", "pattern"],
)
def test_each_config_problem_is_one_line_naming_the_key(changes, expected):
    problems = config_problems(valid_config(**changes), CONFIG_SCHEMA)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(start), problem
        assert "\n" not in problem and "^" not in problem  # no raw regex


def test_gene_order_files_take_every_output_group_and_refuse_other_keys():
    groups = {"bulk": "a.json", "single-cell": "b.txt", "gem-2-bulk": "c.json", "gem-2-single-cell": "d.parquet"}
    assert config_problems(valid_config(gene_order_files=groups), CONFIG_SCHEMA) == []
    assert config_problems(valid_config(gene_order_files={"gem-2-bulk": "order.json"}), CONFIG_SCHEMA) == []
    problems = config_problems(valid_config(gene_order_files={"gem-2-sc": "order.json"}), CONFIG_SCHEMA)
    # The model id names its group (the key whose description gives that model's order).
    assert problems == ["gene_order_files: unknown key 'gem-2-sc' — did you mean gem-2-single-cell?"], problems
    problems = config_problems(valid_config(gene_order_files={"gem-1-bulk": "order.json"}), CONFIG_SCHEMA)
    assert problems == ["gene_order_files: unknown key 'gem-1-bulk' — did you mean bulk?"], problems
    problems = config_problems(valid_config(gene_order_files={"bulkk": "order.json"}), CONFIG_SCHEMA)
    assert problems == ["gene_order_files: unknown key 'bulkk' — did you mean bulk?"], problems
    problems = config_problems(valid_config(gene_order_files={"gem-2-bulk": ""}), CONFIG_SCHEMA)
    assert len(problems) == 1 and problems[0].startswith("gene_order_files.gem-2-bulk: "), problems


def test_a_missing_key_and_several_problems_are_all_reported():
    config = valid_config(batch_size=0, as_counts="yes")
    del config["conditions"]
    problems = config_problems(config, CONFIG_SCHEMA)
    assert problems == [
        "conditions: missing — Path of the conditions table (.tsv, or .csv), relative to the working directory.",
        "as_counts: 'yes' is not true or false — Integer counts (true) or log1p-CPM (false) in the expression files",
        "batch_size: 0 is not at least 1 — Conditions per prediction job",
    ]


# --- through Snakemake ---------------------------------------------------------------------


def workflow_args(tmp_path, *config):
    configfile = copy_config(ROOT / ".test/config", tmp_path)
    return ("-s", str(SNAKEFILE), "--configfile", str(configfile), "--config", *config)


def test_the_wrong_port_ends_in_seconds_with_a_few_lines(tmp_path):
    url = closed_port_url()
    args = workflow_args(tmp_path, f"api_base_url={url}")
    started = time.monotonic()
    run = snakemake("--cores", "2", *args, cwd=tmp_path, token="some-token", timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    lines = (run.stdout + run.stderr).splitlines()
    assert len(lines) <= 5 and elapsed < 10, f"{elapsed:.1f} s\n{output_of(run)}"
    assert f"nothing answers at {url} — is the emulator running? check api_base_url" in lines, output_of(run)
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()

    # A dry run sends nothing, so it does not look for the service.
    run = snakemake("-n", *args, cwd=tmp_path, token="some-token", timeout=60)
    assert run.returncode == 0, output_of(run)


def test_a_refused_token_stops_the_run_before_any_job(emulator, tmp_path):
    args = workflow_args(tmp_path, f"api_base_url={emulator.url}")
    run = snakemake("--cores", "2", *args, cwd=tmp_path, token="wrong-token", timeout=60)
    assert run.returncode != 0
    assert "the token was refused by" in run.stderr and "synthbio-pipeline token set" in run.stderr, output_of(run)
    assert set(emulator.stats()["requests"]) == {"list_models"}
    assert not (tmp_path / "results").exists()


def test_a_misspelt_config_key_gets_did_you_mean(tmp_path):
    args = workflow_args(tmp_path, "batchsize=10")
    run = snakemake("-n", *args, cwd=tmp_path, token="unused", timeout=60)
    assert run.returncode != 0
    lines = (run.stdout + run.stderr).splitlines()
    assert "- unknown key 'batchsize' — did you mean batch_size?" in lines, output_of(run)
    assert len(lines) <= 7, output_of(run)


def test_boolean_options_given_as_words_are_read_as_booleans():
    from synthbio_pipeline.pipeline.preflight import with_boolean_words

    given = valid_config(as_counts="false", self_hosted="No", send_token_over_http="1", batch_size="10")
    read = with_boolean_words(given, CONFIG_SCHEMA)
    assert (read["as_counts"], read["self_hosted"], read["send_token_over_http"]) == (False, False, True)
    assert read["batch_size"] == "10"  # not a boolean option: left for the schema to refuse
    assert config_problems(with_boolean_words(valid_config(as_counts="nope"), CONFIG_SCHEMA), CONFIG_SCHEMA)


def test_as_counts_false_on_the_command_line_is_taken(tmp_path):
    """Snakemake passes --config as_counts=false as the text 'false' (it reads only True/False)."""
    args = workflow_args(tmp_path, "as_counts=false", "api_base_url=http://127.0.0.1:9")
    run = snakemake("-n", *args, cwd=tmp_path, token="unused", timeout=60)
    assert run.returncode == 0, output_of(run)
    assert "results/bulk/log1p_cpm.parquet" not in run.stdout  # log1p-CPM already: no separate file
