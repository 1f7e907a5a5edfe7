# Checks made once, at parse time, before any job runs; the constants and input
# functions the rules use. The logic lives in the synthbio_pipeline package.
import re
import sys
from pathlib import Path

import jsonschema
import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from synthbio_pipeline.client.http import check_base_url
from synthbio_pipeline.pipeline.budget import budget_problem, describe, plan_purchases
from synthbio_pipeline.pipeline.conditions import (
    ConditionsError,
    TableProblem,
    read_conditions,
)
from synthbio_pipeline.vocabulary.values import non_finite
from synthbio_pipeline.pipeline.report import data_source
from synthbio_pipeline.pipeline.preflight import check_token
from synthbio_pipeline.vocabulary.models import MODALITIES


wildcard_constraints:
    condition=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    modality="|".join(map(re.escape, MODALITIES)),
    batch=r"[0-9]+",


# The wrapper directory, found from this file, so that it resolves whatever the working
# directory and when this workflow is a module of another (its `workflow.basedir` is the
# host's). Computed once: the `wrapper:` expression is evaluated again when a job runs.
_wrappers_src = workflow.current_basedir.join("../../wrappers")
_wrappers_uri = _wrappers_src.get_path_or_uri(secret_free=True)
WRAPPERS = _wrappers_uri if "://" in _wrappers_uri else f"file:{_wrappers_uri}"


def schema_problems(path):
    """The rows of the table that break workflow/schemas/conditions.schema.yaml.

    One problem per row (jsonschema stops at the first), with file, line and column.
    Only called on a table read_conditions accepted, so pandas can parse it.
    """
    sep = "," if str(path).lower().endswith(".csv") else "\t"
    table = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        encoding="utf-8-sig",
    )
    # Line numbers as in the file (header = line 1); empty cells are "not set".
    table.index = table.index + 2
    table = table.fillna("")
    table = table[(table.map(str.strip) != "").any(axis=1)]
    table = table.map(lambda cell: None if cell.strip() == "" else cell)
    try:
        validate(table, "../schemas/conditions.schema.yaml", set_default=False)
        return []
    except WorkflowError:
        pass  # look at every row, to report them all at once
    problems = []
    for line, row in table.iterrows():
        try:
            schema = "../schemas/conditions.schema.yaml"
            validate(row.to_frame().T, schema, set_default=False)
        except WorkflowError as error:
            found = error.__context__  # the jsonschema ValidationError, if it is one
            if not isinstance(found, jsonschema.ValidationError):
                raise
            column = found.path[0] if found.path else None
            if found.validator == "required":
                column = found.message.split("'")[1]
            allowed = found.schema.get("description", "")
            message = f"{found.message}" + (f"; allowed: {allowed}" if allowed else "")
            name = row.get("condition")
            problems.append(TableProblem(str(path), line, column, message, name))
    return problems


def load_conditions(path, defaults, max_rows):
    """Every condition of the table, checked; raise one error listing every problem.

    The library reads the file first: it reports malformed tables (ragged rows, wrong
    delimiter, encodings, more than `max_rows` rows) precisely. The schema then checks the
    table it accepted.
    """
    conditions = read_conditions(path, defaults=defaults, max_rows=max_rows)
    # Cluster jobs parse this file again; the main process has checked the same table
    # (the schema pass costs about 1 s per job at 10,000 rows).
    if workflow.is_main_process:
        problems = schema_problems(path)
        if problems:
            raise ConditionsError(problems)
    return conditions


# NaN passes every comparison a schema makes (poll_timeout_seconds=nan would poll forever).
_not_finite = [f"{key}: {value!r}" for key, value in non_finite(config)]
if _not_finite:
    raise WorkflowError(
        f"config {', '.join(_not_finite)}: not a finite number; give a number "
        "(see config/README.md)"
    )
validate(config, "../schemas/config.schema.yaml")
CONDITIONS = {
    condition.name: condition
    for condition in load_conditions(
        config["conditions"], config["defaults"], config["max_table_rows"]
    )
}
# A token must not travel in clear text; without a token, stop before any job. The token
# is not looked for when linting (lint needs no secrets) nor again inside cluster jobs.
check_base_url(config["api_base_url"])
if workflow.check_envvars and workflow.is_main_process:
    check_token(config["api_base_url"])


def ticket_dir(modality):
    """Where the predict jobs of a modality keep their tickets (under a module's prefix too)."""
    path = f"results/predictions/{modality}/.tickets"
    try:
        return Path(workflow.modifier.path_modifier.replace_prefix(path))
    except AttributeError:
        return Path(path)


# What the run would buy, said before any job (`snakemake -n` shows it), and the budget guard:
# a run that would buy more than max_samples stops here, before any request.
if workflow.is_main_process:
    PURCHASES = plan_purchases(CONDITIONS.values(), ticket_dir, config["api_base_url"])
    print(describe(PURCHASES), file=sys.stderr)
    _over = budget_problem(PURCHASES, config["max_samples"])
    if _over:
        raise WorkflowError(_over)
