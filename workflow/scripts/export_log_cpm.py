"""Write log1p-CPM of a modality's counts as Parquet (rule export_log_cpm)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.formats.exports import to_log_cpm

summary = to_log_cpm(snakemake.input.expression, snakemake.output[0])
print(summary, file=sys.stderr)
