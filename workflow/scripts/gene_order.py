"""Learn a model's gene order and cache it (rule gene_order): from this workflow's own
results of the model when it holds one, else from one paid query of one sample. Then check
the output group's reference rows and annotate files against it (their overlap with the model's
genes), before any of their queries is written."""

import logging
import os
import sys

console = sys.stderr
sys.stderr = open(snakemake.log[0], "a")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")

from synthbio_pipeline.client.download import DownloadLimits
from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.pipeline.references import (
    ReferenceError,
    annotation_problems,
    learn_gene_order,
    raise_if_problems,
    read_gene_order,
    reference_problems,
)
from synthbio_pipeline.pipeline.runner import failure_line


def main():
    model_id = snakemake.wildcards.model
    checks = snakemake.params.checks
    group = checks["group"]  # the output group whose gene order this is (bulk, gem-2-bulk, ...)
    out = snakemake.output[0]
    source = learn_gene_order(
        out,
        model_id=model_id,
        base_url=snakemake.params.base_url,
        predictions=os.path.join(snakemake.params.predictions, group),
        poll_interval=float(snakemake.params.poll_interval),
        poll_timeout=float(snakemake.params.poll_timeout),
        keep_ticket=True,
        # A self-hosted container answers it too; plain http only to the hosts listed.
        self_hosted=snakemake.params.self_hosted,
        allowed_http_hosts=tuple(snakemake.params.allowed_http_hosts or ()),
        send_token_over_http=bool(snakemake.params.send_token_over_http),
        download_limits=DownloadLimits(**snakemake.params.download_limits)
        if snakemake.params.download_limits
        else None,
        log=logging.getLogger("gene_order"),
    )
    logging.info("%s: gene order cached in %s, from %s", model_id, out, source)

    orders = {group: read_gene_order(out)}
    raise_if_problems(
        reference_problems(checks["conditions"], checks["table"], orders),
        annotation_problems(checks["annotations"], orders),
    )
    logging.info(
        "%d reference row(s) and %d annotate file(s) cover enough of the model's genes",
        len(checks["conditions"]),
        len(checks["annotations"]),
    )


try:
    main()
except SynthbioError as error:  # said on the console; the traceback stays in the log
    logging.exception("the job failed")
    text = str(error) if isinstance(error, ReferenceError) else failure_line(error)
    print(f"gene_order failed: {text} (log: {snakemake.log[0]})", file=console)
    sys.exit(1)
