"""Write metadata-prediction queries (rules write_metadata_queries and write_annotate_queries):
of the generated samples (the merged expression file), or of a user's counts file aligned
to the model's gene order."""

import logging
import sys

console = sys.stderr
sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.pipeline.jobs import refusal_on_console
from synthbio_pipeline.pipeline.predict_metadata import (
    queries_from_counts_file,
    queries_from_expression,
)
from synthbio_pipeline.pipeline.references import read_gene_order


def main():
    options = {
        "model_id": snakemake.params.model_id,
        "batch": int(snakemake.params.batch),
        "seed": snakemake.params.seed,
    }
    modality = snakemake.params.get("modality")
    out, samples_out = snakemake.output.queries, snakemake.output.samples
    if snakemake.input.get("expression"):
        samples = queries_from_expression(snakemake.input.expression, out, samples_out, modality=modality, **options)
    else:
        samples = queries_from_counts_file(
            snakemake.params.entry,
            read_gene_order(snakemake.input.gene_order),
            out,
            samples_out,
            path=snakemake.input.counts,
            log=logging.getLogger("annotate"),
            **options,
        )
    logging.info(
        "%d queries of at most %d samples (%d samples) for %s",
        len(samples),
        options["batch"],
        sum(map(len, samples.values())),
        options["model_id"],
    )


with refusal_on_console("metadata-prediction queries", console, snakemake.log[0]):  # traceback in the log
    main()
