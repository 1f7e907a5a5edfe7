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

from synthbio_pipeline.client.http import check_base_url, token_may_travel
from synthbio_pipeline.client.self_hosted import self_hosted_enabled
from synthbio_pipeline.pipeline.budget import (
    budget_problem,
    describe,
    plan_purchases,
    with_purchases,
)
from synthbio_pipeline.pipeline.conditions import (
    ConditionsError,
    TableProblem,
    read_conditions,
)
from synthbio_pipeline.pipeline.predict_metadata import (
    describe_plan,
    group_metadata_model,
    planned_predictions,
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
    with_boolean_words,
)
from synthbio_pipeline.pipeline.references import (
    GENE_ORDER_MODELS,
    WORKFLOW_OUTPUT_ROOTS,
    CountsFiles,
    aligned_reference_counts,
    annotation_problems,
    gene_order_path,
    known_gene_order,
    own_output_problem,
    raise_if_problems,
    read_annotations,
    read_configured_gene_order,
    read_gene_order,
    reference_problems,
)
from synthbio_pipeline.vocabulary.families import (
    OUTPUT_GROUPS,
    group_family,
    group_modality,
)
from synthbio_pipeline.vocabulary.models import (
    MODALITIES,
    MODALITY_MODELS,
    PREDICT_METADATA_MODELS,
)

# The output group whose gene order a model's (rule gene_order's {model}) is.
GROUP_OF_GENE_ORDER_MODEL = {model: group for group, model in GENE_ORDER_MODELS.items()}


wildcard_constraints:
    condition=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    modality="|".join(map(re.escape, MODALITIES)),
    # An output group: a modality of one model family (bulk, gem-2-bulk, ...).
    group="|".join(map(re.escape, OUTPUT_GROUPS)),
    batch=r"[0-9]+",
    name=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    service=r"[A-Za-z0-9._-]+",
    model="|".join(map(re.escape, GENE_ORDER_MODELS.values())),


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
    in the frame of snakemake.cli.args_to_api, say it. Inside a cluster job (the main
    process has checked) and in a dry run: False. None when Snakemake was not started from
    its command line (its Python API parses the Snakefile before it is told what to run).
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
    return None


def config_schema():
    schema_file = workflow.current_basedir.join("../schemas/config.schema.yaml")
    with workflow.sourcecache.open(schema_file) as handle:
        return yaml.safe_load(handle)


# --config as_counts=false arrives as text: the table's boolean words are read as booleans.
config.update(with_boolean_words(config, config_schema()))
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
# Self-hosted: a model container answers each query synchronously (config self_hosted, or
# SYNTHESIZE_SELF_HOSTED as the vendor's client reads it); its token is optional. Plain http
# goes to loopback or to the hosts listed in allowed_http_hosts, with the token only if
# send_token_over_http says so.
SELF_HOSTED = bool(config["self_hosted"]) or self_hosted_enabled()
check_base_url(config["api_base_url"], allowed_http_hosts=config["allowed_http_hosts"])
if not SELF_HOSTED and not token_may_travel(
    config["api_base_url"], send_token_over_http=config["send_token_over_http"]
):
    raise WorkflowError(
        f"api_base_url {config['api_base_url']} is plain http: the API needs the token, which is not "
        "sent unencrypted unless send_token_over_http: true (config/README.md, 'Self-hosted')"
    )
RUNS_JOBS = runs_jobs()
# Money: the budget guard holds unless the command surely buys nothing. A dry run says the
# plan; a command that cannot be told (Snakemake's Python API) is held to it as a run is.
GUARDS_BUDGET = RUNS_JOBS is not False or workflow.output_settings.dryrun
# Not when linting (Snakemake reads no environment then), nor for a self-hosted container.
TOKEN_NEEDED = workflow.check_envvars and not SELF_HOSTED
if TOKEN_NEEDED and (RUNS_JOBS or workflow.output_settings.dryrun):
    check_token(config["api_base_url"], allowed_http_hosts=config["allowed_http_hosts"])


