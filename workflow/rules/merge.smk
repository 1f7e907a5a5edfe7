# Stage 3: all conditions of one output group (a modality of one model family: bulk,
# single-cell, gem-2-bulk, gem-2-single-cell) in one expression and one metadata file, and a
# record of what made them (service, table, options), which the report reads.


rule merge:
    input:
        expression=get_parts("expression"),
        metadata=get_parts("metadata"),
        # The base URL each query went to.
        summaries=get_run_summaries,
        # outputs: latents: each batch's latents part (none otherwise).
        latents=get_latents_parts,
    output:
        **latents_output("results/{group}/latents.parquet"),
        expression="results/{group}/expression.parquet",
        metadata="results/{group}/metadata.parquet",
        provenance="results/{group}/provenance.json",
    log:
        "logs/merge/{group}.log",
    conda:
        "../envs/synthbio.yaml"
    params:
        # What the run that makes the data was given; not rerun triggers (a change that
        # matters reruns the predictions, and so this merge).
        table=lambda wildcards, resources: config["conditions"],
        config=lambda wildcards, resources: config,
    script:
        "../scripts/merge.py"
