"""Write one condition's query, in the API's wire format (rule write_query)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.conditions import write_query

condition = snakemake.params.condition
write_query(condition, snakemake.output[0])
print(
    f"{condition.name}: {condition.num_samples} sample(s) for {condition.model_id}",
    file=sys.stderr,
)