def ticket_dir(group):
    """Where the predict jobs of an output group keep their tickets (under a module's prefix too)."""
    path = f"results/predictions/{group}/.tickets"
    try:
        return Path(workflow.modifier.path_modifier.replace_prefix(path))
    except AttributeError:
        return Path(path)


# Counts as text from log1p-CPM values would be mislabelled: refuse before any job.
if config["outputs"]["counts_tsv"] and not config["as_counts"]:
    raise WorkflowError(
        "outputs: counts_tsv: true needs as_counts: true (with as_counts: false there are "
        "no counts to write); switch one of them"
    )
# Metadata prediction reads counts: log1p-CPM cannot be sent.
if config["outputs"]["predicted_metadata"] and not config["as_counts"]:
    raise WorkflowError(
        "outputs: predicted_metadata: true needs as_counts: true (the model reads counts); "
        "switch one of them"
    )
ANNOTATIONS = {entry.name: entry for entry in read_annotations(config["annotate"])}


def prefixed(path):
    """A path as this workflow's rules see it (under a module's prefix, if any)."""
    try:
        return workflow.modifier.path_modifier.replace_prefix(path)
    except AttributeError:
        return path


# A reference or annotate file that this workflow writes would make the run depend on its
# own output (and change under the rows that use it): it must be a copy kept elsewhere.
_own = own_output_problem(
    [c.reference for c in CONDITIONS.values() if c.is_reference]
    + [entry.path for entry in ANNOTATIONS.values()],
    [prefixed(root) for root in WORKFLOW_OUTPUT_ROOTS],
)
if _own:
    raise WorkflowError(_own)


def gene_order_file(group):
    """The gene order the counts of an output group's references are aligned to (GEM-1's
    and GEM-2's differ): the config's file (GEM-1 groups), or the cache the rule gene_order
    fills (resources/gene_order/{service}/{model}.json).
    """
    configured = config["gene_order_files"].get(group)
    if configured:
        return configured
    return gene_order_path(config["api_base_url"], GENE_ORDER_MODELS[group])


def gene_order_input(group):
    """gene_order_file as an input of a rule (a configured file is the user's, never prefixed)."""
    path = gene_order_file(group)
    return local(path) if config["gene_order_files"].get(group) else path


def reference_conditions(group):
    """The reference rows whose samples merge into an output group."""
    return [c for c in CONDITIONS.values() if c.group == group and c.is_reference]


def gene_order_groups():
    """The output groups whose gene order the run needs: reference rows or annotate files."""
    wanted = {c.group for c in CONDITIONS.values() if c.is_reference}
    wanted |= {entry.group for entry in ANNOTATIONS.values()}
    return [g for g in OUTPUT_GROUPS if g in wanted]


def known_gene_orders():
    """{group: gene order} for those known before any job: configured, cached, or in this
    workflow's own results of the group's baseline model from this service (free to read).
    """
    orders = {}
    for group in gene_order_groups():
        configured = config["gene_order_files"].get(group)
        if configured:
            if not os.path.exists(configured):
                raise WorkflowError(
                    f"gene_order_files.{group}: {configured} does not exist (config/README.md, "
                    "'Reference conditioning')"
                )
            orders[group] = read_configured_gene_order(
                f"gene_order_files.{group}", configured, GENE_ORDER_MODELS[group]
            )
            continue
        cache = prefixed(gene_order_file(group))
        if os.path.exists(cache):
            orders[group] = read_gene_order(cache)
            continue
        known = known_gene_order(
            prefixed(f"results/predictions/{group}"),
            GENE_ORDER_MODELS[group],
            config["api_base_url"],
        )
        if known is not None:
            orders[group] = known[0]
    return orders


def gene_order_checks(wildcards):
    """What the gene_order job checks once it knows the order: the reference rows and annotate
    files of its output group (when the order was not known before the run, this is where
    their overlap with the model's genes is first checked, before any of their queries is
    written).
    """
    group = GROUP_OF_GENE_ORDER_MODEL[wildcards.model]
    return {
        "table": config["conditions"],
        "group": group,
        "conditions": reference_conditions(group),
        "annotations": [a for a in ANNOTATIONS.values() if a.group == group],
    }


