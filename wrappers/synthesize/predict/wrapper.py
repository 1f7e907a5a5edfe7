"""Snakemake wrapper: Synthesize Bio predictions, from query JSON files to one Parquet pair.

Submits each query, polls it (each status change is logged with the elapsed time),
downloads and parses the result. Several queries (a batch) run at once, as many as the
job's ``synthbio_api`` resource, and are parsed one at a time. Expression models (baseline
and reference conditioning) give one expression and one metadata file; metadata-prediction
models give predicted_metadata and classifier_probs. The API token is read from
SYNTHESIZE_API_KEY (or the system keyring) inside the job: it is never a parameter.
With ``self_hosted`` (params) each query is one synchronous request to a model container,
answered with an Arrow stream parsed straight into the same parts.

The log gets every status change, a line per waiting query every ``heartbeat`` seconds
(params; default 60) and a line each time a query is ready. A failure is one line on the
console (what failed, what to do); its traceback goes to the log only.
"""

__author__ = "synthbio-snakemake contributors"
__license__ = "MIT"

import json
import logging
import sys
from pathlib import Path

# Appended: a rerun resumes the same model queries, and its log tells the whole story.
console = sys.stderr
sys.stderr = open(snakemake.log[0], "a") if snakemake.log else sys.stderr
logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(threadName)s %(message)s",
)

from synthbio_pipeline.client.download import DownloadLimits
from synthbio_pipeline.pipeline.references import read_gene_order
from synthbio_pipeline.pipeline.runner import BatchQuery, failure_line, run_batch


def download_limits():
    """Optional {bytes_per_value, deadline_seconds}: bounds of each result download (size, time)."""
    limits = snakemake.params.get("download_limits") or {}
    return DownloadLimits(**limits) if limits else None


def required(name):
    value = snakemake.params.get(name)
    if value is None or value == "" or value == []:
        raise ValueError(f"Missing required parameter: {name}")
    return value


def json_input(name):
    """An optional JSON input: {query name: value}."""
    path = snakemake.input.get(name)
    if not path:
        return {}
    with open(path) as handle:
        return json.load(handle)


def query_files():
    """The query files: ``input.query``, or ``input.queries`` (files, or folders of ``{condition}.json``)."""
    given = snakemake.input.get("queries") or snakemake.input.get("query") or snakemake.input[0]
    files = []
    for item in [given] if isinstance(given, str) else list(given):
        path = Path(item)
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return files


def main():
    files = query_files()
    conditions = snakemake.params.get("conditions") or snakemake.params.get("condition")
    if conditions is None:
        conditions = [path.stem for path in files]
    elif isinstance(conditions, str):
        conditions = [conditions]
    if len(files) == 1 and len(conditions) == 1:
        by_condition = {conditions[0]: files[0]}
    else:
        # Folders list their files by name; the conditions' order is the output's sample order.
        by_stem = {path.stem: path for path in files}
        missing = [name for name in conditions if name not in by_stem]
        if missing:
            raise ValueError(f"No query file for condition(s) {', '.join(missing)} among {len(files)} input files")
        by_condition = {name: by_stem[name] for name in conditions}

    model_id = required("model_id")
    as_counts = snakemake.params.get("as_counts", True)
    if not isinstance(as_counts, bool):
        raise ValueError(f"Parameter as_counts must be True or False, not {as_counts!r}")

    # Per query: columns added to its samples' metadata rows, and the ids of its samples
    # (metadata prediction: the inputs are counts, the outputs are named by these).
    columns = json_input("columns")
    samples = json_input("samples")
    if snakemake.output.get("predicted_metadata"):
        outputs = {
            "predicted_out": snakemake.output.predicted_metadata,
            "probs_out": snakemake.output.classifier_probs,
            # Optional: what the model encoded each sample to (the workflow's outputs: latents).
            "latents_out": snakemake.output.get("latents"),
        }
    else:
        outputs = {
            "expression_out": snakemake.output.expression,
            "metadata_out": snakemake.output.metadata,
            # Optional: the samples' latents (the workflow's outputs: latents).
            "latents_out": snakemake.output.get("latents"),
        }
    gene_order = snakemake.input.get("gene_order")

    summary = run_batch(
        [
            BatchQuery(
                name,
                path,
                model_id if isinstance(model_id, str) else model_id[name],
                extra_columns=columns.get(name) or None,
                sample_ids=tuple(samples[name]) if name in samples else None,
            )
            for name, path in by_condition.items()
        ],
        **outputs,
        expected_genes=read_gene_order(gene_order) if gene_order else None,
        in_flight=int(snakemake.resources.get("synthbio_api", 1)),
        ticket_dir=snakemake.params.get("ticket_dir"),
        base_url=snakemake.params.get("base_url"),
        poll_interval=float(snakemake.params.get("poll_interval", 2.0)),
        poll_timeout=float(snakemake.params.get("poll_timeout", 900.0)),
        as_counts=as_counts,
        resubmit_failed=int(snakemake.params.get("resubmit_failed", 0)),
        heartbeat=float(snakemake.params.get("heartbeat", 60.0)),
        # A self-hosted model container (None: SYNTHESIZE_SELF_HOSTED decides, as in the
        # vendor's client), and the hosts plain http may go to.
        self_hosted=snakemake.params.get("self_hosted"),
        allowed_http_hosts=tuple(snakemake.params.get("allowed_http_hosts") or ()),
        send_token_over_http=bool(snakemake.params.get("send_token_over_http", False)),
        download_limits=download_limits(),
        log=logging.getLogger("synthesize.predict"),
    )

    if snakemake.output.get("summary"):
        # Per condition: model query id, model version, samples, seconds, submissions.
        with open(snakemake.output.summary, "w") as out:
            json.dump(summary, out, indent=2)


try:
    main()
except Exception as error:
    logging.getLogger("synthesize.predict").exception("the job failed")
    where = f" (traceback: {snakemake.log[0]})" if snakemake.log else ""
    print(f"predict failed: {failure_line(error)}{where}", file=console)
    sys.exit(1)
