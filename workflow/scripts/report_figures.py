"""Draw the report figures and per-condition table of one output group (rule report_figures)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.pipeline.report import (
    read_run_summaries,
    write_condition_summary,
    write_report,
)

output = snakemake.output
runs = read_run_summaries(snakemake.input.summaries)
data = write_report(
    snakemake.input.expression,
    snakemake.input.metadata,
    library_sizes=output.get("library_sizes"),
    detected_genes=output.detected_genes,
    pca=output.pca,
    correlation=output.condition_correlation,
    summary=output.summary,
    runs=runs,
)
write_condition_summary(data, output.summary_tsv, runs)
print(
    f"{snakemake.wildcards.group}: {len(data.samples)} samples, "
    f"{len(data.conditions)} conditions, {data.n_genes} genes ({data.backend})",
    file=sys.stderr,
)