# Reference and annotate files are checked here, before any job: every problem with them
# (missing file or sample, gene symbols, values that are not counts, the other modality's
# data, and too little overlap with the model's genes when the gene order is known) stops
# the run with the table's file:line and the file and sample. When the gene order must first
# be bought (the first reference run against a service), the gene_order job checks the
# overlap before any reference or annotate query is written. Only the main process reads
# the files.
def samples_of(group):
    """The samples of an output group's rows (those metadata prediction reads)."""
    return sum(c.num_samples for c in CONDITIONS.values() if c.group == group)


_files = CountsFiles()
_orders, _unknown = {}, []
if workflow.is_main_process and gene_order_groups():
    _orders = known_gene_orders()
    raise_if_problems(
        reference_problems(
            CONDITIONS.values(), config["conditions"], _orders, files=_files
        ),
        annotation_problems(ANNOTATIONS.values(), _orders, files=_files, first=256),
    )
    _unknown = [g for g in gene_order_groups() if g not in _orders]
    for _group in _unknown:
        print(
            f"The gene order of {GENE_ORDER_MODELS[_group]} is not known yet: one sample "
            "of it will be bought to learn it (config/README.md, 'Reference conditioning').",
            file=sys.stderr,
        )


# The budget guard: a run that would buy more than max_samples stops here, before any
# request. What the run would buy is said by `snakemake -n`, and by a run once the service
# has answered the preflight. A reference row's ticket holds the body sent with its aligned
# counts: they are aligned here too, where the gene order is known, to recognise it.
if GUARDS_BUDGET:
    PURCHASES = plan_purchases(
        CONDITIONS.values(),
        ticket_dir,
        config["api_base_url"],
        allowed_http_hosts=config["allowed_http_hosts"],
        reference_counts=aligned_reference_counts(
            CONDITIONS.values(), _orders, files=_files
        ),
    )
    _over = budget_problem(PURCHASES, config["max_samples"])
    if _over:
        raise WorkflowError(_over)
    # The gene order's one-sample queries are bought too: the budget counts them.
    if _unknown:
        PURCHASES = with_purchases(
            PURCHASES,
            [(GENE_ORDER_MODELS[g], group_modality(g), 1, 1) for g in _unknown],
        )
        _over = budget_problem(PURCHASES, config["max_samples"])
        if _over:
            raise WorkflowError(
                f"{_over} (the gene order's one-sample queries included)"
            )


def service_problem_before_jobs():
    """What stops the run before any job, if anything: the API answers, takes the token and has
    every model the table needs (the rows', and metadata prediction's: outputs:
    predicted_metadata, annotate). One line naming the cause and the fix."""
    predicting = {
        e.get("model") or PREDICT_METADATA_MODELS[e["modality"]]
        for e in config["annotate"]
    }
    if config["outputs"]["predicted_metadata"]:
        predicting |= {group_metadata_model(c.group) for c in CONDITIONS.values()}
    return service_problem(
        config["api_base_url"],
        {c.model_id for c in CONDITIONS.values()} | predicting,
        self_hosted=SELF_HOSTED,
        allowed_http_hosts=config["allowed_http_hosts"],
        send_token_over_http=config["send_token_over_http"],
    )


def check_at_start(log):
    """The token and the service, checked as Snakemake starts a run's jobs: when it was driven
    through its Python API, which command it runs is first known there (onstart is not called
    for a dry run, nor when nothing is to be done)."""
    if TOKEN_NEEDED:
        check_token(
            config["api_base_url"], allowed_http_hosts=config["allowed_http_hosts"]
        )
    problem = service_problem_before_jobs()
    if problem:
        raise PreflightError(problem)


# Raised here, not in a function: Snakemake shows one line of where (the message is the news).
if RUNS_JOBS:
    problem = service_problem_before_jobs()
    if problem:
        raise PreflightError(problem)
