"""Snakemake wrapper: one Synthesize Bio prediction, from query JSON to Parquet parts.

Submits the query, polls it (each status change is logged with the elapsed time),
downloads and parses the result. The API token is read from SYNTHESIZE_API_KEY (or
the system keyring) inside the job: it is never a parameter.
"""

__author__ = "synthbio-snakemake contributors"
__license__ = "MIT"

import logging
import sys

# Appended: a rerun resumes the same model query, and its log tells the whole story.
sys.stderr = open(snakemake.log[0], "a") if snakemake.log else sys.stderr
logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(message)s",
)

from synthbio_pipeline.runner import run_prediction


def required(name):
    value = snakemake.params.get(name)
    if value is None or value == "":
        raise ValueError(f"Missing required parameter: {name}")
    return value


as_counts = snakemake.params.get("as_counts", True)
if not isinstance(as_counts, bool):
    raise ValueError(f"Parameter as_counts must be True or False, not {as_counts!r}")

run_prediction(
    snakemake.input.get("query", snakemake.input[0]),
    model_id=required("model_id"),
    condition=required("condition"),
    expression_out=snakemake.output.expression,
    metadata_out=snakemake.output.metadata,
    base_url=snakemake.params.get("base_url"),
    poll_interval=float(snakemake.params.get("poll_interval", 2.0)),
    poll_timeout=float(snakemake.params.get("poll_timeout", 900.0)),
    as_counts=as_counts,
    resubmit_failed=int(snakemake.params.get("resubmit_failed", 0)),
    log=logging.getLogger("synthesize.predict"),
)
