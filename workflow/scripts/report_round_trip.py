"""The round trip of one output group: requested vs predicted metadata (rule report_round_trip)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.pipeline.report_reference import write_round_trip

output = snakemake.output
rt = write_round_trip(
    snakemake.input.metadata,
    snakemake.input.predicted,
    snakemake.input.probabilities,
    table=output.table,
    html=output.html,
    figure=output.figure,
    requests=snakemake.params.requests,
)
print(
    f"{snakemake.wildcards.group}: {len(rt.conditions)} conditions, {rt.samples} samples, "
    f"fields compared: {', '.join(rt.fields) or 'none'}; not predicted: {', '.join(rt.not_predicted) or 'none'}; "
    f"lists, not compared: {', '.join(rt.lists) or 'none'}",
    file=sys.stderr,
)
