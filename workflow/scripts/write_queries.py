"""Write a batch's queries, one file per condition, in the API's wire format (rule write_queries).

A reference row's query carries its reference's counts, aligned to the model's gene order
(results/{modality}/references.parquet); its samples get the reference's provenance as
metadata columns (the columns file, read by the prediction wrapper).
"""

import json
import sys
from pathlib import Path

sys.stderr = open(snakemake.log[0], "w")

from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.pipeline.conditions import write_query
from synthbio_pipeline.pipeline.references import read_reference_counts

conditions = snakemake.params.conditions
references = [c.name for c in conditions if c.is_reference]
aligned = read_reference_counts(snakemake.input.aligned, references) if references else {}

folder = Path(snakemake.output.queries)
folder.mkdir(parents=True, exist_ok=True)
columns = {}
for condition in conditions:
    counts = aligned.get(condition.name)
    write_query(
        condition,
        folder / f"{condition.name}.json",
        None if counts is None else counts.tolist(),
    )
    what = f"{condition.num_samples} sample(s) for {condition.model_id}"
    if counts is not None:
        columns[condition.name] = {
            "reference": condition.reference,
            "reference_sample": condition.reference_sample,
            "reference_library_size": int(counts.sum()),
        }
        what += f", from {condition.reference} (library size {int(counts.sum()):,})"
    print(f"{condition.name}: {what}", file=sys.stderr)
with atomic_path(snakemake.output.columns) as temporary:
    temporary.write_text(json.dumps(columns, indent=1) + "\n")
