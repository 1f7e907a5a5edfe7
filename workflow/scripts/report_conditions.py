"""The conditions table, as the workflow runs it, as an HTML page (rule report_conditions)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.pipeline.provenance import read_provenance
from synthbio_pipeline.pipeline.report import write_conditions_page

frame = write_conditions_page(
    snakemake.input.table,
    snakemake.output[0],
    snakemake.params.defaults,
    provenance=read_provenance(list(snakemake.input.provenance)),
)
print(f"{len(frame)} conditions", file=sys.stderr)
