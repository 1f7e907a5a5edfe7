"""Merge the per-condition parts of one modality, and record what made them (rule merge)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.formats.parquet import merge_parts
from synthbio_pipeline.pipeline.provenance import write_provenance
from synthbio_pipeline.pipeline.report import data_source

summary = merge_parts(
    list(snakemake.input.expression),
    list(snakemake.input.metadata),
    snakemake.output.expression,
    snakemake.output.metadata,
)
logging.info("%s: %s", snakemake.wildcards.modality, summary)
record = write_provenance(
    snakemake.output.provenance,
    modality=snakemake.wildcards.modality,
    data=data_source(snakemake.output.expression),
    summaries=list(snakemake.input.summaries),
    conditions_table=snakemake.params.table,
    config=snakemake.params.config,
)
logging.info("provenance: %s", record)
