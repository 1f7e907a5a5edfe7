"""Write a batch's queries, one file per condition, in the API's wire format (rule write_queries)."""

import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.pipeline.conditions import write_query

folder = Path(snakemake.output[0])
folder.mkdir(parents=True, exist_ok=True)
for condition in snakemake.params.conditions:
    write_query(condition, folder / f"{condition.name}.json")
    print(
        f"{condition.name}: {condition.num_samples} sample(s) for {condition.model_id}",
        file=sys.stderr,
    )