elif RUNS_JOBS is None:
    workflow.onstart(check_at_start)
if GUARDS_BUDGET:
    print(describe(PURCHASES), file=sys.stderr)
# What metadata prediction would buy, said before any job (each query is paid for).
if workflow.is_main_process and (
    config["outputs"]["predicted_metadata"] or ANNOTATIONS
):
    _plan = planned_predictions(
        {
            g: samples_of(g)
            for g in OUTPUT_GROUPS
            if config["outputs"]["predicted_metadata"]
        },
        {
            name: (entry.modality, len(_files.open(entry.path).samples), entry.model_id)
            for name, entry in ANNOTATIONS.items()
        },
        config["predict_metadata_batch"],
    )
    print(describe_plan(_plan), file=sys.stderr)
    # The budget guard again, with metadata prediction's samples (before any job buys them).
    if GUARDS_BUDGET:
        _modality_of = {
            group_metadata_model(g): group_modality(g) for g in OUTPUT_GROUPS
        }
        _modality_of |= {a.model_id: a.modality for a in ANNOTATIONS.values()}
        _over = budget_problem(
            with_purchases(
                PURCHASES,
                [
                    (model, _modality_of[model], queries, samples)
                    for model, _, queries, samples in _plan
                ],
            ),
            config["max_samples"],
        )
        if _over:
            raise WorkflowError(f"{_over} (metadata prediction included)")


def conditions_of(group):
    """The conditions whose samples merge into an output group (`bulk`: GEM-1 bulk rows;
    `gem-2-bulk`: GEM-2 bulk rows): a merged matrix holds one gene order and one family.
    """
    return [name for name, c in CONDITIONS.items() if c.group == group]


def present_groups():
    return [g for g in OUTPUT_GROUPS if conditions_of(g)]


def make_batches(size):
    """{group: {batch id: condition names}}: table order, `size` conditions per batch.

    A batch is one prediction job: its queries run at once and its results are parsed one
    at a time, so a job costs one core however long the API takes.
    """
    batches = {}
    for group in OUTPUT_GROUPS:
        names = conditions_of(group)
        chunks = [names[i : i + size] for i in range(0, len(names), size)]
        batches[group] = {f"{i:04d}": chunk for i, chunk in enumerate(chunks, 1)}
    return batches


BATCHES = make_batches(config["batch_size"])


REPORT_FIGURES = ("library_sizes", "detected_genes", "pca", "condition_correlation")


def report_figures():
    """The figures drawn per modality: no library sizes for log1p-CPM (the counts are gone)."""
    return [f for f in REPORT_FIGURES if config["as_counts"] or f != "library_sizes"]


def final_outputs():
    """The merged pair of every output group in the table (never bulk and single-cell
    mixed, never GEM-1 and GEM-2 mixed), and the files `outputs` asks for."""
    present = present_groups()
    outputs = config["outputs"]
    targets = expand(
        "results/{group}/{table}.parquet",
        group=present,
        table=["expression", "metadata"],
    )
    targets += expand(
        "results/{group}/{group}.h5ad",
        group=[g for g in present if group_modality(g) in outputs["h5ad"]],
    )
    # With as_counts false, expression.parquet is log1p-CPM already.
    if outputs["log_cpm"] and config["as_counts"]:
        targets += expand("results/{group}/log1p_cpm.parquet", group=present)
    if outputs["counts_tsv"]:
        targets += expand("results/{group}/counts.tsv.gz", group=present)
    if outputs["latents"]:
        targets += expand("results/{group}/latents.parquet", group=present)
    # The aligned references (the report compares each reference-conditioned condition with them).
    targets += [
        f"results/{g}/references.parquet" for g in present if reference_conditions(g)
    ]
    # A metadata-prediction model's latents: what it encoded each sample to.
    predicted = ["predicted_metadata", "classifier_probs"]
    predicted += ["encoded_latents"] if outputs["latents"] else []
    if outputs["predicted_metadata"]:
        targets += expand(
            "results/{group}/{table}.parquet",
            group=present,
            table=predicted,
        )
    targets += expand(
        "results/annotate/{name}/{table}.parquet",
        name=list(ANNOTATIONS),
        table=predicted,
    )
    if outputs["report"]:
        targets.append("results/report/conditions.html")
        names = [f"{f}.svg" for f in report_figures()] + ["summary.html", "summary.tsv"]
        targets += expand("results/report/{group}/{name}", group=present, name=names)
        targets += reference_report_targets(present)
    return targets


