"""Write a modality's merged pair as AnnData .h5ad (rule export_h5ad)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.formats.exports import to_h5ad

summary = to_h5ad(snakemake.input.expression, snakemake.input.metadata, snakemake.output[0])
print(summary, file=sys.stderr)
