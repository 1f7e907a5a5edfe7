"""Merge the per-condition parts of one modality (rule merge)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.formats.parquet import merge_parts

summary = merge_parts(
    list(snakemake.input.expression),
    list(snakemake.input.metadata),
    snakemake.output.expression,
    snakemake.output.metadata,
)
logging.info("%s: %s", snakemake.wildcards.modality, summary)