def get_batch(wildcards):
    """The names of a batch's conditions, in table order."""
    return BATCHES[wildcards.group][wildcards.batch]


def get_batch_conditions(wildcards):
    return [CONDITIONS[name] for name in get_batch(wildcards)]


def get_queries_digest(wildcards):
    """A short digest of a batch's requests, models and order: "3 queries, sha256 1a2b…".

    A parameter, so that editing a row reruns its batch only; short, so that the rerun
    reason of -n fits on a line (the requests themselves would run to pages). A reference
    row's request is digested without its counts (44,590 numbers do not belong in params);
    its reference file is an input of the batch, so editing the file reruns the batches
    that use it.
    """
    names = get_batch(wildcards)
    queries = [
        [
            n,
            CONDITIONS[n].model_id,
            CONDITIONS[n].wire_body(),
            CONDITIONS[n].reference,
            CONDITIONS[n].reference_sample,
        ]
        for n in names
    ]
    text = json.dumps(queries, sort_keys=True, separators=(",", ":"))
    return (
        f"{len(names)} queries, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}"
    )


def get_query_inputs(wildcards):
    """write_queries' inputs: for a batch with reference rows, their files (editing one
    reruns the batches that use it, and only them) and the model's gene order."""
    refs = [c for c in get_batch_conditions(wildcards) if c.is_reference]
    if not refs:
        return {}
    return {
        "references": [local(p) for p in dict.fromkeys(c.reference for c in refs)],
        "gene_order": gene_order_input(wildcards.group),
    }


def get_predict_inputs(wildcards):
    """predict's inputs: the batch's queries and the columns its samples get; with reference
    rows, the gene order their counts were sent in (a result in another order is refused).
    """
    prefix = f"results/queries/{wildcards.group}/{wildcards.batch}"
    inputs = {"queries": prefix, "columns": f"{prefix}.columns.json"}
    if any(c.is_reference for c in get_batch_conditions(wildcards)):
        inputs["gene_order"] = gene_order_input(wildcards.group)
    return inputs


def get_alignment_inputs(wildcards):
    refs = reference_conditions(wildcards.group)
    return {
        "gene_order": gene_order_input(wildcards.group),
        "references": [local(p) for p in dict.fromkeys(c.reference for c in refs)],
    }


def get_annotate_inputs(wildcards):
    entry = ANNOTATIONS[wildcards.name]
    return {"counts": local(entry.path), "gene_order": gene_order_input(entry.group)}


