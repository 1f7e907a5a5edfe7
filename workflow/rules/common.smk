# Checks made once, at parse time, before any job runs; the constants and input
# functions the rules use. The logic lives in the synthbio_pipeline package.
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from synthbio_pipeline.client.http import check_base_url
from synthbio_pipeline.pipeline.budget import budget_problem, describe, plan_purchases
from synthbio_pipeline.pipeline.conditions import (
    ConditionsError,
    TableProblem,
    read_conditions,
)
from synthbio_pipeline.pipeline.provenance import provenance_labels
from synthbio_pipeline.vocabulary.values import non_finite
from synthbio_pipeline.pipeline.report import data_source
from synthbio_pipeline.pipeline.preflight import (
    ConfigError,
    PreflightError,
    check_token,
    config_problems,
    service_problem,
)
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


# Snakemake options (as its command line parses them) that do something other than run jobs.
NO_JOB_OPTIONS = (
    "dryrun",
    "touch",
    "lint",
    "list_target_rules",
    "list_rules",
    "print_compilation",
    "containerize",
    "generate_unit_tests",
    "dag",
    "rulegraph",
    "filegraph",
    "d3dag",
    "unlock",
    "cleanup_metadata",
    "conda_cleanup_envs",
    "conda_create_envs_only",
    "list_conda_envs",
    "cleanup_shadow",
    "container_cleanup_images",
    "list_changes",
    "list_input_changes",
    "list_params_changes",
    "list_untracked",
    "summary",
    "detailed_summary",
    "archive",
    "delete_all_output",
    "delete_temp_output",
)


def runs_jobs():
    """Whether this command runs jobs: not -n, --report, --lint, --dag, --summary, --touch...

    This file is parsed before Snakemake decides what to do: the command line's options,
    in the frame of snakemake.cli.args_to_api, say it. Used as a library, or inside a
    cluster job (the main process has checked), Snakemake gets no preflight.
    """
    if not workflow.is_main_process or workflow.output_settings.dryrun:
        return False
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "args_to_api" and code.co_filename.endswith(
            os.path.join("snakemake", "cli.py")
        ):
            args = frame.f_locals.get("args")
            if getattr(args, "report", None) and not getattr(
                args, "report_after_run", False
            ):
                return False
            return not any(getattr(args, name, None) for name in NO_JOB_OPTIONS)
        frame = frame.f_back
    return False


def config_schema():
    schema_file = workflow.current_basedir.join("../schemas/config.schema.yaml")
    with workflow.sourcecache.open(schema_file) as handle:
        return yaml.safe_load(handle)


# One line per problem, naming the key (the schema's own messages would show regexes). NaN
# passes every comparison a schema makes (poll_timeout_seconds=nan would poll forever).
problems = [
    f"{key}: {value!r} is not a finite number; give a number"
    for key, value in non_finite(config)
]
problems += config_problems(config, config_schema())
if problems:
    raise ConfigError(problems)
validate(config, "../schemas/config.schema.yaml")  # sets the defaults
CONDITIONS = {
    condition.name: condition
    for condition in load_conditions(
        config["conditions"], config["defaults"], config["max_table_rows"]
    )
}
# A token must not travel in clear text; without a token, stop before any job. The token
# is not looked for when linting or reporting (no request is sent) nor inside cluster jobs.
check_base_url(config["api_base_url"])
RUNS_JOBS = runs_jobs()
if workflow.check_envvars and (RUNS_JOBS or workflow.output_settings.dryrun):
    check_token(config["api_base_url"])


def ticket_dir(modality):
    """Where the predict jobs of a modality keep their tickets (under a module's prefix too)."""
    path = f"results/predictions/{modality}/.tickets"
    try:
        return Path(workflow.modifier.path_modifier.replace_prefix(path))
    except AttributeError:
        return Path(path)


# The budget guard: a run that would buy more than max_samples stops here, before any
# request. What the run would buy is said by `snakemake -n`, and by a run once the service
# has answered the preflight.
if RUNS_JOBS or workflow.output_settings.dryrun:
    PURCHASES = plan_purchases(CONDITIONS.values(), ticket_dir, config["api_base_url"])
    _over = budget_problem(PURCHASES, config["max_samples"])
    if _over:
        raise WorkflowError(_over)
# Before any job: the API answers, takes the token and has every model the table needs.
if RUNS_JOBS:
    problem = service_problem(
        config["api_base_url"], {c.model_id for c in CONDITIONS.values()}
    )
    if problem:
        raise PreflightError(problem)
if RUNS_JOBS or workflow.output_settings.dryrun:
    print(describe(PURCHASES), file=sys.stderr)
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
        targets += reference_report_targets(present)
    return targets


def get_batch(wildcards):
    """The names of a batch's conditions, in table order."""
    return BATCHES[wildcards.modality][wildcards.batch]


def get_batch_conditions(wildcards):
    return [CONDITIONS[name] for name in get_batch(wildcards)]


def get_queries_digest(wildcards):
    """A short digest of a batch's requests, models and order: "3 queries, sha256 1a2b…".

    A parameter, so that editing a row reruns its batch only; short, so that the rerun
    reason of -n fits on a line (the requests themselves would run to pages).
    """
    names = get_batch(wildcards)
    queries = [[n, CONDITIONS[n].model_id, CONDITIONS[n].wire_body()] for n in names]
    text = json.dumps(queries, sort_keys=True, separators=(",", ":"))
    return (
        f"{len(names)} queries, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}"
    )


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


def get_provenance_files(wildcards):
    """What made each modality's merged data (rule merge), for the report."""
    present = [m for m in MODALITIES if conditions_of(m)]
    return expand("results/{modality}/provenance.json", modality=present)


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


# --- the report of the reference-conditioning and metadata-prediction families ------------


def has_reference_rows(modality):
    """Whether a condition of `modality` is conditioned on a reference sample."""
    return any(
        getattr(c, "reference", None)
        for c in CONDITIONS.values()
        if c.modality == modality
    )


def predicted_metadata_on():
    """Whether metadata is predicted for the generated samples (outputs: predicted_metadata)."""
    return bool(config.get("outputs", {}).get("predicted_metadata", False))


def reference_report_targets(modalities):
    """The round trip (with predicted metadata) and the MA plots (with reference rows)."""
    targets = []
    if predicted_metadata_on():
        targets += expand(
            "results/report/{modality}/{name}",
            modality=modalities,
            name=["round_trip.tsv", "round_trip.html", "round_trip.svg"],
        )
    targets += expand(
        "results/report/{modality}/{name}",
        modality=[m for m in modalities if has_reference_rows(m)],
        name=["ma_plots.svg", "top_changed_genes.tsv", "top_changed_genes.html"],
    )
    return targets


def get_requests(wildcards):
    """What each condition of a modality asked for: {condition: {metadata key: value}}."""
    return {
        name: dict(getattr(c, "metadata", None) or {})
        for name, c in CONDITIONS.items()
        if c.modality == wildcards.modality
    }


def reference_labels(title):
    """Report labels of the round trip and MA plots; `data` as for the other figures."""

    def labels(wildcards, input):
        return {
            "modality": wildcards.modality,
            "figure": title,
            "data": data_source(input.metadata),
        }

    return labels
