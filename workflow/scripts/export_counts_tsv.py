"""Write a modality's counts as gzipped TSV, genes x samples (rule export_counts_tsv)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.formats.exports import to_delimited

summary = to_delimited(snakemake.input.expression, snakemake.output[0], sep="\t")
print(summary, file=sys.stderr)
