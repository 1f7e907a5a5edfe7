"""What a run would buy, and the budget guard (issue 12): counted from the table and the
tickets before any request; `snakemake -n` says it; a run over `max_samples` stops."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import yaml
from snakemake_runs import ROOT, SNAKEFILE, copy_config, output_of, snakemake, snakemake_env

from synthbio_pipeline.pipeline.budget import budget_problem, describe, plan_purchases
from synthbio_pipeline.pipeline.conditions import read_conditions
from synthbio_pipeline.pipeline.runner import Ticket, body_sha256, save_ticket

URL = "http://127.0.0.1:9"


def conditions(tmp_path):
    table = tmp_path / "c.tsv"
    table.write_text(
        "condition\tnum_samples\tmodality\tcell_type_ontology_id\n"
        "lung\t30\tbulk\t\nliver\t20\tbulk\t\nmac\t5\tsingle-cell\tCL:0000583\n"
    )
    return read_conditions(table, {"seed": 1})


def test_the_plan_counts_queries_and_samples_per_model_and_leaves_out_what_tickets_hold(tmp_path):
    found = conditions(tmp_path)
    tickets = tmp_path / "tickets"
    lung = found[0]
    save_ticket(tickets / "bulk" / "lung.json", Ticket("q1", body_sha256(lung.wire_body()), "gem-1-bulk", URL))
    # A ticket of another body (the row was edited since) buys nothing: the query is bought again.
    save_ticket(tickets / "bulk" / "liver.json", Ticket("q2", "0" * 64, "gem-1-bulk", URL))
    plan = plan_purchases(found, lambda modality: tickets / modality, URL)
    bulk, single = plan["gem-1-bulk"], plan["gem-1-sc"]
    assert (bulk.queries, bulk.samples, bulk.held_queries, bulk.held_samples) == (1, 20, 1, 30)
    assert (single.queries, single.samples, single.held_queries) == (1, 5, 0)
    text = describe(plan)
    assert "This run would buy 2 model queries, 25 samples" in text
    assert "gem-1-bulk (bulk): 1 queries, 20 samples to buy; 1 queries (30 samples) already bought" in text
    # A ticket of another API does not count either.
    assert plan_purchases(found, lambda modality: tickets / modality, "https://x.example")["gem-1-bulk"].queries == 2


def test_the_guard_names_the_total_the_limit_and_how_to_raise_it(tmp_path):
    plan = plan_purchases(conditions(tmp_path), lambda modality: tmp_path / modality, URL)
    assert budget_problem(plan, 55) is None and budget_problem(plan, None) is None
    problem = budget_problem(plan, 54)
    assert "55 samples in 3 model queries" in problem and "max_samples (54)" in problem
    assert "--config max_samples=55" in problem
    per_modality = budget_problem(plan, {"bulk": 10})
    assert "50 bulk samples (max_samples.bulk is 10)" in per_modality and "single-cell" not in per_modality
    assert budget_problem(plan, {"bulk": 50, "single-cell": 5}) is None


def test_a_dry_run_says_what_the_run_would_buy_and_what_tickets_hold(make_emulator, emulator_token, tmp_path):
    emulator = make_emulator()
    copy_config(ROOT / ".test/config", tmp_path)
    arguments = (
        "-n",
        "--cores",
        "1",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(tmp_path),
        "--config",
        f"api_base_url={emulator.url}",
    )

    run = snakemake(*arguments, cwd=tmp_path, token=emulator_token)
    said = run.stdout + run.stderr
    assert run.returncode == 0, output_of(run)
    assert "This run would buy 3 model queries, 6 samples" in said
    assert "gem-1-bulk (bulk): 2 queries, 4 samples to buy" in said
    assert "gem-1-sc (single-cell): 1 queries, 2 samples to buy" in said

    config = yaml.safe_load((tmp_path / "config/config.yaml").read_text())
    (lung,) = [c for c in read_conditions(tmp_path / "config/conditions.tsv", config["defaults"]) if c.name == "lung"]
    ticket = tmp_path / "results/predictions/bulk/.tickets/lung.json"
    save_ticket(ticket, Ticket("q-lung", body_sha256(lung.wire_body()), "gem-1-bulk", emulator.url))
    run = snakemake(*arguments, cwd=tmp_path, token=emulator_token)
    said = run.stdout + run.stderr
    assert run.returncode == 0, output_of(run)
    assert "This run would buy 2 model queries, 4 samples" in said
    assert "gem-1-bulk (bulk): 1 queries, 2 samples to buy; 1 queries (2 samples) already bought" in said
    assert json.loads(ticket.read_text())["query_id"] == "q-lung"
    assert sum(emulator.stats()["requests"].values()) == 0


def test_metadata_predictions_count_against_the_budget_with_the_rows(tmp_path):
    from synthbio_pipeline.pipeline.budget import with_purchases

    plan = plan_purchases(conditions(tmp_path), lambda modality: tmp_path / modality, URL)
    combined = with_purchases(plan, [("gem-1-bulk_predict-metadata", "bulk", 1, 50)])
    assert budget_problem(plan, 60) is None
    assert "105 samples in 4 model queries" in budget_problem(combined, 60)
    assert plan["gem-1-bulk"].samples == 50 and "gem-1-bulk_predict-metadata" not in plan  # not changed


# Snakemake driven from Python, as a notebook or a workflow manager does: no command line to say
# whether jobs will run when the Snakefile is parsed.
THROUGH_THE_API = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    workdir, snakefile, url, max_samples = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    with SnakemakeApi(OutputSettings()) as api:
        try:
            workflow = api.workflow(
                snakefile=snakefile,
                workdir=workdir,
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(
                    configfiles=[workdir / "config" / "config.yaml"],
                    config={"api_base_url": url, "poll_interval_seconds": 1, "max_samples": max_samples},
                ),
            )
            workflow.dag(DAGSettings()).execute_workflow()
        except Exception as error:
            print(f"refused: {error}", file=sys.stderr)
            sys.exit(3)
    """
)


