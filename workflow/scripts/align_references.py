"""Align every reference-conditioned condition's sample to the model's gene order, check
the overlap, and write results/{modality}/references.parquet (rule align_references)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.pipeline.references import read_gene_order, write_references

write_references(
    snakemake.params.conditions,
    read_gene_order(snakemake.input.gene_order),
    snakemake.output[0],
    log=logging.getLogger("references"),
)