def get_metadata_in_flight(wildcards):
    """Queries the metadata-prediction job of an output group keeps in flight."""
    chunks = -(-samples_of(wildcards.group) // config["predict_metadata_batch"])
    return max(1, min(chunks, config["queries_per_job"]))


def get_model_ids(wildcards):
    return {name: CONDITIONS[name].model_id for name in get_batch(wildcards)}


def get_in_flight(wildcards):
    """Queries a prediction job keeps in flight (capped by --resources synthbio_api)."""
    return min(len(get_batch(wildcards)), config["queries_per_job"])


def get_parts(table):
    """Input function: the `table` part of every batch of one output group, in table order."""

    def parts(wildcards):
        return expand(
            "results/predictions/{group}/{batch}/{table}.parquet",
            group=wildcards.group,
            batch=BATCHES[wildcards.group],
            table=table,
        )

    return parts


def service_params():
    """The params of every job that asks the service (predict, predict_metadata, annotate).

    Functions of `resources`, so not rerun triggers: how often or how long to poll, where
    samples come from (a self-hosted container, the URL rules) and the download bounds are
    not what the samples are, and changing them must not buy finished predictions again.
    """
    return {
        "poll_interval": lambda wildcards, resources: config["poll_interval_seconds"],
        "poll_timeout": lambda wildcards, resources: config["poll_timeout_seconds"],
        "resubmit_failed": lambda wildcards, resources: config["resubmit_failed"],
        # Seconds between two "running for N s" lines of a waiting query in the log.
        "heartbeat": lambda wildcards, resources: config["progress_interval_seconds"],
        # A self-hosted model container (config self_hosted, or SYNTHESIZE_SELF_HOSTED).
        "self_hosted": lambda wildcards, resources: SELF_HOSTED,
        "allowed_http_hosts": lambda wildcards, resources: config["allowed_http_hosts"],
        "send_token_over_http": lambda wildcards, resources: config[
            "send_token_over_http"
        ],
        # Bounds of each result download (size per sample asked, deadline): config `download`.
        "download_limits": lambda wildcards, resources: config["download"],
    }


def latents_output(path):
    """{"latents": path} with outputs: latents, else nothing (an output of the rule or none)."""
    return {"latents": path} if config["outputs"]["latents"] else {}


def get_latents_parts(wildcards):
    """The latents part of every batch of one output group (outputs: latents), else none."""
    return get_parts("latents")(wildcards) if config["outputs"]["latents"] else []


def get_run_summaries(wildcards):
    """The prediction summaries (timings, submissions) of every batch of one output group."""
    return expand(
        "results/predictions/{group}/{batch}/summary.json",
        group=wildcards.group,
        batch=BATCHES[wildcards.group],
    )


def get_provenance_files(wildcards):
    """What made each output group's merged data (rule merge), for the report."""
    return expand("results/{group}/provenance.json", group=present_groups())


def figure_outputs():
    """The figures of rule report_figures, marked for the report."""
    return {
        name: report(
            f"results/report/{{group}}/{name}.svg",
            caption=f"../report/{name}.rst",
            category="{group}",
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
            "modality": group_modality(wildcards.group),
            "model family": group_family(wildcards.group),
            "figure": title,
            "data": data_source(input.expression),
        }

    return labels


# --- the report of the reference-conditioning and metadata-prediction families ------------


def has_reference_rows(group):
    """Whether a condition of an output group is conditioned on a reference sample."""
    return bool(reference_conditions(group))


def predicted_metadata_on():
    """Whether metadata is predicted for the generated samples (outputs: predicted_metadata)."""
    return bool(config.get("outputs", {}).get("predicted_metadata", False))


def reference_report_targets(groups):
    """The round trip (with predicted metadata) and the MA plots (with reference rows) of
    output groups, GEM-1's and GEM-2's alike (each read against its own family's model).
    """
    targets = []
    if predicted_metadata_on():
        targets += expand(
            "results/report/{group}/{name}",
            group=groups,
            name=["round_trip.tsv", "round_trip.html", "round_trip.svg"],
        )
    targets += expand(
        "results/report/{group}/{name}",
        group=[g for g in groups if has_reference_rows(g)],
        name=["ma_plots.svg", "top_changed_genes.tsv", "top_changed_genes.html"],
    )
    return targets


def get_requests(wildcards):
    """What each condition of an output group asked for: {condition: {metadata key: value}},
    in its family's vocabulary (GEM-2: the tissue by name, perturbation lists as lists).
    """
    return {
        name: dict(getattr(c, "metadata", None) or {})
        for name, c in CONDITIONS.items()
        if c.group == wildcards.group
    }


def reference_labels(title):
    """Report labels of the round trip and MA plots, as figure_labels' (`data` from the
    metadata file: the round trip reads no expression)."""

    def labels(wildcards, input):
        return {
            "modality": group_modality(wildcards.group),
            "model family": group_family(wildcards.group),
            "figure": title,
            "data": data_source(input.metadata),
        }

    return labels
