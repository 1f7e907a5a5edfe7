"""MA plots and top changed genes of the reference-conditioned conditions (rule report_reference)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.pipeline.report_reference import write_reference_report

output = snakemake.output
ref = write_reference_report(
    snakemake.input.expression,
    snakemake.input.metadata,
    snakemake.input.references,
    figure=output.figure,
    table=output.table,
    html=output.html,
)
print(
    f"{snakemake.wildcards.group}: {len(ref.conditions)} reference-conditioned conditions, "
    f"{len(ref.panels)} drawn, {ref.n_genes} genes",
    file=sys.stderr,
)
for note in ref.notes:
    print(note, file=sys.stderr)
