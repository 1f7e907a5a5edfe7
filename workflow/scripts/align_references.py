"""Align every reference-conditioned condition's sample to the model's gene order, check
the overlap, and write results/{modality}/references.parquet (rule align_references)."""

import logging
import sys

console = sys.stderr
sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.errors import SynthbioError
from synthbio_pipeline.pipeline.references import read_gene_order, write_references

try:
    write_references(
        snakemake.params.conditions,
        read_gene_order(snakemake.input.gene_order),
        snakemake.output[0],
        log=logging.getLogger("references"),
    )
except SynthbioError as error:  # a refused file: said on the console; the traceback stays in the log
    logging.exception("the job failed")
    print(f"align_references failed: {error} (log: {snakemake.log[0]})", file=console)
    sys.exit(1)