# Counts as text from log1p-CPM values would be mislabelled: refuse before any job.
if config["outputs"]["counts_tsv"] and not config["as_counts"]:
    raise WorkflowError(
        "outputs: counts_tsv: true needs as_counts: true (with as_counts: false there are "
        "no counts to write); switch one of them"
    )


def conditions_of(modality):
    return [name for name, c in CONDITIONS.items() if c.modality == modality]


def make_batches(size):
    """{modality: {batch id: condition names}}: table order, `size` conditions per batch.

    A batch is one prediction job: its queries run at once and its results are parsed one
    at a time, so a job costs one core however long the API takes.
    """
    batches = {}
    for modality in MODALITIES:
        names = conditions_of(modality)
        chunks = [names[i : i + size] for i in range(0, len(names), size)]
        batches[modality] = {f"{i:04d}": chunk for i, chunk in enumerate(chunks, 1)}
    return batches


BATCHES = make_batches(config["batch_size"])


REPORT_FIGURES = ("library_sizes", "detected_genes", "pca", "condition_correlation")


def report_figures():
    """The figures drawn per modality: no library sizes for log1p-CPM (the counts are gone)."""
    return [f for f in REPORT_FIGURES if config["as_counts"] or f != "library_sizes"]


def final_outputs():
    """The merged pair of every modality in the table (never bulk and single-cell mixed),
    and the files `outputs` asks for."""
    present = [m for m in MODALITIES if conditions_of(m)]
    outputs = config["outputs"]
    targets = expand(
        "results/{modality}/{table}.parquet",
        modality=present,
        table=["expression", "metadata"],
    )
    targets += expand(
        "results/{modality}/{modality}.h5ad",
        modality=[m for m in present if m in outputs["h5ad"]],
    )
    # With as_counts false, expression.parquet is log1p-CPM already.
    if outputs["log_cpm"] and config["as_counts"]:
        targets += expand("results/{modality}/log1p_cpm.parquet", modality=present)
    if outputs["counts_tsv"]:
        targets += expand("results/{modality}/counts.tsv.gz", modality=present)
    if outputs["report"]:
        targets.append("results/report/conditions.html")
        names = [f"{f}.svg" for f in report_figures()] + ["summary.html", "summary.tsv"]
        targets += expand(
            "results/report/{modality}/{name}", modality=present, name=names
        )
    return targets


def get_batch(wildcards):
    """The names of a batch's conditions, in table order."""
    return BATCHES[wildcards.modality][wildcards.batch]


def get_batch_conditions(wildcards):
    return [CONDITIONS[name] for name in get_batch(wildcards)]


def get_wire_bodies(wildcards):
    """The request bodies: a parameter, so that editing a row reruns its batch only."""
    return {name: CONDITIONS[name].wire_body() for name in get_batch(wildcards)}


def get_model_ids(wildcards):
    return {name: CONDITIONS[name].model_id for name in get_batch(wildcards)}


def get_in_flight(wildcards):
    """Queries a prediction job keeps in flight (capped by --resources synthbio_api)."""
    return min(len(get_batch(wildcards)), config["queries_per_job"])


def get_parts(table):
    """Input function: the `table` part of every batch of one modality, in table order."""

    def parts(wildcards):
        return expand(
            "results/predictions/{modality}/{batch}/{table}.parquet",
            modality=wildcards.modality,
            batch=BATCHES[wildcards.modality],
            table=table,
        )

    return parts


def get_run_summaries(wildcards):
    """The prediction summaries (timings, submissions) of every batch of one modality."""
    return expand(
        "results/predictions/{modality}/{batch}/summary.json",
        modality=wildcards.modality,
        batch=BATCHES[wildcards.modality],
    )


def figure_outputs():
    """The figures of rule report_figures, marked for the report."""
    return {
        name: report(
            f"results/report/{{modality}}/{name}.svg",
            caption=f"../report/{name}.rst",
            category="{modality}",
            subcategory=FIGURE_SUBCATEGORIES[name],
            labels=figure_labels(FIGURE_TITLES[name]),
        )
        for name in report_figures()
    }


FIGURE_TITLES = {
    "library_sizes": "library sizes",
    "detected_genes": "detected genes",
    "pca": "PCA of log1p-CPM",
    "condition_correlation": "correlation of condition means",
}
FIGURE_SUBCATEGORIES = {
    "library_sizes": "Quality control",
    "detected_genes": "Quality control",
    "pca": "Structure",
    "condition_correlation": "Structure",
}


def figure_labels(title):
    """Report labels; `data` is read from the merged file when the report is made, so the
    report says emulator wherever the emulator made the data."""

    def labels(wildcards, input):
        return {
            "modality": wildcards.modality,
            "figure": title,
            "data": data_source(input.expression),
        }

    return labels