def through_the_api(workdir, url, max_samples, token):
    return subprocess.run(
        [sys.executable, "-c", THROUGH_THE_API, str(workdir), str(SNAKEFILE), url, str(max_samples)],
        cwd=workdir,
        env=snakemake_env(token),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_snakemake_driven_through_its_python_api_is_held_to_the_budget(make_emulator, emulator_token, tmp_path):
    """The guard does not depend on Snakemake's command line: through its Python API the command
    is not known when the Snakefile is parsed, and the table is held to max_samples as a run is."""
    emulator = make_emulator()
    copy_config(ROOT / ".test/config", tmp_path)  # 3 queries, 6 samples
    run = through_the_api(tmp_path, emulator.url, 5, emulator_token)
    assert run.returncode == 3, output_of(run)
    assert "refused: this run would buy 6 samples" in run.stderr and "max_samples (5)" in run.stderr
    assert sum(emulator.stats()["requests"].values()) == 0
    assert not (tmp_path / "results" / "predictions").exists()


def test_through_the_python_api_the_token_and_the_service_are_checked_before_any_job(
    make_emulator, emulator_token, tmp_path
):
    """The preflight a command-line run makes while reading the Snakefile, made at onstart."""
    emulator = make_emulator()
    copy_config(ROOT / ".test/config", tmp_path)
    run = through_the_api(tmp_path, emulator.url, 6, None)
    assert run.returncode == 3, output_of(run)
    assert "refused: No Synthesize Bio API token for the emulator" in run.stderr, output_of(run)
    assert sum(emulator.stats()["requests"].values()) == 0 and not (tmp_path / "results").exists()

    # A token the service does not take: the preflight's request says so, and no job starts.
    run = through_the_api(tmp_path, emulator.url, 6, "not-the-emulators-token")
    assert run.returncode == 3, output_of(run)
    assert "refused: the token was refused by" in run.stderr, output_of(run)
    assert "predict" not in emulator.stats()["requests"] and not (tmp_path / "results").exists()

    run = through_the_api(tmp_path, emulator.url, 6, emulator_token)
    assert run.returncode == 0, output_of(run)
    assert "This run would buy 3 model queries, 6 samples" in run.stderr
    assert sum(emulator.stats()["submissions"].values()) == 3


def test_a_reference_rows_ticket_is_recognised_by_the_counts_it_was_sent_with(tmp_path):
    table = tmp_path / "c.tsv"
    table.write_text(
        "condition\tnum_samples\treference\treference_sample\tperturbation_type\nko\t3\tr.tsv\tS1\tcrispr\n"
    )
    (ko,) = read_conditions(table)
    counts = [5, 0, 7]
    save_ticket(
        tmp_path / "bulk/ko.json",
        Ticket("q-ko", body_sha256(ko.wire_body(counts)), "gem-1-bulk_reference-conditioning", URL),
    )
    # Without the counts the body differs from the one bought: to buy, never undercounted.
    assert plan_purchases([ko], lambda group: tmp_path / group, URL)[ko.model_id].samples == 3
    plan = plan_purchases([ko], lambda group: tmp_path / group, URL, reference_counts={"ko": counts})
    assert (plan[ko.model_id].samples, plan[ko.model_id].held_samples) == (0, 3)
    # Other counts (the reference file changed): a new query, to buy.
    plan = plan_purchases([ko], lambda group: tmp_path / group, URL, reference_counts={"ko": [5, 0, 8]})
    assert plan[ko.model_id].samples == 3
