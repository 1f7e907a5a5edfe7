"""Write a batch's queries, one file per condition, in the API's wire format (rule write_queries).

A reference row's query carries its reference sample's counts, aligned to the model's gene
order; its samples get the reference's provenance as metadata columns (the columns file,
read by the prediction wrapper).
"""

import json
import logging
import sys
from pathlib import Path

console = sys.stderr
sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from synthbio_pipeline.files import atomic_path
from synthbio_pipeline.pipeline.conditions import write_query
from synthbio_pipeline.pipeline.jobs import refusal_on_console
from synthbio_pipeline.pipeline.references import align_references, read_gene_order


def main():
    conditions = snakemake.params.conditions
    references = [c for c in conditions if c.is_reference]
    aligned = {}
    if references:
        aligned = align_references(
            references,
            read_gene_order(snakemake.input.gene_order),
            log=logging.getLogger("references"),
        )

    folder = Path(snakemake.output.queries)
    folder.mkdir(parents=True, exist_ok=True)
    columns = {}
    for condition in conditions:
        alignment = aligned.get(condition.name)
        counts = None if alignment is None else alignment.counts.tolist()
        write_query(condition, folder / f"{condition.name}.json", counts)
        what = f"{condition.num_samples} sample(s) for {condition.model_id}"
        if alignment is not None:
            columns[condition.name] = {
                "reference": condition.reference,
                "reference_sample": alignment.sample,
                "reference_library_size": alignment.library_size,
            }
            what += f", from {condition.reference}"
        logging.info("%s: %s", condition.name, what)
    with atomic_path(snakemake.output.columns) as temporary:
        temporary.write_text(json.dumps(columns, indent=1) + "\n")


with refusal_on_console("write_queries", console, snakemake.log[0]):  # traceback in the log
    main()
