"""Merge the per-condition parts of one output group (a modality of one model family), and
record what made them (rule merge)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.formats.parquet import merge_latents, merge_parts
from synthbio_pipeline.pipeline.provenance import write_provenance
from synthbio_pipeline.pipeline.report import data_source
from synthbio_pipeline.vocabulary.families import group_modality

summary = merge_parts(
    list(snakemake.input.expression),
    list(snakemake.input.metadata),
    snakemake.output.expression,
    snakemake.output.metadata,
)
logging.info("%s: %s", snakemake.wildcards.group, summary)
if snakemake.output.get("latents"):
    samples = merge_latents(list(snakemake.input.latents), snakemake.output.latents)
    logging.info("%s: latents of %d samples", snakemake.wildcards.group, samples)
record = write_provenance(
    snakemake.output.provenance,
    modality=group_modality(snakemake.wildcards.group),
    data=data_source(snakemake.output.expression),
    summaries=list(snakemake.input.summaries),
    conditions_table=snakemake.params.table,
    config=snakemake.params.config,
)
logging.info("provenance: %s", record)
